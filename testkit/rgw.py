"""A throwaway Ceph RGW on a free loopback port: scripts/rgw-up.sh and rgw-down.sh, wrapped once.

`RgwCluster(data_dir)` starts a one-node cluster (monitor, OSD, radosgw; memstore), restarts the
daemons that are down, stops the gateway alone, and purges it all. Its daemons are recorded in
`testkit.registry` as soon as their pid files exist, also when the start fails half-way.
`RgwGateway` is what a client needs: endpoint, keys, `env()` for child processes, boto3 clients.

Persistent topics: RGW adopts a new persistent topic's queue only when it rescans its queue list,
every 30 s from start (hard-coded in 16.2), so a brand-new persistent topic can hold its first
event back for up to 30 s. A session therefore creates a few right after start
(`create_persistent_topic_pool`); `claim_persistent_topic()` hands one out, and the caller
re-points it with create_topic (the push endpoint is stored per event, so the adopted queue keeps
working).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from testkit.processes import StartError, free_port, parse_settings, run_script
from testkit.registry import REGISTRY, deferred_signals, pid_alive

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient

REGION = "default"
MEMSTORE_BYTES = 1 << 30
START_TIMEOUT = 180.0
# Nothing listens on the discard port; pool topics point there until a test claims one.
PARKED_ENDPOINT = "http://127.0.0.1:9/parked"
LOG_FILES = ("client.rgw.gw.out", "client.rgw.gw.log", "osd.0.out", "mon.a.out", "mkfs.out")
GATEWAY_PID_FILE = Path("run") / "client.rgw.gw.pid"


class RgwStartError(StartError):
    """rgw-up.sh failed; the message carries its output and the daemon log tails."""


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(missing)"


def rgw_log_tails(data_dir: Path, lines: int = 25) -> str:
    return "\n".join(
        f"--- {name} (last {lines} lines)\n{_tail(data_dir / 'log' / name, lines)}"
        for name in LOG_FILES
    )


def daemon_pids(data_dir: Path) -> list[int]:
    """The pids in the cluster's pid files (monitor, OSD, gateway)."""
    pids = []
    for pid_file in sorted((data_dir / "run").glob("*.pid")):
        with contextlib.suppress(ValueError, FileNotFoundError):
            pids.append(int(pid_file.read_text().strip()))
    return pids


