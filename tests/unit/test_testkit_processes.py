"""The process supervisor (testkit.processes, testkit.stack) leaves nothing running: not after a
failed start, not after an interrupt that arrives while a child is spawned (the leaked collector
of `make test`), and the session check catches and fails a run that leaks a child."""

from __future__ import annotations

import signal
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from testkit import processes
from testkit.processes import REPO_ROOT, Process, StartError, python_argv, running
from testkit.registry import REGISTRY, Interrupted, on_signals, pid_alive
from testkit.stack import Stack

SLEEPER = python_argv("-c", "import time; time.sleep(120)")


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _wait_for_file(path: Path, process: Process, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text().strip():
        assert process.alive(), process.log_tail()
        assert time.monotonic() < deadline, process.log_tail()
        time.sleep(0.05)
    return path.read_text().strip()


def test_a_child_that_exits_before_ready_takes_its_own_children_along(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    script = textwrap.dedent(
        f"""
        import subprocess, sys
        child = subprocess.Popen({SLEEPER!r})
        open({str(pid_file)!r}, "w").write(str(child.pid))
        sys.exit(3)
        """
    )
    with (
        pytest.raises(StartError, match="exited with status 3"),
        running("dies", python_argv("-c", script), tmp_path, ready_url="http://127.0.0.1:9/"),
    ):
        pass
    assert _gone(int(pid_file.read_text()))


def test_a_child_never_ready_is_stopped(tmp_path: Path) -> None:
    with (
        pytest.raises(StartError, match="not ready within"),
        running("never", SLEEPER, tmp_path, ready_port=9, timeout=0.5),
    ):
        pass
    [entry] = [e for e in REGISTRY.entries() if e.name == "never"]
    assert _gone(entry.pid)


def test_a_stack_whose_start_fails_stops_what_it_started(tmp_path: Path) -> None:
    with pytest.raises(StartError), Stack(work_dir=tmp_path / "work") as stack:
        first = stack.start("first", SLEEPER, ready=lambda: True)
        stack.start("second", python_argv("-c", "raise SystemExit(1)"), ready=lambda: False)
    assert _gone(first.pid)
    assert not (tmp_path / "work").exists()


def test_sigterm_while_a_child_is_spawned_still_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue-22 leak: SIGTERM landed inside `subprocess.Popen` (the child runs, its Popen is
    lost), so the stack never knew the dead-letters collector and left it running."""
    real_popen = subprocess.Popen

    def popen_then_sigterm(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        child = real_popen(*args, **kwargs)
        signal.raise_signal(signal.SIGTERM)  # as if it came a moment before Popen returned
        return child

    monkeypatch.setattr(processes.subprocess, "Popen", popen_then_sigterm)
    with pytest.raises(Interrupted), on_signals(), Stack(work_dir=tmp_path / "work") as stack:
        stack.start("dead-letters", SLEEPER, ready=lambda: True)
    [process] = stack.processes
    assert process.popen is not None, "the child was spawned but never recorded"
    assert _gone(process.pid)


def _inner_session(tmp_path: Path, test_source: str) -> Process:
    """A pytest session of its own over one test file, with the session plugin loaded."""
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(test_source))
    argv = python_argv(
        "-m", "pytest", "-q", "-p", "tests.fixtures.processes", "-p", "no:cacheprovider",
        "-o", "addopts=", str(tmp_path / "test_inner.py"),
    )  # fmt: skip
    env = {"PYTHONPATH": str(REPO_ROOT), "PID_FILE": str(tmp_path / "child.pid")}
    return Process("inner-pytest", argv, tmp_path / "inner.log", env).start()


def test_the_session_check_fails_a_run_that_leaks_a_child(tmp_path: Path) -> None:
    inner = _inner_session(
        tmp_path,
        f"""
        import os
        from pathlib import Path
        from testkit.processes import Process

        def test_leaks(tmp_path):
            child = Process("sleeper", {SLEEPER!r}, tmp_path / "sleeper.log").start()
            Path(os.environ["PID_FILE"]).write_text(str(child.pid))
        """,
    )
    assert inner.popen is not None
    assert inner.popen.wait(60) == 1, inner.log_text()
    output = inner.log_text()
    assert "1 passed" in output and "1 error" in output, output
    assert "still running after its teardown" in output and "sleeper" in output, output
    assert _gone(int((tmp_path / "child.pid").read_text()), 1.0), "the check did not kill it"


def test_sigterm_to_the_session_tears_its_processes_down(tmp_path: Path) -> None:
    inner = _inner_session(
        tmp_path,
        f"""
        import os, time
        from pathlib import Path
        import pytest
        from testkit.processes import running

        @pytest.fixture
        def sleeper(tmp_path):
            with running("sleeper", {SLEEPER!r}, tmp_path) as process:
                yield process

        def test_runs_long(sleeper):
            Path(os.environ["PID_FILE"]).write_text(str(sleeper.pid))
            time.sleep(120)
        """,
    )
    child = int(_wait_for_file(tmp_path / "child.pid", inner))
    inner.signal(signal.SIGTERM)
    assert inner.popen is not None
    assert inner.popen.wait(60) == pytest.ExitCode.INTERRUPTED, inner.log_text()
    assert _gone(child, 1.0), inner.log_text()
    assert "processes left running" not in inner.log_text()
