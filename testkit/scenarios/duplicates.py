"""The same CloudEvent twice through the channel (at-least-once redelivery): one reply, one tag
write, one log line; the second copy is dropped by its id."""

from __future__ import annotations

import json
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
    )
