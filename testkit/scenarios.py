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
from typing import Any

from localknative.topology import load_topology
from testkit.harness import AMQP_BUCKET, CLASSIFIERS, Harness, KeyOutcome, Upload
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
    result = tally(name, uploads, outcomes, started)
    _explain_losses(harness, result)
    return result


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
    _explain_losses(harness, result)
    return result


def _explain_losses(harness: Harness, result: ScenarioResult) -> None:
    if result.lost and harness.stack.rgw is not None:
        result.notes.append(missing_events_hint(harness.stack.rgw.data_dir))


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


# How long the model server stays down past `down` waiting for a delivery to meet the outage.
OUTAGE_OBSERVED_TIMEOUT = 30.0


def modelserver_down(
    harness: Harness, objects: int, down: float = 10.0
) -> tuple[ScenarioResult, RetryAccount]:
    """Stop the model server for `down` s while events flow: functions answer 503, the channel
    retries with backoff, what outlasts the delivery policy is dead-lettered, then replayed."""
    before = sum(
        harness.counters(n).get("cloudevents_received_total", 0.0) for n in ("resnet", "vision")
    )

    def unavailable_answers() -> float:
        counters = harness.counters("resnet")
        return sum(v for k, v in counters.items() if k.startswith("cloudevents_failed_total{"))

    def fault() -> None:
        failed_before = unavailable_answers()
        harness.stack.kill("modelserver")
        time.sleep(down)
        # The scenario is about deliveries that meet the outage. RGW's persistent queue can hold
        # events back for seconds; if none has reached resnet yet, stay down until one has.
        deadline = time.monotonic() + OUTAGE_OBSERVED_TIMEOUT
        while unavailable_answers() <= failed_before and time.monotonic() < deadline:
            time.sleep(0.2)
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
    from localknative.dispatcher import split_point

    for n in range(1000):
        candidate = f"{salt}-{n}"
        if (split_point(candidate) < 50) == (function == "resnet"):
            return candidate
    raise RuntimeError("no id found")


def duplicate_delivery(harness: Harness, function: str, key: str) -> DuplicateCheck:
    """The same CloudEvent twice through the channel (at-least-once redelivery): one reply,
    one tag write, one log line; the second copy is dropped by id."""
    import json

    from localknative.demo import BUCKET
    from testkit.harness import records, s3_record

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


# --- 7. bad input through the whole pipeline ----------------------------------------------------

CLASSIFIED = "classified"


@dataclass(frozen=True)
class BadCase:
    key: str
    body: bytes
    expect: str | int  # CLASSIFIED, or the status the dead letter must carry
    # RGW may refuse the upload itself (then the client saw the error and nothing is expected).
    refusal_ok: bool = False


def bad_cases() -> list[BadCase]:
    from testkit import samples
    from testkit.harness import MAX_OBJECT_BYTES

    jpeg = samples.upright_jpeg()

    def long_key(size: int) -> str:
        return f"bad/long{size}-" + "k" * (size - len(f"bad/long{size}-") - len(".jpg")) + ".jpg"

    return [
        BadCase("bad/truncated.jpg", samples.truncated_jpeg(), 415),
        BadCase("bad/shopping-list.jpg", samples.text_as_jpeg(), 415),
        BadCase("bad/bomb-28000x28000.png", samples.png_declaring(28000, 28000), 413),
        BadCase("bad/empty.jpg", b"", 415),
        BadCase("bad/over-the-cap.jpg", jpeg + b"\0" * (MAX_OBJECT_BYTES + 1 - len(jpeg)), 413),
        BadCase("bad/greyscale.jpg", samples.greyscale_jpeg(), CLASSIFIED),
        BadCase("bad/cmyk.jpg", samples.cmyk_jpeg(), CLASSIFIED),
        BadCase("bad/animated.gif", samples.animated_gif(), CLASSIFIED),
        BadCase("bad/exif-6.jpg", samples.exif_rotated_jpeg(6), CLASSIFIED),
        BadCase("bad/exif-8.jpg", samples.exif_rotated_jpeg(8), CLASSIFIED),
        BadCase("bad/with space and  two.jpg", jpeg, CLASSIFIED),
        BadCase("bad/plus+sign+.jpg", jpeg, CLASSIFIED),
        BadCase("bad/ünïcødé-猫-🐈.jpg", jpeg, CLASSIFIED),
        BadCase("bad/percent%20%zz%.jpg", jpeg, CLASSIFIED),
        BadCase(long_key(400), jpeg, CLASSIFIED),
        # S3 allows 1024-byte keys; the local cluster's `osd max object name len = 460`
        # (scripts/rgw-up.sh) makes RGW answer 500 to a PUT of one this long.
        BadCase(long_key(1000), jpeg, CLASSIFIED, refusal_ok=True),
    ]


