"""The HTTP way against real RGW: persistent topic -> source -> recorder (a real HTTP sink)."""

from __future__ import annotations

import contextlib
import socket
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from testkit.sink import Recorder, start_recorder
from tests.fixtures.rgw import RgwGateway
from tests.fixtures.source import (
    FIRST_EVENT_TIMEOUT,
    cloudevents_in,
    running_source,
    wait_for_subjects,
)

pytestmark = pytest.mark.rgw

KEYS = [
    "plain.jpg",
    "with space.jpg",
    "plus+sign.jpg",
    "ünïcödé/猫 photo.png",
    "d1/d2/d3/d4/d5/deep key+1.jpg",
    "percent%20literal.jpg",
]


def setup_args(bucket: str, topic: str, *extra: str) -> list[str]:
    return ["--setup-bucket", bucket, "--topic", topic, "--deadline", "2", *extra]


@dataclass
class HttpWay:
    """RGW, a bucket and a persistent topic, and the held socket the source serves on."""

    rgw: RgwGateway
    bucket: str
    topic: str
    log_dir: Path
    listener: socket.socket

    @contextlib.contextmanager
    def source_into_a_sink(self, *extra: str) -> Iterator[Recorder]:
        """The HTTP-way source, set up for the bucket, delivering into a fresh recording sink."""
        with (
            start_recorder(self.log_dir, "sink") as sink,
            running_source(
                self.log_dir,
                "http",
                sink.url("/"),
                self.rgw.env(),
                setup_args(self.bucket, self.topic, *extra),
                listener=self.listener,
            ),
        ):
            yield sink


@pytest.fixture
def way(
    rgw: RgwGateway,
    source_bucket: str,
    log_dir: Path,
    source_http_topic: str,
    source_http_listener: socket.socket,
) -> HttpWay:
    return HttpWay(rgw, source_bucket, source_http_topic, log_dir, source_http_listener)


def test_uploads_arrive_as_cloudevents(way: HttpWay) -> None:
    bucket, s3 = way.bucket, way.rgw.s3_client()
    with way.source_into_a_sink() as sink:
        for key in KEYS:
            s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
        events = wait_for_subjects(sink, set(KEYS), bucket=bucket)

    by_subject = {event.subject: event for event in events}
    assert len({event.id for event in events}) == len(KEYS)  # duplicates share their id
    for key in KEYS:
        event = by_subject[key]
        assert event.attributes["specversion"] == "1.0"
        assert event.attributes["type"] == "com.amazonaws.s3.ObjectCreated:Put"
        assert event.attributes["source"] == f"ceph:s3.default.{bucket}"
        assert event.content_type == "application/json"
        assert event.data["s3"]["object"]["key"] == key
        assert event.data["s3"]["bucket"]["name"] == bucket
        assert event.data["s3"]["object"]["size"] == len(key.encode())
        assert datetime.fromisoformat(event.attributes["time"]) == datetime.fromisoformat(
            event.data["eventTime"]
        )


def test_delete_objects_yields_distinct_ids(way: HttpWay) -> None:
    bucket, s3 = way.bucket, way.rgw.s3_client()
    keys = [f"batch/{i} x.jpg" for i in range(10)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    with way.source_into_a_sink("--events", "removed") as sink:
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key} for key in keys]})
        events = wait_for_subjects(sink, set(keys), bucket=bucket)

    removals = [
        e for e in events if e.attributes["type"].startswith("com.amazonaws.s3.ObjectRemoved")
    ]
    ids_per_key: dict[str, set[str]] = {}
    for event in removals:
        ids_per_key.setdefault(event.subject, set()).add(event.id)
    assert sorted(ids_per_key) == sorted(keys)
    assert all(len(ids) == 1 for ids in ids_per_key.values())  # redeliveries keep their id
    assert len({event.id for event in removals}) == 10


def test_cloudevents_pushed_by_rgw_are_passed_on(log_dir: Path, recorder: Recorder) -> None:
    """Newer RGW (cloudevents=true) pushes binary CloudEvents itself: forwarded as they are."""
    body = b'{"Records":[{"eventName":"ObjectCreated:Put","s3":{"object":{"key":"k"}}}]}'
    overrides = '{"extensions": {"team": "vision"}}'
    with running_source(
        log_dir, "http", recorder.url("/"), {"K_CE_OVERRIDES": overrides}
    ) as source:
        headers = {
            "ce-specversion": "1.0",
            "ce-id": "req-1.id2",
            "ce-type": "com.amazonaws.ObjectCreated:Put",
            "ce-source": "ceph:s3.zg.bkt",
            "ce-time": "2026-11-28T21:38:19.047572Z",
            "content-type": "application/json",
        }
        answer = httpx.post(source.url("/"), headers=headers, content=body, timeout=10)
        assert answer.status_code == 200
    [event] = cloudevents_in(recorder)
    assert event.attributes["id"] == "req-1.id2"
    assert event.attributes["type"] == "com.amazonaws.ObjectCreated:Put"
    assert event.attributes["source"] == "ceph:s3.zg.bkt"
    assert event.attributes["team"] == "vision"
    assert event.data["Records"][0]["s3"]["object"]["key"] == "k"


def test_unusable_push_is_acknowledged_and_dead_lettered(log_dir: Path, recorder: Recorder) -> None:
    """Never a 4xx to RGW: it would push a poison entry again forever, blocking its queue."""
    with start_recorder(log_dir, "dead-letters") as dead_letters:
        with running_source(log_dir, "http", recorder.url("/")) as source:
            answer = httpx.post(source.url("/"), content=b'{"hello": 1}', timeout=10)
            assert answer.status_code == 202
            assert "dropped" in answer.text and "S3 notification" in answer.text
            metrics = httpx.get(source.url("/metrics")).text
            assert 'source_events_failed_total{reason="invalid"} 1.0' in metrics
        env = {"DEAD_LETTER_URL": dead_letters.url("/dlq")}
        with running_source(log_dir, "http", recorder.url("/"), env) as source:
            answer = httpx.post(source.url("/"), content=b"not json", timeout=10)
            assert answer.status_code == 202
            assert "dead-lettered" in answer.text
        [parked] = dead_letters.wait_for(1)
    assert parked.body == b"not json"
    assert parked.header("ce-type") == "dev.rgwinference.source.invalid"
    assert recorder.requests() == []


def test_metrics_and_health(log_dir: Path, recorder: Recorder) -> None:
    with running_source(log_dir, "http", recorder.url("/")) as source:
        assert httpx.get(source.url("/health/liveness")).status_code == 200
        assert httpx.get(source.url("/health/readiness")).status_code == 200
        metrics = httpx.get(source.url("/metrics")).text
    for name in (
        "source_events_received_total",
        "source_events_delivered_total",
        "source_delivery_retries_total",
        "source_events_failed_total",
        "source_events_dead_lettered_total",
        "source_delivery_latency_seconds_bucket",
    ):
        assert name in metrics or name.replace("_total", "") in metrics


def assert_no_loss(sink: Recorder, keys: set[str]) -> Counter[str]:
    """Every key arrived; duplicates (at least once) carry the same id. Returns copies per id."""
    events = wait_for_subjects(sink, keys, timeout=FIRST_EVENT_TIMEOUT)
    ids_per_subject: dict[str, set[str]] = {}
    for event in events:
        ids_per_subject.setdefault(event.subject, set()).add(event.id)
    assert all(len(ids) == 1 for ids in ids_per_subject.values()), ids_per_subject
    return Counter(event.id for event in events)
