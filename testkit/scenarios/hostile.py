"""Events sent straight at the functions: bad ones a function must refuse cheaply (and without
growing: the memory check), and hostile ones that try to make it read from elsewhere or work
without bound."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from common.cloudevents_http import new_event, to_binary_headers
from localknative.demo import BUCKET
from testkit import samples
from testkit.live_stack import S3_EVENT_TYPE, LiveStack
from testkit.records import binary_headers, records, s3_record


def bad_event(index: int, keys: dict[str, str]) -> tuple[dict[str, str], bytes]:
    """The index-th of a cycle of bad events a function must refuse cheaply (for the leak test)."""
    kind = index % 7
    event_id = f"bad-{index}"
    if kind == 0:  # not a CloudEvent at all
        return {"content-type": "application/json"}, b'{"hello": "world"}'
    if kind == 1:  # data is not JSON
        return binary_headers(S3_EVENT_TYPE, "/bad", event_id), b"{not json" + b"x" * 500
    target = {
        2: (BUCKET, f"missing/{index}.jpg"),
        3: (BUCKET, keys["text"]),
        4: (BUCKET, keys["bomb"]),
        5: (BUCKET, keys["truncated"]),
        6: ("not-allowed", "x.jpg"),
    }[kind]
    event = new_event(S3_EVENT_TYPE, "/bad", records(s3_record(*target)), event_id=event_id)
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
    live: LiveStack, function: str, events: int, warm_up: int = 200, concurrency: int = 8
) -> MemoryCheck:
    """RSS of one function before and after `events` bad events sent straight to it."""
    objects = {
        "text": ("leak/text.jpg", samples.text_as_jpeg()),
        "bomb": ("leak/bomb.png", samples.png_bomb(28000)),
        "truncated": ("leak/truncated.jpg", samples.truncated_jpeg()),
    }
    for key, body in objects.values():
        live.s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    keys = {name: key for name, (key, _) in objects.items()}
    url = live.url(function) + "/"
    statuses: dict[int, int] = {}

    def send(index: int) -> int:
        headers, body = bad_event(index, keys)
        return live.http.post(url, headers=headers, content=body).status_code

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(send, range(warm_up)))
        before = live.rss_of(function)
        for status in pool.map(send, range(warm_up, warm_up + events)):
            statuses[status] = statuses.get(status, 0) + 1
    return MemoryCheck(function, events, before, live.rss_of(function), statuses)


@dataclass(frozen=True)
class HostileAnswer:
    case: str
    target: str
    status: int


def _hostile_data(elsewhere: str) -> dict[str, Any]:
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
    return {
        "bucket outside ALLOWED_BUCKETS": records(s3_record("private-bucket", "chelsea.jpg")),
        "endpoint URL as the bucket": records(s3_record(f"{elsewhere}", "chelsea.jpg")),
        "endpoint URL as the key": records(s3_record(BUCKET, f"http://{elsewhere}/x.jpg")),
        "endpoint URL in extra record fields": records(with_endpoint),
        "../ in the key": records(s3_record(BUCKET, "../private-bucket/chelsea.jpg")),
        "10,000 records in one event": many,
    }


_RAW: dict[str, tuple[dict[str, str], bytes]] = {
    "10 MB body": (
        binary_headers(S3_EVENT_TYPE, "/x", "big"),
        b'{"Records": [' + b" " * (10 * 1024 * 1024) + b"]}",
    ),
    "invalid UTF-8 data": (
        binary_headers(S3_EVENT_TYPE, "/x", "utf8"),
        b'{"Records": [{"eventName": "\xff\xfe\xc3\x28"}]}',
    ),
    "invalid UTF-8 structured event": (
        {"content-type": "application/cloudevents+json"},
        b'{"specversion": "1.0", "id": "\xff\xfe", "source": "/x", "type": "t"}',
    ),
}


def hostile_events(live: LiveStack, elsewhere: str) -> list[HostileAnswer]:
    """Events that try to make a function read from elsewhere, or work without bound.
    `elsewhere` is host:port of a recorder that must receive nothing."""
    cases = _hostile_data(elsewhere)
    answers = []
    for name in ("resnet", "vision", "receiver"):
        url = live.url(name) + "/"
        for case, data in cases.items():
            event = new_event(
                S3_EVENT_TYPE,
                f"http://{elsewhere}/source",
                data,
                extensions={"endpoint": f"http://{elsewhere}/"},
            )
            headers, body = to_binary_headers(event)
            status = live.http.post(url, headers=headers, content=body).status_code
            answers.append(HostileAnswer(case, name, status))
        for case, (headers, body) in _RAW.items():
            status = live.http.post(url, headers=headers, content=body).status_code
            answers.append(HostileAnswer(case, name, status))
    return answers