@dataclass
class BadOutcome:
    case: BadCase
    uploaded: bool
    got: str | int | None  # CLASSIFIED, a dead letter's status, or None (nothing: lost)
    upload_error: str | None = None
    function: str | None = None  # the classifier that refused it


def bad_input(harness: Harness, timeout: float = SETTLE_TIMEOUT) -> list[BadOutcome]:
    cases = bad_cases()
    uploads = {u.key: u for u in harness.upload_many([(c.key, c.body) for c in cases], writers=4)}
    keys = [k for k, u in uploads.items() if u.acknowledged]
    outcomes = harness.wait_settled(keys, timeout)
    found = []
    for case in cases:
        upload = uploads[case.key]
        got: str | int | None = None
        function: str | None = None
        outcome = outcomes.get(case.key)
        if outcome is not None and outcome.classified:
            got = CLASSIFIED
        elif outcome is not None and outcome.dead:
            attributes = outcome.dead[0]["attributes"]
            code = attributes.get("knativeerrorcode")
            got = int(code) if code is not None else "no answer"
            function = next(
                (
                    n
                    for n in CLASSIFIERS
                    if attributes.get("knativeerrordest", "").startswith(harness.url(n))
                ),
                None,
            )
        found.append(BadOutcome(case, upload.acknowledged, got, upload.error, function))
    return found


def bad_event(harness: Harness, index: int, keys: dict[str, str]) -> tuple[dict[str, str], bytes]:
    """The index-th of a cycle of bad events a function must refuse cheaply (for the leak test)."""
    from common.cloudevents_http import new_event, to_binary_headers
    from localknative.demo import BUCKET
    from testkit.harness import records, s3_record

    kind = index % 7
    event_id = f"bad-{index}"
    if kind == 0:  # not a CloudEvent at all
        return {"content-type": "application/json"}, b'{"hello": "world"}'
    if kind == 1:  # data is not JSON
        headers = {
            "ce-specversion": "1.0",
            "ce-id": event_id,
            "ce-source": "/bad",
            "ce-type": "com.amazonaws.s3.ObjectCreated:Put",
            "content-type": "application/json",
        }
        return headers, b"{not json" + b"x" * 500
    target = {
        2: (BUCKET, f"missing/{index}.jpg"),
        3: (BUCKET, keys["text"]),
        4: (BUCKET, keys["bomb"]),
        5: (BUCKET, keys["truncated"]),
        6: ("not-allowed", "x.jpg"),
    }[kind]
    event = new_event(
        "com.amazonaws.s3.ObjectCreated:Put",
        "/bad",
        records(s3_record(*target)),
        event_id=event_id,
    )
    return to_binary_headers(event)


@dataclass
class MemoryCheck:
    function: str
    events: int
    rss_before_kib: int
    rss_after_kib: int
    statuses: dict[int, int]

    @property
    def growth_kib(self) -> int:
        return self.rss_after_kib - self.rss_before_kib


