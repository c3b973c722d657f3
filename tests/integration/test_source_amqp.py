"""The AMQP way against real RGW and RabbitMQ: exchange -> durable queue -> source -> sink."""

from __future__ import annotations

from pathlib import Path

import httpx
import pika
import pytest

from testkit.sink import Recorder, start_recorder
from tests.fixtures.rabbitmq import RabbitMQBroker
from tests.fixtures.rgw import RgwGateway
from tests.fixtures.source import amqp_way, running_source, wait_for_subjects

pytestmark = [pytest.mark.rgw, pytest.mark.rabbitmq]

KEYS = ["plain.jpg", "with space.jpg", "plus+sign.jpg", "ünï/猫 photo.png", "d1/d2/d3/d4/k+1.jpg"]


def test_uploads_arrive_as_cloudevents(
    rgw: RgwGateway,
    source_bucket: str,
    log_dir: Path,
    rabbitmq: RabbitMQBroker,
    source_amqp_topic: str,
) -> None:
    bucket = source_bucket
    s3 = rgw.s3_client()
    queue = rgw.unique_name("source-queue")
    way = amqp_way(rabbitmq.url, queue, bucket, source_amqp_topic)
    with (
        start_recorder(log_dir, "sink") as sink,
        running_source(log_dir, way.name, sink.url("/"), rgw.env(), way.args) as source,
    ):
        for key in KEYS:
            s3.put_object(Bucket=bucket, Key=key, Body=b"x")
        events = wait_for_subjects(sink, set(KEYS), bucket=bucket)
        metrics = httpx.get(source.url("/metrics")).text
    assert "source_events_delivered_total" in metrics
    assert len({event.id for event in events}) == len(KEYS)
    for event in events:
        assert event.attributes["type"] == "com.amazonaws.s3.ObjectCreated:Put"
        assert event.attributes["source"] == f"ceph:s3.default.{bucket}"
        assert event.data["s3"]["object"]["key"] == event.subject
    # Everything was acked: the durable queue is empty.
    with rabbitmq.connection() as connection:
        declared = connection.channel().queue_declare(queue, durable=True, passive=True)
        assert declared.method.message_count == 0


def test_messages_wait_in_the_queue_for_the_source(
    rgw: RgwGateway, log_dir: Path, rabbitmq: RabbitMQBroker, recorder: Recorder
) -> None:
    """Published while no source runs (queue declared, binding in place): delivered on start."""
    queue = rgw.unique_name("source-queue")
    topic = rgw.unique_name("routing")
    rabbitmq.declare_exchange("rgw")
    with rabbitmq.connection() as connection:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True)
        channel.queue_bind(queue, "rgw", routing_key=topic)
        body = (
            '{"Records":[{"eventVersion":"2.2","eventSource":"ceph:s3","awsRegion":"",'
            '"eventTime":"2026-11-28T21:38:19.047572Z","eventName":"ObjectCreated:Put",'
            '"s3":{"bucket":{"name":"bkt"},"object":{"key":"queued key.jpg"}}}]}'
        )
        channel.basic_publish("rgw", topic, body.encode(), pika.BasicProperties(delivery_mode=2))
    args = ["--url", rabbitmq.url, "--queue", queue, "--exchange", "rgw", "--topic", topic]
    with running_source(log_dir, "amqp", recorder.url("/"), {}, args):
        [event] = wait_for_subjects(recorder, {"queued key.jpg"}, timeout=30)
    assert event.attributes["source"] == "ceph:s3.default.bkt"
