"""RGW pushes bucket notifications to a real RabbitMQ exchange."""

from __future__ import annotations

import json

import pytest

from source.notification_specs import NotificationSpec, TopicSpec
from source.notifications import setup
from tests.fixtures.rabbitmq import RabbitMQBroker
from tests.fixtures.rgw import RgwGateway

pytestmark = [pytest.mark.rgw, pytest.mark.rabbitmq]

# RGW 16.2 binds one exchange per broker URL (see source.notifications): every test uses "rgw".
EXCHANGE = "rgw"


# Persistent AMQP topics are not exercised: radosgw 16.2.15 was seen to segfault (msgr-worker)
# with them in full-suite runs (docs/rgw.md); the source uses direct AMQP topics by default.
@pytest.mark.parametrize("persistent", [False], ids=["direct"])
def test_events_reach_a_queue_bound_with_the_topic_name(
    rgw: RgwGateway, rabbitmq: RabbitMQBroker, bucket: str, persistent: bool
) -> None:
    rabbitmq.declare_exchange(EXCHANGE)
    topic = rgw.claim_persistent_topic() if persistent else rgw.unique_name("amqp")
    spec = TopicSpec(
        topic, rabbitmq.url, persistent=persistent, amqp_exchange=EXCHANGE, opaque_data="amqp"
    )
    setup(
        rgw.s3_client(),
        rgw.sns_client(),
        bucket,
        spec,
        NotificationSpec(topic, topic, events=("s3:ObjectCreated:*", "s3:ObjectRemoved:*")),
    )
    s3 = rgw.s3_client()

    with rabbitmq.bound_queue(EXCHANGE, routing_key=topic) as queue:
        s3.put_object(Bucket=bucket, Key="photos/cat.jpg", Body=b"meow")
        s3.delete_object(Bucket=bucket, Key="photos/cat.jpg")
        bodies = queue.wait_for(2, timeout=45.0 if persistent else 15.0)

    records = [json.loads(body)["Records"][0] for body in bodies]
    assert sorted(r["eventName"] for r in records) == ["ObjectCreated:Put", "ObjectRemoved:Delete"]
    assert {r["s3"]["object"]["key"] for r in records} == {"photos/cat.jpg"}
    assert {r["s3"]["bucket"]["name"] for r in records} == {bucket}
    assert {r["opaqueData"] for r in records} == {"amqp"}


def test_other_routing_keys_do_not_receive_the_topic(
    rgw: RgwGateway, rabbitmq: RabbitMQBroker, bucket: str
) -> None:
    rabbitmq.declare_exchange(EXCHANGE)
    topic, bystander = rgw.unique_name("routed"), rgw.unique_name("bystander")
    setup(
        rgw.s3_client(),
        rgw.sns_client(),
        bucket,
        TopicSpec(topic, rabbitmq.url, amqp_exchange=EXCHANGE),
        NotificationSpec(topic, topic),
    )
    with (
        rabbitmq.bound_queue(EXCHANGE, routing_key=topic) as mine,
        rabbitmq.bound_queue(EXCHANGE, routing_key=bystander) as other,
    ):
        rgw.s3_client().put_object(Bucket=bucket, Key="k", Body=b"x")
        mine.wait_for(1)  # positive control first: delivery is synchronous, so it is settled
        assert other.channel.basic_get(other.name, auto_ack=True)[2] is None
