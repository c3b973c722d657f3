"""Bucket notifications from the real RGW to a real HTTP receiver (testkit.sink, recording)."""

from __future__ import annotations

import io
import os
from typing import Any

import pytest

from source.notification_specs import NotificationSpec, TopicSpec
from source.notifications import list_notifications, setup
from testkit.rgw_counters import notification_counters
from testkit.sink import RecordedRequest, Recorder, body_contains
from tests.fixtures.rgw import RgwGateway

pytestmark = pytest.mark.rgw

# A new persistent topic's first event can wait for RGW's 30 s queue-list rescan.
PERSISTENT_TIMEOUT = 45.0


def record_of(request: RecordedRequest) -> dict[str, Any]:
    records = request.json()["Records"]
    assert len(records) == 1, "RGW sends one record per POST"
    record: dict[str, Any] = records[0]
    return record


def subscribe(
    rgw: RgwGateway,
    bucket: str,
    topic: str,
    endpoint: str,
    events: tuple[str, ...],
    persistent: bool = False,
    **filters: Any,
) -> None:
    setup(
        rgw.s3_client(),
        rgw.sns_client(),
        bucket,
        TopicSpec(name=topic, endpoint=endpoint, persistent=persistent, opaque_data="from-test"),
        NotificationSpec(id=f"{topic}-id", topic=topic, events=events, **filters),
    )


def test_object_created_is_pushed_synchronously(
    rgw: RgwGateway, bucket: str, recorder: Recorder
) -> None:
    topic = rgw.unique_name("created")
    subscribe(rgw, bucket, topic, recorder.url("/rgw/events"), ("s3:ObjectCreated:*",))

    rgw.s3_client().put_object(
        Bucket=bucket, Key="dir/hello world.txt", Body=b"hello", Metadata={"foo": "bar"}
    )

    [request] = recorder.wait_for(1)
    assert request.method == "POST"
    assert request.path == "/rgw/events"
    assert request.header("Content-Type") == "application/json"
    record = record_of(request)
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["eventSource"] == "ceph:s3"
    assert record["opaqueData"] == "from-test"
    assert record["s3"]["configurationId"] == f"{topic}-id"
    assert record["s3"]["bucket"]["name"] == bucket
    obj = record["s3"]["object"]
    assert obj["key"] == "dir/hello world.txt"  # RGW does not URL-encode the key
    assert obj["size"] == 5
    assert {"key": "x-amz-meta-foo", "val": "bar"} in obj["metadata"]


def test_multipart_upload_reports_complete_multipart(
    rgw: RgwGateway, bucket: str, recorder: Recorder
) -> None:
    topic = rgw.unique_name("multipart")
    subscribe(rgw, bucket, topic, recorder.url("/mp"), ("s3:ObjectCreated:*",))

    size = 12 * 1024 * 1024
    rgw.s3_client().upload_fileobj(io.BytesIO(os.urandom(size)), bucket, "big.bin")

    [request] = recorder.wait_for(1)
    record = record_of(request)
    assert record["eventName"] == "ObjectCreated:CompleteMultipartUpload"
    assert record["s3"]["object"]["size"] == size
    assert record["s3"]["object"]["eTag"].endswith("-2")


def test_object_removed_only(rgw: RgwGateway, bucket: str, recorder: Recorder) -> None:
    topic = rgw.unique_name("removed")
    subscribe(rgw, bucket, topic, recorder.url("/removed"), ("s3:ObjectRemoved:*",))
    s3 = rgw.s3_client()

    s3.put_object(Bucket=bucket, Key="short-lived", Body=b"x")
    s3.delete_object(Bucket=bucket, Key="short-lived")

    [request] = recorder.wait_for(1)
    # Pushes are synchronous, so the PUT's event (if any) would have come first.
    assert recorder.requests() == [request]
    record = record_of(request)
    assert record["eventName"] == "ObjectRemoved:Delete"
    assert record["s3"]["object"]["key"] == "short-lived"


def test_delete_objects_with_removed_notification_keeps_gateway_up(
    rgw: RgwGateway, bucket: str, recorder: Recorder
) -> None:
    # With the beast frontend this request aborts radosgw 16.2; rgw-up.sh uses civetweb.
    topic = rgw.unique_name("multidelete")
    subscribe(rgw, bucket, topic, recorder.url("/md"), ("s3:ObjectRemoved:*",))
    s3 = rgw.s3_client()
    keys = [f"batch/{i}" for i in range(3)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")

    answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})

    assert sorted(d["Key"] for d in answer["Deleted"]) == keys
    received = recorder.wait_for(3)
    assert sorted(record_of(r)["s3"]["object"]["key"] for r in received) == keys
    assert {record_of(r)["eventName"] for r in received} == {"ObjectRemoved:Delete"}
    assert rgw.answers(), f"radosgw stopped answering:\n{rgw.log_tails()}"


