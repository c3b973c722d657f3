"""Fault scenarios on the local stack, shared by tests/reliability (small) and `make soak` (big).

Each scenario drives the real processes of `make demo` through a `Harness` and returns a
`ScenarioResult`: per uploaded object, classified, classified more than once (duplicates),
dead-lettered, lost. A scenario passes only with zero lost: every upload RGW acknowledged ends
classified or recorded at the dead-letter sink (from where `Harness.replay_dead_letters` sends it
again; the outage scenarios do, and count what the replay classified).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.harness import AMQP_BUCKET, Harness, KeyOutcome, Upload
from pipeline.samples import photo
from pipeline.topology import load_topology

SETTLE_TIMEOUT = 120.0
# RGW 16.2 retries a failed HTTP push from its persistent queue on a slow timer, and adopts a
# queue only at its 30 s rescan: the source/RGW scenarios allow for both.
SLOW_SETTLE_TIMEOUT = 150.0


@dataclass
class ScenarioResult:
    name: str
    uploaded: int = 0  # uploads RGW acknowledged
    refused: int = 0  # uploads the client saw fail (RGW down): not expected to arrive
    classified: int = 0
    duplicates: int = 0  # objects with more than one classification.result
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
            if len(outcome.results) > 1:
                result.duplicates += 1
        elif outcome.dead:
            result.dead_lettered += 1
        else:
            result.lost += 1
            result.lost_keys.append(upload.key)
    result.seconds = max(0.0, last - started)
    return result


def _keys(prefix: str, count: int) -> list[tuple[str, bytes]]:
    return [(f"{prefix}/{i:05d}-{photo(i).name}", photo(i).body) for i in range(count)]


def _settle(
    harness: Harness, name: str, uploads: list[Upload], started: float, timeout: float
) -> ScenarioResult:
    keys = [u.key for u in uploads if u.acknowledged]
    outcomes = harness.wait_settled(keys, timeout)
    return tally(name, uploads, outcomes, started)


def _replay_and_settle(
    harness: Harness, name: str, uploads: list[Upload], started: float, timeout: float
) -> ScenarioResult:
    """Settle; then replay what was dead-lettered and settle again."""
    keys = [u.key for u in uploads if u.acknowledged]
    harness.wait_settled(keys, timeout)
    replayed = harness.replay_dead_letters(keys)
    if replayed:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            outcomes = harness.outcomes(keys)
            if all(o.classified for o in outcomes.values() if o.dead):
                break
            time.sleep(0.2)
    result = tally(name, uploads, harness.wait_settled(keys, timeout), started)
    result.replayed = replayed
    return result


def warm_up(harness: Harness, timeout: float = 90.0) -> float:
    """One upload, waited for: RGW adopts a new persistent topic's queue at its 30 s rescan."""
    started = time.monotonic()
    uploads = harness.upload_many(_keys("warm-up", 1), writers=1)
    outcome = harness.wait_settled([uploads[0].key], timeout, quiet=0)
    if not any(o.classified for o in outcome.values()):
        raise RuntimeError(f"warm-up object not classified within {timeout:.0f} s")
    return time.monotonic() - started


# --- 1. load -------------------------------------------------------------------------------------


def load(harness: Harness, objects: int, writers: int = 8) -> ScenarioResult:
    """`objects` uploads (photos from 48 px thumbnails to ~5 MB) by `writers` clients at once."""
    started = time.time()
    uploads = harness.upload_many(_keys("load", objects), writers=writers)
    result = _settle(harness, "load", uploads, started, SETTLE_TIMEOUT + objects * 0.5)
    sizes = [len(photo(i).body) for i in range(objects)]
    result.notes.append(f"{writers} writers, {min(sizes)}..{max(sizes)} bytes")
    return result


# --- 2. a function killed mid-stream -------------------------------------------------------------


