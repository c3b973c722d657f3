"""Small helpers shared by the benchmark scripts: serve, measure cold starts, print a table.

Processes are started through the test kit's supervisor (`testkit.processes`), like the tests'
and the demo's: own session, a log file (in a temporary directory, shown when a start fails),
and stopped at the end whatever happens.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from testkit.processes import REPO_ROOT, Process, free_port, http_ok
from testkit.registry import rss_kib

__all__ = [
    "REPO_ROOT",
    "cold_start",
    "free_port",
    "log_dir",
    "machine",
    "python",
    "rss_mb",
    "served",
    "table",
]
DEVNULL = Path(os.devnull)


@functools.cache
def log_dir() -> Path:
    """Where this run's processes log; removed when the benchmark ends."""
    path = Path(tempfile.mkdtemp(prefix="rgw-inference-bench-"))
    atexit.register(shutil.rmtree, path, True)
    return path


@contextlib.contextmanager
def served(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    ready_url: str,
    timeout: float = 30.0,
    log: Path | None = None,
) -> Iterator[Process]:
    """A process for the block, once GET `ready_url` answers 200; its output goes to `log`
    (default: NAME.log in `log_dir()`; /dev/null where writing it would skew a throughput)."""
    process = Process(name, argv, log or log_dir() / f"{name}.log", env)
    try:
        process.start()
        process.wait_http_ok(ready_url, timeout)
        yield process
    finally:
        process.stop()


def rss_mb(pid: int) -> float:
    kib = rss_kib(pid)
    return float("nan") if kib is None else kib / 1024


def cold_start(
    argv: Sequence[str], env: Mapping[str, str], url: str, runs: int
) -> tuple[float, float]:
    """Median seconds from spawn to readiness 200 over `runs`, and the RSS (MB) once ready."""
    times, rss = [], []
    for run in range(runs):
        process = Process(f"cold-start-{run}", argv, log_dir() / "cold-start.log", env)
        try:
            process.start()
            # Polled every 5 ms: the figures are a few hundred ms.
            process.wait_ready(lambda: http_ok(url, 0.5), timeout=30.0, interval=0.005)
            assert process.ready_after is not None
            times.append(process.ready_after)
            rss.append(rss_mb(process.pid))
        finally:
            process.stop()
    return statistics.median(times), statistics.median(rss)


def alternating_cold_starts(
    variants: Mapping[str, tuple[str, Mapping[str, str]]], env: Mapping[str, str], runs: int
) -> dict[str, tuple[float, float]]:
    """Median (seconds to readiness, RSS MB) per variant `name: (functions.<package>, extra env)`.

    The runs alternate between the variants, so load from elsewhere hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    rss: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(runs):
        for name, (package, extra) in variants.items():
            port = free_port()
            seconds, megabytes = cold_start(
                [python(), "-m", f"functions.{package}"],
                {**env, **extra, "PORT": str(port)},
                f"http://127.0.0.1:{port}/health/readiness",
                1,
            )
            times[name].append(seconds)
            rss[name].append(megabytes)
    return {
        name: (statistics.median(times[name]), statistics.median(rss[name])) for name in variants
    }


def python() -> str:
    return sys.executable


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    return f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, {os.uname().machine}"
