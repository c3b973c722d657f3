"""Where a function's import time goes: `python -X importtime`, self time summed per package.

A cold start is a fresh interpreter importing the function's module, then serving. The import
is most of it, and `-X importtime` says per module how long its own top-level code took (its
"self" time, children apart). Summed per top-level package (`fastapi`, `pydantic`, `botocore`,
`grpc`, `numpy`, `common`, ...) over the median of a few runs, that is the budget to cut from.
"""

from __future__ import annotations

import statistics
import subprocess
from collections import defaultdict
from collections.abc import Mapping

from benchmarks.support import python
from testkit.processes import REPO_ROOT


def self_times_ms(module: str, env: Mapping[str, str]) -> dict[str, float]:
    """Self import time per top-level package, for one fresh interpreter importing `module`."""
    done = subprocess.run(
        [python(), "-X", "importtime", "-c", f"import {module}"],
        cwd=REPO_ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        check=True,
    )
    totals: dict[str, float] = defaultdict(float)
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cumulative, name = (part.strip() for part in line[12:].split("|", 2))
        totals[name.split(".", 1)[0]] += int(self_us) / 1000
    return dict(totals)


def budget_rows(
    module: str, env: Mapping[str, str], runs: int = 3, top: int = 8
) -> list[list[object]]:
    """The `top` packages by median self time, the rest together, and the total."""
    samples = [self_times_ms(module, env) for _ in range(runs)]
    packages = set().union(*samples)
    median = {p: statistics.median(s.get(p, 0.0) for s in samples) for p in packages}
    ranked = sorted(median.items(), key=lambda item: item[1], reverse=True)
    rows: list[list[object]] = [[name, f"{ms:.0f} ms"] for name, ms in ranked[:top]]
    rest = sum(ms for _, ms in ranked[top:])
    rows.append([f"{len(ranked) - top} other packages", f"{rest:.0f} ms"])
    rows.append(["**all imports**", f"**{sum(median.values()):.0f} ms**"])
    return rows