@dataclass
class RgwGateway:
    """A running radosgw and the S3 user the tests act as (what rgw-up.sh prints)."""

    endpoint: str
    access_key: str
    secret_key: str
    data_dir: Path = Path()
    region: str = REGION
    _pool: list[str] = field(default_factory=list)
    _pool_lock: threading.Lock = field(default_factory=threading.Lock)
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    def env(self) -> dict[str, str]:
        """Variables that point boto3 (and the project's config) in a child process at this RGW."""
        return {
            "RGW_ENDPOINT": self.endpoint,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ENDPOINT_URL_SNS": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }

    def daemon_pids(self) -> list[int]:
        return daemon_pids(self.data_dir)

    def _client(self, service: str, **config: object) -> object:
        import boto3
        from botocore.config import Config

        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(connect_timeout=5, read_timeout=30, **config),  # type: ignore[arg-type]
        )

    def s3_client(self) -> S3Client:
        return self._client(  # type: ignore[return-value]
            "s3",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 2, "mode": "standard"},
        )

    def sns_client(self) -> SNSClient:
        return self._client("sns", retries={"max_attempts": 2})  # type: ignore[return-value]

    def topic_arn(self, name: str) -> str:
        return f"arn:aws:sns:{self.region}::{name}"

    def answers(self) -> bool:
        """True if the gateway still serves S3 (e.g. after a request that used to crash it)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.s3_client().list_buckets()
            return True
        except (BotoCoreError, ClientError):
            return False

    def log_tails(self, lines: int = 25) -> str:
        return rgw_log_tails(self.data_dir, lines)

    def unique_name(self, prefix: str) -> str:
        """A bucket or topic name not used before by this process (RGW wants >= 3 chars)."""
        return f"{prefix}-{os.getpid()}-{next(self._names)}"

    def create_persistent_topic_pool(self, size: int) -> None:
        sns = self.sns_client()
        for _ in range(size):
            name = self.unique_name("pooled-persistent")
            sns.create_topic(
                Name=name, Attributes={"push-endpoint": PARKED_ENDPOINT, "persistent": "true"}
            )
            self._pool.append(name)

    def claim_persistent_topic(self) -> str:
        """Name of a persistent topic created at start (its queue is adopted sooner); re-point
        it with create_topic before use. When the pool is used up, a new topic is made (and its
        first event may then take up to 30 s)."""
        with self._pool_lock:
            if self._pool:
                return self._pool.pop(0)
        name = self.unique_name("late-persistent")
        self.sns_client().create_topic(
            Name=name, Attributes={"push-endpoint": PARKED_ENDPOINT, "persistent": "true"}
        )
        return name


class RgwCluster:
    """The cluster in `data_dir`; `close()` purges it (safe to call when the start failed)."""

    def __init__(
        self,
        data_dir: Path,
        memstore_bytes: int = MEMSTORE_BYTES,
        frontend_options: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.memstore_bytes = memstore_bytes
        # None: rgw-up.sh's default (tcp_nodelay=1); "" leaves the frontend as Ceph ships it.
        self.frontend_options = frontend_options
        self.gateway: RgwGateway | None = None
        self.pids: dict[str, int] = {}  # kept: the purge deletes the pid files

    def __enter__(self) -> RgwCluster:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _up(self, args: list[str], timeout: float) -> dict[str, str]:
        env = {"RGW_MEMSTORE_BYTES": str(self.memstore_bytes)}
        if self.frontend_options is not None:
            env["RGW_FRONTEND_OPTIONS"] = self.frontend_options
        try:
            done = run_script("rgw-up.sh", [str(self.data_dir), *args], timeout, env)
        except subprocess.TimeoutExpired as exc:
            raise RgwStartError(
                f"rgw-up.sh did not finish within {timeout:.0f} s\n{rgw_log_tails(self.data_dir)}"
            ) from exc
        finally:
            self._record_daemons()
        if done.returncode != 0:
            raise RgwStartError(
                f"could not start RGW (scripts/rgw-up.sh exited with {done.returncode}):\n"
                f"{done.stderr.strip()}\n{rgw_log_tails(self.data_dir)}"
            )
        return parse_settings(done.stdout)

    def _record_daemons(self) -> None:
        for pid_file in sorted((self.data_dir / "run").glob("*.pid")):
            with contextlib.suppress(ValueError, FileNotFoundError):
                pid = int(pid_file.read_text().strip())
                name = pid_file.name.removesuffix(".pid")
                if self.pids.get(name) != pid:
                    self.pids[name] = pid
                    REGISTRY.record(pid, f"rgw {name}")

    def start(self, port: int | None = None, timeout: float = START_TIMEOUT) -> RgwGateway:
        """A one-node cluster with radosgw on `port` (a free one by default)."""
        settings = self._up([str(port or free_port())], timeout)
        self.gateway = RgwGateway(
            endpoint=settings["RGW_ENDPOINT"],
            access_key=settings["AWS_ACCESS_KEY_ID"],
            secret_key=settings["AWS_SECRET_ACCESS_KEY"],
            region=settings.get("AWS_REGION", REGION),
            data_dir=self.data_dir,
        )
        return self.gateway

    def start_stopped_daemons(self, timeout: float = 120.0) -> None:
        """rgw-up.sh on the existing data dir: starts whichever daemon is down, on the same
        port, with the same objects and queues."""
        self._up([], timeout)

    def stop_gateway(self, timeout: float = 30.0) -> None:
        """A clean stop of radosgw alone (SIGTERM by its pid file); the monitor and the OSD,
        which hold the objects and the persistent notification queues, keep running."""
        pid = int((self.data_dir / GATEWAY_PID_FILE).read_text().strip())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    def close(self, keep_logs_in: Path | None = None) -> None:
        """Kill the daemons and delete the data dir (rgw-down.sh --purge), logs copied first."""
        with deferred_signals():
            if keep_logs_in is not None and (self.data_dir / "log").is_dir():
                shutil.copytree(self.data_dir / "log", keep_logs_in, dirs_exist_ok=True)
            if self.data_dir.exists():
                run_script("rgw-down.sh", [str(self.data_dir), "--purge"], timeout=60)


def start_rgw(
    data_dir: Path, port: int | None = None, frontend_options: str | None = None
) -> tuple[RgwCluster, RgwGateway]:
    """A cluster and its gateway; the cluster is purged again if the start fails."""
    cluster = RgwCluster(data_dir, frontend_options=frontend_options)
    try:
        return cluster, cluster.start(port)
    except BaseException:
        cluster.close()
        raise