def memory_under_bad_events(
    harness: Harness, function: str, events: int, warm_up: int = 200, concurrency: int = 8
) -> MemoryCheck:
    """RSS of one function before and after `events` bad events sent straight to it."""
    from concurrent.futures import ThreadPoolExecutor

    from localknative.demo import BUCKET
    from testkit import samples

    keys = {
        "text": "leak/text.jpg",
        "bomb": "leak/bomb.png",
        "truncated": "leak/truncated.jpg",
    }
    bodies = {
        "text": samples.text_as_jpeg(),
        "bomb": samples.png_declaring(28000, 28000),
        "truncated": samples.truncated_jpeg(),
    }
    for name, key in keys.items():
        harness.s3.put_object(Bucket=BUCKET, Key=key, Body=bodies[name])
    url = harness.url(function) + "/"
    statuses: dict[int, int] = {}

    def send(index: int) -> int:
        headers, body = bad_event(harness, index, keys)
        return harness.http.post(url, headers=headers, content=body).status_code

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(send, range(warm_up)))
        before = harness.rss_of(function)
        for status in pool.map(send, range(warm_up, warm_up + events)):
            statuses[status] = statuses.get(status, 0) + 1
    return MemoryCheck(function, events, before, harness.rss_of(function), statuses)


# --- 8. hostile events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HostileAnswer:
    case: str
    target: str
    status: int


def hostile_events(harness: Harness, elsewhere: str) -> list[HostileAnswer]:
    """Events that try to make a function read from elsewhere, or work without bound.
    `elsewhere` is host:port of a recorder that must receive nothing."""
    from common.cloudevents_http import new_event, to_binary_headers
    from localknative.demo import BUCKET
    from testkit.harness import records, s3_record

    many = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": BUCKET}, "object": {"key": f"k{i}"}},
            }
            for i in range(10_000)
        ]
    }
    with_endpoint = s3_record(BUCKET, "chelsea.jpg")
    with_endpoint["s3"]["bucket"]["endpoint"] = f"http://{elsewhere}/"
    with_endpoint["s3"]["object"]["url"] = f"http://{elsewhere}/chelsea.jpg"
    with_endpoint["s3"]["bucket"]["arn"] = f"http://{elsewhere}"
    cases: dict[str, Any] = {
        "bucket outside ALLOWED_BUCKETS": records(s3_record("private-bucket", "chelsea.jpg")),
        "endpoint URL as the bucket": records(s3_record(f"{elsewhere}", "chelsea.jpg")),
        "endpoint URL as the key": records(s3_record(BUCKET, f"http://{elsewhere}/x.jpg")),
        "endpoint URL in extra record fields": records(with_endpoint),
        "../ in the key": records(s3_record(BUCKET, "../private-bucket/chelsea.jpg")),
        "10,000 records in one event": many,
    }
    answers = []
    for name in ("resnet", "vision", "receiver"):
        url = harness.url(name) + "/"
        for case, data in cases.items():
            event = new_event(
                "com.amazonaws.s3.ObjectCreated:Put",
                f"http://{elsewhere}/source",
                data,
                extensions={"endpoint": f"http://{elsewhere}/"},
            )
            headers, body = to_binary_headers(event)
            status = harness.http.post(url, headers=headers, content=body).status_code
            answers.append(HostileAnswer(case, name, status))
        raw = {
            "10 MB body": (
                {"ce-specversion": "1.0", "ce-id": "big", "ce-source": "/x",
                 "ce-type": "com.amazonaws.s3.ObjectCreated:Put",
                 "content-type": "application/json"},
                b'{"Records": [' + b" " * (10 * 1024 * 1024) + b"]}",
            ),
            "invalid UTF-8 data": (
                {"ce-specversion": "1.0", "ce-id": "utf8", "ce-source": "/x",
                 "ce-type": "com.amazonaws.s3.ObjectCreated:Put",
                 "content-type": "application/json"},
                b'{"Records": [{"eventName": "\xff\xfe\xc3\x28"}]}',
            ),
            "invalid UTF-8 structured event": (
                {"content-type": "application/cloudevents+json"},
                b'{"specversion": "1.0", "id": "\xff\xfe", "source": "/x", "type": "t"}',
            ),
        }  # fmt: skip
        for case, (headers, body) in raw.items():
            status = harness.http.post(url, headers=headers, content=body).status_code
            answers.append(HostileAnswer(case, name, status))
    return answers