@pytest.mark.parametrize(
    ("suffixes", "inside", "outside"),
    [
        ((".jpg",), ["images/a.jpg"], ["images/a.jpeg", "other/b.jpg", "images/c.txt"]),
        (
            (".jpg", ".tar.gz"),
            ["images/a.jpg", "images/b.tar.gz"],
            # "xtarxgz" would match an unescaped regex (. = any character)
            ["images/c.jpeg", "images/d-xtarxgz", "other/e.jpg"],
        ),
    ],
)
def test_prefix_and_suffix_filters(
    rgw: RgwGateway,
    bucket: str,
    recorder: Recorder,
    suffixes: tuple[str, ...],
    inside: list[str],
    outside: list[str],
) -> None:
    topic = rgw.unique_name("filtered")
    subscribe(
        rgw,
        bucket,
        topic,
        recorder.url("/filtered"),
        ("s3:ObjectCreated:*",),
        prefix="images/",
        suffixes=suffixes,
    )
    s3 = rgw.s3_client()
    for key in [*outside, *inside]:  # outside first: once the last inside key arrived, any
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")  # outside event would have, too

    recorder.wait_for(1, where=body_contains(inside[-1]))
    received = sorted(record_of(r)["s3"]["object"]["key"] for r in recorder.requests())
    assert received == sorted(inside)


def test_persistent_topic_delivers_created_and_removed(
    rgw: RgwGateway, bucket: str, recorder: Recorder
) -> None:
    topic = rgw.claim_persistent_topic()
    subscribe(
        rgw,
        bucket,
        topic,
        recorder.url("/persistent"),
        ("s3:ObjectCreated:*", "s3:ObjectRemoved:*"),
        persistent=True,
    )
    s3 = rgw.s3_client()
    s3.put_object(Bucket=bucket, Key="kept", Body=b"1")
    s3.put_object(Bucket=bucket, Key="gone", Body=b"2")
    s3.delete_object(Bucket=bucket, Key="gone")

    received = recorder.wait_for(3, timeout=PERSISTENT_TIMEOUT)
    events = sorted(
        (record_of(r)["eventName"], record_of(r)["s3"]["object"]["key"]) for r in received
    )
    # Persistent delivery does not keep order, so compare as a set.
    assert events == [
        ("ObjectCreated:Put", "gone"),
        ("ObjectCreated:Put", "kept"),
        ("ObjectRemoved:Delete", "gone"),
    ]


def test_persistent_topic_retries_until_the_endpoint_accepts(
    rgw: RgwGateway, bucket: str, recorder: Recorder
) -> None:
    topic = rgw.claim_persistent_topic()
    subscribe(rgw, bucket, topic, recorder.url("/flaky"), ("s3:ObjectCreated:*",), persistent=True)
    recorder.set_status(503)
    rgw.s3_client().put_object(Bucket=bucket, Key="retried", Body=b"x")

    recorder.wait_for(1, where=lambda r: r.status == 503, timeout=PERSISTENT_TIMEOUT)
    recorder.set_status(200)
    [accepted] = recorder.wait_for(1, where=lambda r: r.status == 200, timeout=PERSISTENT_TIMEOUT)
    assert record_of(accepted)["s3"]["object"]["key"] == "retried"


def test_non_persistent_event_is_dropped_when_the_endpoint_fails(
    rgw: RgwGateway, bucket: str, recorder: Recorder
) -> None:
    topic = rgw.unique_name("lossy")
    subscribe(rgw, bucket, topic, recorder.url("/lossy"), ("s3:ObjectCreated:*",))
    recorder.set_status(500)
    s3 = rgw.s3_client()

    s3.put_object(Bucket=bucket, Key="dropped", Body=b"x")  # the S3 request still succeeds
    recorder.set_status(200)
    s3.put_object(Bucket=bucket, Key="control", Body=b"x")

    recorder.wait_for(1, where=body_contains('"control"'))
    keys = [record_of(r)["s3"]["object"]["key"] for r in recorder.requests()]
    assert keys == ["dropped", "control"], "the failed push must not be retried"
    assert [c["Id"] for c in list_notifications(s3, bucket)] == [f"{topic}-id"]


def test_a_second_exchange_on_one_broker_url_is_refused(rgw: RgwGateway) -> None:
    # RGW 16.2 would silently never deliver the second topic ("exchange mismatch").
    from source.notification_specs import SpecError
    from source.notifications import delete_topic, ensure_topic

    sns = rgw.sns_client()
    broker = f"amqp://127.0.0.1:{os.getpid() % 50000 + 10000}"  # nothing needs to listen
    first, second = f"ex-first-{os.getpid()}", f"ex-second-{os.getpid()}"
    try:
        ensure_topic(sns, TopicSpec(first, broker, amqp_exchange="one"))
        ensure_topic(sns, TopicSpec(first, broker, amqp_exchange="two"))  # the same topic may move
        with pytest.raises(SpecError, match=f"topic '{first}' already publishes to exchange 'two'"):
            ensure_topic(sns, TopicSpec(second, broker, amqp_exchange="one"))
        ensure_topic(sns, TopicSpec(second, broker, amqp_exchange="two"))
    finally:
        delete_topic(sns, first)
        delete_topic(sns, second)


def test_notification_counters_count_pushes(
    rgw: RgwGateway, bucket: str, recorder: Recorder
) -> None:
    """The counters read from radosgw's admin socket (what names a hung queue) move."""
    before = notification_counters(rgw.data_dir)
    assert before["pubsub_push_pending"] >= 0
    topic = rgw.unique_name("counted")
    subscribe(rgw, bucket, topic, recorder.url("/"), ("s3:ObjectCreated:*",))
    rgw.s3_client().put_object(Bucket=bucket, Key="counted.txt", Body=b"x")
    recorder.wait_for(1)
    after = notification_counters(rgw.data_dir)
    assert after["pubsub_push_ok"] == before["pubsub_push_ok"] + 1
