"""The clone is all a user has: nothing in it may reach outside it for data."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Spelled in two parts so that this file does not match itself.
OUTSIDE = ("..", "/shared")


def tracked_text_files() -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    return [REPO / name.decode() for name in names if name]


def test_no_file_reads_a_folder_beside_the_clone() -> None:
    needle = "".join(OUTSIDE)
    offenders = []
    for path in tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        offenders += [
            f"{path.relative_to(REPO)}:{number}"
            for number, line in enumerate(text.splitlines(), 1)
            if needle in line
        ]
    assert not offenders, (
        f"these lines name {needle}, which a user's clone does not have: {offenders}"
    )
