"""Which local processes this run started, whether any still runs, and signals held back.

Every child the supervisor (`testkit.processes`) starts, and every daemon the RGW and RabbitMQ
wrappers bring up, is recorded here with its process group, the moment it exists. A test session
(or any program) asks `REGISTRY.reap()` at its end: whatever is still alive is killed and named,
so nothing outlives the run (issue: a collector started by a stack survived `make test`).

With `TESTKIT_RUN_DIR` set (the test session sets it), each interpreter also appends its records
to a file there, so a session sees what its subprocesses (the demo run as a user runs it) started.

`deferred_signals()` closes the window that lost that collector: a SIGTERM that arrives between
spawning a child and recording it raised in the middle of `subprocess.Popen`, and the child was
never known to anyone. Inside the block such a signal waits; it is delivered when the block ends.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

RUN_DIR_VARIABLE = "TESTKIT_RUN_DIR"
_DEFERRED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time in clock ticks) of a process, None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], int(fields[2]), int(fields[19])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """True if `pid` runs and is not a zombie (an init that does not reap leaves those)."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def rss_kib(pid: int) -> int | None:
    """Resident memory of one process, KiB (None if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


Snapshot = dict[int, tuple[str, int, int]]


def snapshot() -> Snapshot:
    """Every process on the machine: pid -> (state, process group, start time)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            found[int(entry.name)] = stat
    return found


def group_members(pgid: int, processes: Snapshot | None = None) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`: a child's own children included."""
    processes = snapshot() if processes is None else processes
    return sorted(
        pid for pid, (state, group, _) in processes.items() if group == pgid and state != "Z"
    )


@dataclass(frozen=True)
class Entry:
    """One started process: its pid, its own process group (None: the pid alone), a name."""

    pid: int
    name: str
    pgid: int | None
    started: int  # /proc start time, so a reused pid is not taken for ours

    def alive(self, processes: Snapshot | None = None) -> list[int]:
        processes = snapshot() if processes is None else processes
        stat = processes.get(self.pid)
        own = [self.pid] if stat is not None and stat[0] != "Z" and stat[2] == self.started else []
        if self.pgid is None:
            return own
        return sorted(set(own) | set(group_members(self.pgid, processes)))

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.pgid is not None:
                os.killpg(self.pgid, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)


class Registry:
    """The processes started in this interpreter (and, through the run dir, its subprocesses)."""

    def __init__(self) -> None:
        self._entries: list[Entry] = []
        self._lock = threading.Lock()
        self._exit_hook = False

    def record(self, pid: int, name: str, group: bool = True) -> Entry:
        stat = _stat(pid)
        entry = Entry(pid, name, pid if group else None, stat[2] if stat else 0)
        with self._lock:
            self._entries.append(entry)
            if not self._exit_hook:
                # Last resort: a program that ends without stopping a child still takes it along.
                atexit.register(self.kill_own)
                self._exit_hook = True
        run_dir = os.environ.get(RUN_DIR_VARIABLE)
        if run_dir:
            with (
                contextlib.suppress(OSError),
                open(Path(run_dir) / f"{os.getpid()}.jsonl", "a") as f,
            ):
                f.write(json.dumps(asdict(entry)) + "\n")
        return entry

    def entries(self, run_dir: Path | None = None) -> list[Entry]:
        """This interpreter's records, plus every file in `run_dir` (other interpreters')."""
        with self._lock:
            found = list(self._entries)
        if run_dir is not None:
            for path in sorted(run_dir.glob("*.jsonl")):
                for line in path.read_text().splitlines():
                    with contextlib.suppress(ValueError, TypeError):
                        found.append(Entry(**json.loads(line)))
        return list(dict.fromkeys(found))

    def leftovers(self, run_dir: Path | None = None) -> list[tuple[Entry, list[int]]]:
        """Entries of which some process still runs, with those pids."""
        processes = snapshot()
        return [(e, pids) for e in self.entries(run_dir) if (pids := e.alive(processes))]

    def reap(
        self, grace: float = 5.0, run_dir: Path | None = None
    ) -> list[tuple[Entry, list[int]]]:
        """Wait up to `grace` s for stragglers (a purge that is still killing), SIGKILL what is
        left, and return what had to be killed (empty: the run cleaned up after itself)."""
        deadline = time.monotonic() + grace
        left = self.leftovers(run_dir)
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = self.leftovers(run_dir)
        for entry, _ in left:
            entry.kill()
        return left

    def kill_own(self) -> None:
        for entry, _ in self.leftovers():
            entry.kill()


REGISTRY = Registry()


def describe(left: list[tuple[Entry, list[int]]]) -> str:
    return "\n".join(
        f"  {entry.name} (pid {entry.pid}): still running {pids}" for entry, pids in left
    )


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP arriving inside the block are delivered when it ends, to the
    handlers that were in place. Only the main thread runs signal handlers; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, _: FrameType | None) -> None:
        pending.append(signum)

    previous = {}
    for sig in _DEFERRED:
        handler = signal.getsignal(sig)
        if handler is not None:  # None: installed outside Python, could not be put back
            previous[sig] = signal.signal(sig, hold)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


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
