"""Start the pipeline's processes in order, wait until each serves, and tear all of it down.

`Stack` is a context manager owning one temporary work directory (logs, recordings, the RGW
cluster's data). Every child runs in its own session (so Ctrl-C in the terminal reaches only the
runner, which then stops the children in reverse order) and is stopped with SIGTERM, then
SIGKILL after a grace period. RGW runs through scripts/rgw-up.sh and is purged with
scripts/rgw-down.sh. `on_signals()` turns SIGTERM/SIGHUP into the same unwinding as Ctrl-C, so
no process and no temp dir outlives the runner, whether it ends well, fails or is interrupted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = REPO_ROOT / "scripts"
STOP_GRACE_SECONDS = 10.0


class StackError(RuntimeError):
    """A part of the stack did not start; the message says which and shows its log tail."""


class Interrupted(BaseException):
    """SIGTERM or SIGHUP arrived: unwind like KeyboardInterrupt does."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise `Interrupted` in the main thread."""

    def interrupt(signum: int, _: FrameType | None) -> None:
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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


def tcp_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def pid_alive(pid: int) -> bool:
    """True if `pid` runs and is not a zombie (an init that does not reap leaves those)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return state != "Z"


def rss_kib(pid: int) -> int | None:
    """Resident memory of one process, KiB (None if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


@dataclass
class Process:
    """One child process with its log file and where it serves."""

    name: str
    argv: Sequence[str]
    log_path: Path
    url: str | None = None
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_after: float | None = None  # seconds from spawn to ready (cold start)
    # Kept so that a fault scenario can start the same process again, as Knative would.
    env: Mapping[str, str] = field(default_factory=dict)
    ready: Callable[[], bool] | None = None
    # A listening socket the stack holds and every start of this process inherits, so its port
    # keeps accepting while the process is down (see source/listener.py).
    listener: socket.socket | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


@dataclass(frozen=True)
class Rgw:
    """The throwaway gateway and the S3 user's settings (what rgw-up.sh prints)."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str
    data_dir: Path

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ENDPOINT_URL_SNS": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }

    def daemon_pids(self) -> list[int]:
        pids = []
        for pid_file in sorted((self.data_dir / "run").glob("*.pid")):
            with contextlib.suppress(ValueError, FileNotFoundError):
                pids.append(int(pid_file.read_text().strip()))
        return pids


def parse_settings(output: str) -> dict[str, str]:
    """KEY=VALUE lines printed by rgw-up.sh / rabbitmq-up.sh."""
    settings = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            settings[key] = value
    return settings


@dataclass
class Stack:
    """The processes of one run, in start order; `close()` stops them in reverse."""

    work_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rgw-inference-")))
    processes: list[Process] = field(default_factory=list)
    rgw: Rgw | None = None
    rabbitmq_dir: Path | None = None
    daemon_pids: dict[str, int] = field(default_factory=dict)
    listeners: list[socket.socket] = field(default_factory=list)
    python: str = sys.executable
    _closed: bool = False

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def log_dir(self) -> Path:
        path = self.work_dir / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        url: str | None = None,
        listener: socket.socket | None = None,
    ) -> Process:
        process = Process(name, list(argv), self.log_dir / f"{name}.log", url, env=dict(env or {}))
        process.listener = listener
        self._launch(process)
        self.processes.append(process)
        return process

    def _launch(self, process: Process) -> None:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **process.env}
        with process.log_path.open("ab") as log:
            process.popen = subprocess.Popen(
                process.argv,
                cwd=REPO_ROOT,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=() if process.listener is None else (process.listener.fileno(),),
            )
        process.started_at = time.monotonic()
        process.ready_after = None

    def process(self, name: str) -> Process:
        for process in self.processes:
            if process.name == name:
                return process
        raise KeyError(f"no process named {name!r} in this stack")

    def kill(self, name: str) -> None:
        """SIGKILL a process and everything in its session: a crash, no chance to clean up."""
        process = self.process(name)
        if process.popen is None or process.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.popen.pid, signal.SIGKILL)
        process.popen.wait(10)

    def restart(self, name: str, timeout: float = 60.0) -> Process:
        """Start a stopped process again with the same argv and environment (so the same port),
        as Knative starts a new pod for a crashed one, and wait until it is ready again."""
        process = self.process(name)
        if process.alive():
            raise StackError(f"{name} is still running; stop or kill it first")
        self._launch(process)
        self._wait_ready(process, process.ready or (lambda: True), timeout)
        return process

    def start(
        self,
        name: str,
        argv: Sequence[str],
        ready: Callable[[], bool],
        env: Mapping[str, str] | None = None,
        url: str | None = None,
        timeout: float = 60.0,
        listener: socket.socket | None = None,
    ) -> Process:
        """Spawn and wait until `ready()` is true; StackError with the log tail otherwise."""
        process = self.spawn(name, argv, env, url, listener)
        process.ready = ready
        self._wait_ready(process, ready, timeout)
        return process

    def _wait_ready(self, process: Process, ready: Callable[[], bool], timeout: float) -> None:
        name = process.name
        deadline = time.monotonic() + timeout
        while not ready():
            if not process.alive():
                code = process.popen.returncode if process.popen else "?"
                raise StackError(
                    f"{name} exited with status {code} before it was ready; last log lines "
                    f"({process.log_path}):\n{process.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise StackError(
                    f"{name} was not ready within {timeout:.0f} s; last log lines "
                    f"({process.log_path}):\n{process.log_tail()}"
                )
            time.sleep(0.05)
        process.ready_after = time.monotonic() - process.started_at

    def hold_listener(self) -> socket.socket:
        """A listening socket on a free loopback port that the stack holds until `close()`, for
        a process started with `listener=` (socket activation, as systemd's .socket units do)."""
        sock = loopback_listener()
        self.listeners.append(sock)
        return sock

    def python_module(self, module: str, *args: str) -> list[str]:
        return [self.python, "-m", module, *args]

    def start_rgw(self, port: int, timeout: float = 180.0) -> Rgw:
        """A one-node Ceph cluster with radosgw on `port` (scripts/rgw-up.sh)."""
        data_dir = self.work_dir / "rgw"
        env = {**os.environ, "RGW_MEMSTORE_BYTES": str(1 << 30)}
        # Set before the script runs: a half-started cluster must be purged as well.
        self.rgw = Rgw("", "", "", "", data_dir)
        try:
            done = subprocess.run(
                ["bash", str(SCRIPTS / "rgw-up.sh"), str(data_dir), str(port)],
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"rgw-up.sh did not finish within {timeout:.0f} s") from exc
        if done.returncode != 0:
            raise StackError(f"could not start RGW (scripts/rgw-up.sh):\n{done.stderr.strip()}")
        settings = parse_settings(done.stdout)
        self.rgw = Rgw(
            endpoint=settings["RGW_ENDPOINT"],
            access_key=settings["AWS_ACCESS_KEY_ID"],
            secret_key=settings["AWS_SECRET_ACCESS_KEY"],
            region=settings.get("AWS_REGION", "default"),
            data_dir=data_dir,
        )
        # Kept here: the purge deletes the pid files, and callers check these are gone.
        for index, pid in enumerate(self.rgw.daemon_pids()):
            self.daemon_pids[f"rgw-daemon-{index}"] = pid
        return self.rgw

    def stop_radosgw(self, timeout: float = 30.0) -> None:
        """A clean stop of the gateway alone (SIGTERM by its pid file); the monitor and the OSD,
        which hold the objects and the persistent notification queues, keep running."""
        assert self.rgw is not None, "RGW was not started"
        pid_file = self.rgw.data_dir / "run" / "client.rgw.gw.pid"
        pid = int(pid_file.read_text().strip())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    def start_stopped_rgw_daemons(self, timeout: float = 120.0) -> None:
        """scripts/rgw-up.sh on the existing data dir: starts whichever daemon is down, on the
        same port, with the same objects and queues."""
        assert self.rgw is not None, "RGW was not started"
        done = subprocess.run(
            ["bash", str(SCRIPTS / "rgw-up.sh"), str(self.rgw.data_dir)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise StackError(f"could not restart RGW (scripts/rgw-up.sh):\n{done.stderr.strip()}")
        for index, pid in enumerate(self.rgw.daemon_pids()):
            self.daemon_pids[f"rgw-daemon-{index}"] = pid

    def start_rabbitmq(self, port: int, timeout: float = 120.0) -> str:
        """RabbitMQ as a plain process (scripts/rabbitmq-up.sh); returns its AMQP URL."""
        data_dir = self.work_dir / "rabbitmq"
        self.rabbitmq_dir = data_dir
        try:
            done = subprocess.run(
                ["bash", str(SCRIPTS / "rabbitmq-up.sh"), str(data_dir), str(port)],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"rabbitmq-up.sh did not finish within {timeout:.0f} s") from exc
        if done.returncode != 0:
            raise StackError(f"could not start RabbitMQ:\n{done.stderr.strip()}")
        return parse_settings(done.stdout)["AMQP_URL"]

    def all_pids(self) -> dict[str, int]:
        """Every process this stack started (RGW's daemons included), by name."""
        return {
            **self.daemon_pids,
            **{p.name: p.pid for p in self.processes if p.popen is not None},
        }

    def close(self) -> None:
        """Stop everything in reverse start order, purge RGW and RabbitMQ, remove the work dir.
        Safe to call twice; Ctrl-C during teardown does not cut it short."""
        if self._closed:
            return
        self._closed = True
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for process in reversed(self.processes):
                process.stop()
            for sock in self.listeners:
                sock.close()
            if self.rabbitmq_dir is not None:
                subprocess.run(
                    ["bash", str(SCRIPTS / "rabbitmq-down.sh"), str(self.rabbitmq_dir), "--purge"],
                    capture_output=True,
                    timeout=60,
                    check=False,
                )
            if self.rgw is not None:
                subprocess.run(
                    ["bash", str(SCRIPTS / "rgw-down.sh"), str(self.rgw.data_dir), "--purge"],
                    capture_output=True,
                    timeout=60,
                    check=False,
                )
            shutil.rmtree(self.work_dir, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)
