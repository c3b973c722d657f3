"""RGW's bucket-notification counters, read from a local radosgw's admin socket.

What they are for: RGW 16.2 can hang a persistent queue after a burst of refused pushes (one
push's completion is lost, docs/source.md). From outside, that looks like events that never come;
the `rgw` perf counter `pubsub_push_pending` stuck above zero is the one sign RGW gives. The
local stack and the tests read it when events are missing, so the failure names its cause.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

RADOSGW_SOCKET = Path("run") / "client.rgw.gw.asok"  # where scripts/rgw-up.sh puts it


class CountersUnavailable(RuntimeError):
    """The admin socket did not answer (radosgw down, or not a local cluster)."""


def parse_perf_dump(text: str) -> dict[str, int]:
    """The `pubsub_*` counters of `perf dump`'s `rgw` section."""
    try:
        section = json.loads(text)["rgw"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CountersUnavailable(f"perf dump has no rgw section: {exc}") from exc
    if not isinstance(section, dict):
        raise CountersUnavailable("perf dump's rgw section is not an object")
    return {name: int(value) for name, value in section.items() if name.startswith("pubsub_")}


def notification_counters(rgw_data_dir: Path, timeout: float = 10.0) -> dict[str, int]:
    """`ceph --admin-daemon <data dir>/run/client.rgw.gw.asok perf dump`, pubsub part."""
    command = ["ceph", "--admin-daemon", str(rgw_data_dir / RADOSGW_SOCKET), "perf", "dump"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CountersUnavailable(f"{' '.join(command)}: {exc}") from exc
    if done.returncode != 0:
        raise CountersUnavailable(f"{' '.join(command)}: {done.stderr.strip()}")
    return parse_perf_dump(done.stdout)


def describe(counters: dict[str, int]) -> str:
    """One sentence on the counters, naming a possibly hung queue."""
    pending = counters.get("pubsub_push_pending", 0)
    summary = f"RGW pubsub_push_pending={pending}, pubsub_push_ok={counters.get('pubsub_push_ok')}"
    if pending > 0:
        return (
            f"{summary}: if pending does not move, a persistent queue is hung (RGW 16.2 after "
            "refused pushes; docs/source.md), and restarting radosgw releases it"
        )
    return summary


def missing_events_hint(rgw_data_dir: Path) -> str:
    """One sentence for a 'these events never arrived' message."""
    try:
        return describe(notification_counters(rgw_data_dir))
    except CountersUnavailable as exc:
        return f"RGW's notification counters are unavailable ({exc})"
