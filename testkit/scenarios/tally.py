"""What a scenario found, per uploaded object, and the Markdown table `make soak` prints.

A scenario passes only with zero lost: every upload RGW acknowledged ends classified or recorded
at the dead-letter sink (from where `LiveStack.replay_dead_letters` sends it again; the outage
scenarios do, and count what the replay classified).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from testkit.live_stack import LiveStack
from testkit.recordings import KeyOutcome, Upload
from testkit.rgw_counters import missing_events_hint
from testkit.samples import photo

SETTLE_TIMEOUT = 120.0
# A restarted radosgw adopts its persistent queues only at its 30 s rescan (after the old
# owner's lock expired): the source/RGW scenarios allow for that.
SLOW_SETTLE_TIMEOUT = 150.0


@dataclass
class ScenarioResult:
    name: str
    uploaded: int = 0  # uploads RGW acknowledged
    refused: int = 0  # uploads the client saw fail (RGW down): not expected to arrive
    classified: int = 0
    # Objects one function gave more than one distinct result id: what a consumer that drops
    # repeated (source, id) pairs would still see twice. Should be zero.
    duplicates: int = 0
    repeated: int = 0  # replies that repeated a result id already seen (dropped downstream)
    dead_lettered: int = 0  # still only at the dead-letter sink at the end
    replayed: int = 0  # dead letters sent through the channel again
    lost: int = 0
    seconds: float = 0.0  # first upload -> last result
    latencies: list[float] = field(default_factory=list)  # upload -> result, seconds
    notes: list[str] = field(default_factory=list)
    lost_keys: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0

    @property
    def throughput(self) -> float:
        return self.classified / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        if len(self.latencies) == 1:
            return self.latencies[0]
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[round(q) - 1]


def tally(
    name: str, uploads: list[Upload], outcomes: dict[str, KeyOutcome], started: float
) -> ScenarioResult:
    result = ScenarioResult(name)
    last = started
    for upload in uploads:
        if not upload.acknowledged:
            result.refused += 1
            continue
        result.uploaded += 1
        outcome = outcomes.get(upload.key, KeyOutcome())
        if outcome.classified:
            result.classified += 1
            first = min(t for t, _ in outcome.results)
            result.latencies.append(first - upload.started)
            last = max(last, first)
            if outcome.duplicated:
                result.duplicates += 1
            result.repeated += len(outcome.result_ids) - len(set(outcome.result_ids))
        elif outcome.dead:
            result.dead_lettered += 1
        else:
            result.lost += 1
            result.lost_keys.append(upload.key)
    result.seconds = max(0.0, last - started)
    return result


def markdown_table(results: list[ScenarioResult]) -> str:
    lines = [
        "| scenario | objects | classified | duplicates | dead-lettered | replayed | lost "
        "| refused uploads | throughput | p50 | p99 | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        p50, p99 = r.percentile(50), r.percentile(99)
        lines.append(
            f"| {r.name} | {r.uploaded} | {r.classified} | {r.duplicates} | {r.dead_lettered} "
            f"| {r.replayed} | {r.lost} | {r.refused} | {r.throughput:.1f}/s "
            f"| {_seconds(p50)} | {_seconds(p99)} | {'; '.join(r.notes)} |"
        )
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


# --- waiting for the outcome ---------------------------------------------------------------------


def photos_under(prefix: str, count: int) -> list[tuple[str, bytes]]:
    """`count` (key, body) pairs of the load mix, keyed under `prefix/`."""
    return [(f"{prefix}/{i:05d}-{photo(i).name}", photo(i).body) for i in range(count)]


def settle(
    live: LiveStack, name: str, uploads: list[Upload], started: float, timeout: float
) -> ScenarioResult:
    keys = [u.key for u in uploads if u.acknowledged]
    result = tally(name, uploads, live.wait_settled(keys, timeout), started)
    _explain_losses(live, result)
    return result


def replay_and_settle(
    live: LiveStack, name: str, uploads: list[Upload], started: float, timeout: float
) -> ScenarioResult:
    """Settle; then replay what was dead-lettered and settle again."""
    keys = [u.key for u in uploads if u.acknowledged]
    live.wait_settled(keys, timeout)
    replayed = live.replay_dead_letters(keys)
    if replayed:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            outcomes = live.outcomes(keys)
            if all(o.classified for o in outcomes.values() if o.dead):
                break
            time.sleep(0.2)
    result = tally(name, uploads, live.wait_settled(keys, timeout), started)
    result.replayed = replayed
    _explain_losses(live, result)
    return result


def _explain_losses(live: LiveStack, result: ScenarioResult) -> None:
    if result.lost and live.stack.rgw is not None:
        result.notes.append(missing_events_hint(live.stack.rgw.data_dir))


def warm_up(live: LiveStack, timeout: float = 90.0) -> float:
    """One upload, waited for: RGW adopts a new persistent topic's queue at its 30 s rescan."""
    started = time.monotonic()
    uploads = live.upload_many(photos_under("warm-up", 1), writers=1)
    outcome = live.wait_settled([uploads[0].key], timeout, quiet=0)
    if not any(o.classified for o in outcome.values()):
        raise RuntimeError(f"warm-up object not classified within {timeout:.0f} s")
    return time.monotonic() - started
