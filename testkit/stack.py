"""Start the pipeline's processes in order, wait until each serves, and tear all of it down.

`Stack` is a context manager owning one temporary work directory (logs, recordings, the RGW
cluster's data). Its children are `testkit.processes.Process`es (own session, SIGTERM then
SIGKILL), RGW is a `testkit.rgw.RgwCluster` and RabbitMQ runs through `testkit.rabbitmq`.
`close()` stops them in reverse order; it runs with signals held back, so a second Ctrl-C or a
SIGTERM cannot cut the teardown short. `on_signals()` turns SIGTERM/SIGHUP into the same
unwinding as Ctrl-C, so no process and no temp dir outlives the runner, whether it ends well,
fails or is interrupted.
"""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from testkit.processes import (
    REPO_ROOT,
    SCRIPTS,
    STOP_GRACE_SECONDS,
    Process,
    StartError,
    free_port,
    http_ok,
    loopback_listener,
    parse_settings,
    tcp_open,
)
from testkit.rabbitmq import start_rabbitmq, stop_rabbitmq
from testkit.registry import Interrupted, deferred_signals, on_signals, pid_alive, rss_kib
from testkit.rgw import RgwCluster, RgwGateway

# Kept importable from here: the demo, the harness and the benchmarks use these names.
Rgw = RgwGateway
StackError = StartError
__all__ = [
    "REPO_ROOT",
    "SCRIPTS",
    "STOP_GRACE_SECONDS",
    "Interrupted",
    "Process",
    "Rgw",
    "Stack",
    "StackError",
    "free_port",
    "http_ok",
    "loopback_listener",
    "on_signals",
    "parse_settings",
    "pid_alive",
    "rss_kib",
    "tcp_open",
]


@dataclass
class Stack:
    """The processes of one run, in start order; `close()` stops them in reverse."""

    work_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rgw-inference-")))
    processes: list[Process] = field(default_factory=list)
    rgw: Rgw | None = None
    rgw_cluster: RgwCluster | None = None
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
        process = Process(
            name, list(argv), self.log_dir / f"{name}.log", dict(env or {}), url, listener=listener
        )
        # Listed before it is spawned: if the spawn is interrupted, close() still stops it.
        self.processes.append(process)
        process.start()
        return process

    def process(self, name: str) -> Process:
        for process in self.processes:
            if process.name == name:
                return process
        raise KeyError(f"no process named {name!r} in this stack")

    def kill(self, name: str) -> None:
        """SIGKILL a process and everything in its session: a crash, no chance to clean up."""
        self.process(name).kill()

    def restart(self, name: str, timeout: float = 60.0) -> Process:
        """Start a stopped process again with the same argv and environment (so the same port),
        as Knative starts a new pod for a crashed one, and wait until it is ready again."""
        return self.process(name).restart(timeout)

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
        process.wait_ready(ready, timeout)
        return process

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
        # Kept before the script runs: a half-started cluster must be purged as well.
        self.rgw_cluster = RgwCluster(self.work_dir / "rgw")
        try:
            self.rgw = self.rgw_cluster.start(port, timeout)
        finally:
            self._note_daemons()
        return self.rgw

    def _note_daemons(self) -> None:
        assert self.rgw_cluster is not None
        for index, pid in enumerate(self.rgw_cluster.pids.values()):
            self.daemon_pids[f"rgw-daemon-{index}"] = pid

    def _cluster(self) -> RgwCluster:
        assert self.rgw_cluster is not None, "RGW was not started"
        return self.rgw_cluster

    def stop_radosgw(self, timeout: float = 30.0) -> None:
        """A clean stop of the gateway alone (SIGTERM by its pid file); the monitor and the OSD,
        which hold the objects and the persistent notification queues, keep running."""
        self._cluster().stop_gateway(timeout)

    def start_stopped_rgw_daemons(self, timeout: float = 120.0) -> None:
        """scripts/rgw-up.sh on the existing data dir: starts whichever daemon is down, on the
        same port, with the same objects and queues."""
        try:
            self._cluster().start_stopped_daemons(timeout)
        finally:
            self._note_daemons()

    def start_rabbitmq(self, port: int, timeout: float = 120.0) -> str:
        """RabbitMQ as a plain process (scripts/rabbitmq-up.sh); returns its AMQP URL."""
        self.rabbitmq_dir = self.work_dir / "rabbitmq"
        return start_rabbitmq(self.rabbitmq_dir, port, timeout).url

    def all_pids(self) -> dict[str, int]:
        """Every process this stack started (RGW's daemons included), by name."""
        return {
            **self.daemon_pids,
            **{p.name: p.pid for p in self.processes if p.popen is not None},
        }

    def close(self) -> None:
        """Stop everything in reverse start order, purge RGW and RabbitMQ, remove the work dir.
        Safe to call twice; an interrupt during teardown waits until it is done."""
        if self._closed:
            return
        self._closed = True
        steps: list[Callable[[], object]] = [p.stop for p in reversed(self.processes)]
        steps += [sock.close for sock in self.listeners]
        if self.rabbitmq_dir is not None:
            steps.append(lambda: stop_rabbitmq(self.rabbitmq_dir or Path()))
        if self.rgw_cluster is not None:
            steps.append(self.rgw_cluster.close)
        steps.append(lambda: shutil.rmtree(self.work_dir, ignore_errors=True))
        errors = []
        with deferred_signals():
            for step in steps:
                # One part that does not stop must not keep the others running.
                try:
                    step()
                except Exception as exc:
                    errors.append(exc)
        if errors:
            raise errors[0]
