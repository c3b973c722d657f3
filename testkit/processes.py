"""The one process supervisor: start a local process, wait until it serves, stop it for sure.

Tests, benchmarks and the demo start their processes through `Process` (or `running()`, its
context manager). Each child runs in its own session, so Ctrl-C in a terminal reaches only the
runner, and the whole group (the child's own children too) is stopped with SIGTERM, then SIGKILL
after a grace period. Each child is recorded in `testkit.registry.REGISTRY` while signals are
held back, so neither a failed start nor an interrupt can leave one that nobody knows of.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from testkit.registry import REGISTRY, deferred_signals, group_members

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = REPO_ROOT / "scripts"
STOP_GRACE_SECONDS = 10.0


class StartError(RuntimeError):
    """A process did not start or never became ready; the message shows its log tail."""


# --- ports and probes -----------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loopback_listener(backlog: int = 1024) -> socket.socket:
    """A listening TCP socket on a free 127.0.0.1 port, to hand to a child process that may be
    killed and restarted while the caller keeps the port open (source/listener.py says why)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    return sock


def tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for_tcp(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not tcp_open(port, host):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def python_argv(*args: str) -> list[str]:
    """argv that runs this interpreter (the project's venv) with `args`."""
    return [sys.executable, *args]


def uvicorn_argv(app: str, port: int) -> list[str]:
    """argv that serves an ASGI app on 127.0.0.1:port with this interpreter."""
    return python_argv(
        "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--no-access-log"
    )


# --- the supervisor -------------------------------------------------------------------------------


@dataclass
class Process:
    """One child process with its log file, how to tell it is ready, and where it serves."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    url: str | None = None
    ready: Callable[[], bool] | None = None
    # A listening socket the caller holds and every start of this process inherits, so its
    # port keeps accepting while the process is down (see source/listener.py).
    listener: socket.socket | None = None
    pass_fds: tuple[int, ...] = ()
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_after: float | None = None  # seconds from spawn to ready (cold start)

    def start(self) -> Process:
        """Spawn the child (again, after a stop: same argv, environment and port)."""
        if self.alive():
            raise StartError(f"{self.name} is still running; stop or kill it first")
        fds = self.pass_fds + (() if self.listener is None else (self.listener.fileno(),))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with deferred_signals(), self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                list(self.argv),
                cwd=REPO_ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=fds,
            )
            REGISTRY.record(self.popen.pid, self.name)
        self.started_at = time.monotonic()
        self.ready_after = None
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:]) or "(no log)"

    def wait_ready(
        self, ready: Callable[[], bool] | None = None, timeout: float = 60.0, interval: float = 0.05
    ) -> None:
        """Until `ready()` (default: the one given at creation) is true, polled every `interval`
        s; StartError with the log tail if the process exits first or the time runs out."""
        check = ready or self.ready or (lambda: True)
        deadline = time.monotonic() + timeout
        while not check():
            if not self.alive():
                code = self.popen.returncode if self.popen else "?"
                raise StartError(
                    f"{self.name} exited with status {code} before it was ready; last log lines "
                    f"({self.log_path}):\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise StartError(
                    f"{self.name} was not ready within {timeout:.0f} s; last log lines "
                    f"({self.log_path}):\n{self.log_tail()}"
                )
            time.sleep(interval)
        self.ready_after = time.monotonic() - self.started_at

    def wait_http_ok(self, url: str, timeout: float = 30.0) -> None:
        self.wait_ready(lambda: http_ok(url), timeout)

    def wait_tcp(self, port: int, timeout: float = 30.0) -> None:
        self.wait_ready(lambda: tcp_open(port), timeout)

    def signal(self, sig: int) -> None:
        """Send `sig` to the child's whole process group."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL the child and its group: a crash, no chance to clean up."""
        if self.popen is None:
            return
        with deferred_signals():
            self.signal(signal.SIGKILL)
            self.popen.wait(10)
            self._kill_stragglers()

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> int | None:
        """SIGTERM the group, SIGKILL after `grace`; returns the exit code. Idempotent, and an
        interrupt meanwhile waits until the child is gone."""
        if self.popen is None:
            return None
        with deferred_signals():
            if self.popen.poll() is None:
                self.signal(signal.SIGTERM)
                try:
                    self.popen.wait(grace)
                except subprocess.TimeoutExpired:
                    self.signal(signal.SIGKILL)
                    self.popen.wait(10)
            self._kill_stragglers()
        return self.popen.returncode

    def _kill_stragglers(self) -> None:
        # The child is gone, but something it started in its group may not be.
        if group_members(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)

    def restart(self, timeout: float = 60.0) -> Process:
        """Start a stopped process again and wait until it is ready, as Knative starts a new pod
        for a crashed one."""
        self.start()
        self.wait_ready(timeout=timeout)
        return self


@contextlib.contextmanager
def running(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    ready_url: str | None = None,
    ready_port: int | None = None,
    timeout: float = 30.0,
    pass_fds: tuple[int, ...] = (),
) -> Iterator[Process]:
    """Run a process for the duration of the block, ready (GET `ready_url` answers 200, or
    `ready_port` accepts); it is stopped even when the start or the block fails."""
    process = Process(name, argv, log_dir / f"{name}.log", dict(env or {}), pass_fds=pass_fds)
    try:
        process.start()
        if ready_url is not None:
            process.wait_http_ok(ready_url, timeout)
        elif ready_port is not None:
            process.wait_tcp(ready_port, timeout)
        yield process
    finally:
        process.stop()


def run_script(
    name: str, args: Sequence[str], timeout: float, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`bash scripts/NAME ARGS...` in its own session; killed with its group on a timeout or an
    interrupt (what it daemonized by then is the caller's to stop, by the pid files)."""
    with deferred_signals():
        process = subprocess.Popen(
            ["bash", str(SCRIPTS / name), *args],
            cwd=REPO_ROOT,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        REGISTRY.record(process.pid, f"scripts/{name}")
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def parse_settings(output: str) -> dict[str, str]:
    """KEY=VALUE lines printed by rgw-up.sh / rabbitmq-up.sh."""
    settings = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            settings[key] = value
    return settings