def _during(
    harness: Harness,
    prefix: str,
    objects: int,
    fault: Callable[[], None],
    client: object = None,
    bucket: str | None = None,
    rate: float = 20.0,
) -> tuple[list[Upload], float]:
    """Upload at about `rate` objects/s from one thread while `fault` runs after a third of them."""
    items = _keys(prefix, objects)
    uploads: list[Upload] = []
    started = time.time()
    fault_thread = threading.Thread(target=fault, name=f"fault-{prefix}")
    for index, item in enumerate(items):
        if index == objects // 3:
            fault_thread.start()
        kwargs: dict[str, object] = {"writers": 1, "client": client}
        if bucket is not None:
            kwargs["bucket"] = bucket
        uploads += harness.upload_many([item], **kwargs)  # type: ignore[arg-type]
        time.sleep(1.0 / rate)
    if fault_thread.is_alive() or fault_thread.ident is not None:
        fault_thread.join()
    return uploads, started


def function_killed(
    harness: Harness, objects: int, victim: str = "resnet", down: float = 3.0
) -> ScenarioResult:
    """SIGKILL a classifier while events flow; start it again on the same port `down` s later."""

    def fault() -> None:
        harness.stack.kill(victim)
        time.sleep(down)
        harness.stack.restart(victim)

    uploads, started = _during(harness, f"kill-{victim}", objects, fault)
    result = _replay_and_settle(harness, f"{victim} killed", uploads, started, SETTLE_TIMEOUT)
    result.notes.append(f"SIGKILL, restarted after {down:.0f} s")
    return result


# --- 3. the model server down --------------------------------------------------------------------


@dataclass
class RetryAccount:
    """How hard the channel pushed on the functions while a dependency was down."""

    deliveries: int  # classifier deliveries recorded for the scenario's events
    attempts: int  # HTTP attempts they took in all
    max_attempts: int
    allowed_attempts: int  # retry + 1, from the manifests
    function_requests: int  # POSTs the classifiers received meanwhile (their own counters)


def retry_account(harness: Harness, keys: list[str], received_before: float) -> RetryAccount:
    dispatched = harness.dispatches(keys)
    topology = load_topology(harness.demo.options.knative_dir)
    retry = max(s.delivery.retry for s in topology.subscriptions_of("rgw-events"))
    received = sum(
        harness.counters(n).get("cloudevents_received_total", 0.0) for n in ("resnet", "vision")
    )
    return RetryAccount(
        deliveries=len(dispatched),
        attempts=sum(int(e["attempts"]) for e in dispatched),
        max_attempts=max((int(e["attempts"]) for e in dispatched), default=0),
        allowed_attempts=retry + 1,
        function_requests=int(received - received_before),
    )


def modelserver_down(
    harness: Harness, objects: int, down: float = 10.0
) -> tuple[ScenarioResult, RetryAccount]:
    """Stop the model server for `down` s while events flow: functions answer 503, the channel
    retries with backoff, what outlasts the delivery policy is dead-lettered, then replayed."""
    before = sum(
        harness.counters(n).get("cloudevents_received_total", 0.0) for n in ("resnet", "vision")
    )

    def fault() -> None:
        harness.stack.kill("modelserver")
        time.sleep(down)
        harness.stack.restart("modelserver", timeout=300)

    uploads, started = _during(harness, "modelserver-down", objects, fault, rate=4.0)
    keys = [u.key for u in uploads if u.acknowledged]
    harness.wait_settled(keys, SETTLE_TIMEOUT)
    account = retry_account(harness, keys, before)
    result = _replay_and_settle(harness, "model server down", uploads, started, SETTLE_TIMEOUT)
    result.notes.append(
        f"down {down:.0f} s; attempts max {account.max_attempts}/{account.allowed_attempts}, "
        f"{account.function_requests} requests for {account.deliveries} deliveries"
    )
    return result, account


# --- 4. RGW restarted ----------------------------------------------------------------------------


