"""Where each process's time goes: py-spy samples of running processes, summed per function.

`bench_pipeline --profile` attaches `py-spy record` (sampling, from outside the process: nothing
in the code under test changes) to every Python process of the stack for the throughput run,
then prints for each one the functions that were on CPU most often. py-spy writes "raw"
(collapsed) stacks: one line per distinct stack, `frame;frame;...;leaf count`, the root first.
`--idle` samples are left out so that the shares are of on-CPU time.

A frame reads `function (file:line)`; the leaf frame is where the CPU was, the frames below it
say who asked. Native code (onnxruntime's kernels, grpc's C core) shows with `--native` only,
which costs much more per sample, so the tables name the Python frame that called into it.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

RATE_HZ = 200
REPO_PREFIX = f"{Path(__file__).resolve().parents[1]}/"
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


class ProfilerMissing(RuntimeError):
    """py-spy is not installed in this environment (it is in the dev extra)."""


def py_spy() -> str:
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise ProfilerMissing("py-spy is not installed: `pip install -e .[dev]` brings it")
    return found


@dataclass
class Recording:
    name: str
    output: Path
    process: subprocess.Popen[bytes]


def start(pids: dict[str, int], out_dir: Path) -> list[Recording]:
    """One py-spy per process, recording until `stop`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = py_spy()
    recordings = []
    for name, pid in pids.items():
        output = out_dir / f"{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}.txt"
        command = [binary, "record", "--pid", str(pid), "--rate", str(RATE_HZ)]
        command += ["--format", "raw", "--output", str(output), "--nonblocking"]
        log = (out_dir / f"{output.stem}.py-spy.log").open("wb")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        recordings.append(Recording(name, output, process))
    return recordings


def stop(recordings: list[Recording]) -> None:
    """SIGINT makes py-spy write what it sampled and exit."""
    for recording in recordings:
        recording.process.send_signal(signal.SIGINT)
    for recording in recordings:
        try:
            recording.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            recording.process.kill()
            recording.process.wait()


def short(frame: str) -> str:
    """`handle (functions/resnet/app.py:40)` -> `handle (functions/resnet/app.py)`, site-packages
    paths cut to the package."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match["file"]
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif path.startswith(REPO_PREFIX):
        path = path[len(REPO_PREFIX) :]
    return f"{match['function']} ({path})"


@dataclass(frozen=True)
class Profile:
    samples: int
    leaves: Counter[str]  # where the CPU was
    inclusive: Counter[str]  # frames on the stack at all (each counted once per sample)


def read(path: Path) -> Profile:
    leaves: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    samples = 0
    if not path.exists():
        return Profile(0, leaves, inclusive)
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [short(f) for f in stack.split(";")]
        # The first frame is the thread ("process 123:..." / "thread (0x..)"): not code.
        code = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not code:
            continue
        samples += count
        leaves[code[-1]] += count
        for frame in set(code):
            inclusive[frame] += count
    return Profile(samples, leaves, inclusive)


def table(name: str, profile: Profile, top: int = 8) -> list[str]:
    rows = [f"**{name}** ({profile.samples} on-CPU samples at {RATE_HZ} Hz)", ""]
    if profile.samples == 0:
        return [*rows, "(no samples)", ""]
    rows += ["| on CPU in (leaf frame) | share |", "|---|---:|"]
    for frame, count in profile.leaves.most_common(top):
        rows.append(f"| `{frame}` | {count / profile.samples:.0%} |")
    ours = Counter({f: c for f, c in profile.inclusive.items() if _is_project_frame(f)})
    rows += ["", "| the project's own frames, callees included | share |", "|---|---:|"]
    for frame, count in ours.most_common(top):
        rows.append(f"| `{frame}` | {count / profile.samples:.0%} |")
    return [*rows, ""]


PROJECT_PACKAGES = ("common/", "functions/", "source/", "localknative/", "modelserver/")


def _is_project_frame(frame: str) -> bool:
    match = _FRAME.match(frame)
    return match is not None and match["file"].startswith(PROJECT_PACKAGES)
