"""Duplicates through the channel.

- `duplicate_delivery`: the same CloudEvent twice (at-least-once redelivery): one reply, one tag
  write, one log line; the second copy is dropped by its id.
- `second_notification`: two notifications of one PUT with different CloudEvent ids (RGW's
  second push, a reconciliation): the model runs at most once, and every reply carries the same
  result id, so a consumer that drops repeated (source, id) pairs sees one result.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from localknative.demo import BUCKET
from localknative.routing import split_point
from testkit.live_stack import LiveStack
from testkit.records import records, s3_record


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
    result_ids: list[str]  # the ids of every result at the Broker for this key, by `function`


def event_id_routed_to(function: str, salt: str) -> str:
    """An event id the Route's 50/50 split sends to `function` (the split hashes the id)."""
    for n in range(1000):
        candidate = f"{salt}-{n}"
        if (split_point(candidate) < 50) == (function == "resnet"):
            return candidate
    raise RuntimeError("no id found")


def duplicate_delivery(live: LiveStack, function: str, key: str) -> DuplicateCheck:
    """Send one event for `key` twice through the channel, to `function`; what each part saw."""
    event_id = event_id_routed_to(function, f"dup-{key}")
    log_path = live.stack.process(function).log_path

    def log_lines() -> int:
        count = 0
        for line in log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            count += entry.get("event_id") == event_id and "labels" in entry
        return count

    before = live.counters(function)
    data = records(s3_record(BUCKET, key))
    answers, lines = [], []
    for _ in range(2):
        sent = live.post_event(live.endpoints.dispatcher, data, event_id=event_id, subject=key)
        answers.append(sent.status_code)
        lines.append(log_lines())
    after = live.counters(function)
    tagging = live.s3.get_object_tagging(Bucket=BUCKET, Key=key)

    def grew(counter: str) -> float:
        return after.get(counter, 0.0) - before.get(counter, 0.0)

    return DuplicateCheck(
        function=function,
        event_id=event_id,
        channel_answers=answers,
        replies=live.recordings().replies_to(event_id),
        result_log_lines=lines,
        handled=grew("cloudevents_handled_total"),
        duplicates_counted=grew("cloudevents_duplicates_total"),
        tags={t["Key"]: t["Value"] for t in tagging["TagSet"]},
        result_ids=result_ids_of(live, function, key),
    )


def result_ids_of(live: LiveStack, function: str, key: str) -> list[str]:
    """The result id of each classification.result for `key` from `function`, in order."""
    outcome = live.outcomes([key])[key]
    return [result_id for source, result_id in outcome.result_ids if source == function]


@dataclass
class SecondNotification:
    function: str
    channel_answers: list[int]
    result_ids: list[str]  # every result for the key from `function`, the upload's own first
    model_runs: int  # the function's result log lines for the key that ran the model


def second_notification(live: LiveStack, function: str, key: str) -> SecondNotification:
    """Two more notifications of the (already classified) PUT of `key`, each with a new id,
    routed to `function`; what the Broker and the function's log say."""
    log_path = live.stack.process(function).log_path
    record = s3_record(BUCKET, key)
    # RGW's own second push names the object's ETag, as the first did.
    record["s3"]["object"]["eTag"] = live.s3.head_object(Bucket=BUCKET, Key=key)["ETag"]
    data = records(record)
    answers = []
    for salt in ("second", "third"):
        event_id = event_id_routed_to(function, f"{salt}-{key}")
        sent = live.post_event(live.endpoints.dispatcher, data, event_id=event_id, subject=key)
        answers.append(sent.status_code)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(result_ids_of(live, function, key)) < 3:
        time.sleep(0.1)
    # Events whose result ran the model (vision logs one line per label: count events).
    runs: set[str] = set()
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("key") == key and "labels" in entry and entry.get("recorded") is False:
            runs.add(str(entry.get("event_id")))
    return SecondNotification(function, answers, result_ids_of(live, function, key), len(runs))