def rgw_restart(harness: Harness, objects: int, down: float = 3.0) -> ScenarioResult:
    """Stop radosgw cleanly while a client uploads, start it again `down` s later: uploads in
    the gap fail for the client; every acknowledged one must still be classified."""

    def fault() -> None:
        harness.stack.stop_radosgw()
        time.sleep(down)
        harness.stack.start_stopped_rgw_daemons()

    client = harness.impatient_s3()
    uploads, started = _during(harness, "rgw-restart", objects, fault, client=client, rate=10.0)
    result = _replay_and_settle(harness, "RGW restart", uploads, started, SLOW_SETTLE_TIMEOUT)
    result.notes.append(f"radosgw SIGTERM, {result.refused} uploads refused meanwhile")
    return result


# --- 5. the source killed ------------------------------------------------------------------------


def source_killed(
    harness: Harness, objects: int, way: str = "http", down: float = 3.0
) -> ScenarioResult:
    """SIGKILL the source (HTTP adapter, or the AMQP consumer) while events flow, restart it."""
    name = "source" if way == "http" else "source-amqp"
    bucket = None if way == "http" else AMQP_BUCKET

    def fault() -> None:
        harness.stack.kill(name)
        time.sleep(down)
        harness.stack.restart(name)

    uploads, started = _during(harness, f"kill-source-{way}", objects, fault, bucket=bucket)
    result = _replay_and_settle(
        harness, f"source killed ({way})", uploads, started, SLOW_SETTLE_TIMEOUT
    )
    result.notes.append(f"SIGKILL, restarted after {down:.0f} s")
    return result


# --- the table -----------------------------------------------------------------------------------


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


# --- 6. duplicates -------------------------------------------------------------------------------


@dataclass
class DuplicateCheck:
    function: str
    event_id: str
    channel_answers: list[int]  # the dispatcher's status for each of the two sends
    replies: int  # classification.results at the Broker for this event id
    result_log_lines: list[int]  # the function's result log lines for this id, after each send
    handled: float  # the function's cloudevents_handled_total grew by this
    duplicates_counted: float  # the function's cloudevents_duplicates_total grew by this
    tags: dict[str, str]


def event_id_routed_to(function: str, salt: str) -> str:
    """An event id the Route's 50/50 split sends to `function` (the split hashes the id)."""
    from pipeline.dispatcher import split_point

    for n in range(1000):
        candidate = f"{salt}-{n}"
        if (split_point(candidate) < 50) == (function == "resnet"):
            return candidate
    raise RuntimeError("no id found")


def duplicate_delivery(harness: Harness, function: str, key: str) -> DuplicateCheck:
    """The same CloudEvent twice through the channel (at-least-once redelivery): one reply,
    one tag write, one log line; the second copy is dropped by id."""
    import json

    from pipeline.demo import BUCKET
    from pipeline.harness import records, s3_record

    event_id = event_id_routed_to(function, f"dup-{key}")
    log_path = harness.stack.process(function).log_path

    def log_lines() -> int:
        count = 0
        for line in log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            count += entry.get("event_id") == event_id and "labels" in entry
        return count

    before = harness.counters(function)
    data = records(s3_record(BUCKET, key))
    answers, lines = [], []
    for _ in range(2):
        sent = harness.post_event(
            harness.endpoints.dispatcher, data, event_id=event_id, subject=key
        )
        answers.append(sent.status_code)
        lines.append(log_lines())
    after = harness.counters(function)
    results, _, _ = harness.recordings()
    replies = sum(
        1
        for e in results
        if isinstance(e.get("data"), dict) and e["data"].get("event_id") == event_id
    )
    tagging = harness.s3.get_object_tagging(Bucket=BUCKET, Key=key)
    return DuplicateCheck(
        function=function,
        event_id=event_id,
        channel_answers=answers,
        replies=replies,
        result_log_lines=lines,
        handled=after.get("cloudevents_handled_total", 0)
        - before.get("cloudevents_handled_total", 0),
        duplicates_counted=after.get("cloudevents_duplicates_total", 0.0)
        - before.get("cloudevents_duplicates_total", 0.0),
        tags={t["Key"]: t["Value"] for t in tagging["TagSet"]},
    )
