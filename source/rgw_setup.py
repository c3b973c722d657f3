"""Set-up on start: the RGW topic and the bucket notification that point at this source.

Idempotent (source.notifications upserts both), so every replica may run it on every start.
HTTP-way topics are always persistent: RGW queues events in RADOS and retries them until the
source takes them, so nothing is lost while the source is down. AMQP-way topics are persistent
only on request (SETUP_AMQP_PERSISTENT): the broker's durable queue already holds events while the
source is down, and radosgw 16.2.15 was seen to segfault with persistent AMQP topics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from common.s3 import S3Settings, make_s3_client, make_sns_client
from source.notification_specs import NotificationSpec, TopicSpec
from source.notifications import setup

log = logging.getLogger("source.rgw_setup")


@dataclass(frozen=True)
class SetupRequest:
    bucket: str
    topic: str
    endpoint: str
    events: tuple[str, ...] = ("s3:ObjectCreated:*",)
    prefix: str | None = None
    suffixes: tuple[str, ...] = ()
    notification_id: str | None = None
    amqp_exchange: str | None = None
    persistent: bool = True
    # The endpoint's last path segment is the push secret (source.push_auth): never log it.
    secret_in_path: bool = False

    def topic_spec(self) -> TopicSpec:
        amqp = self.amqp_exchange is not None
        return TopicSpec(
            name=self.topic,
            endpoint=self.endpoint,
            persistent=self.persistent,
            amqp_exchange=self.amqp_exchange,
            amqp_ack_level="broker" if amqp else None,
            secret_in_path=self.secret_in_path,
        )

    def notification_spec(self) -> NotificationSpec:
        return NotificationSpec(
            id=self.notification_id or self.topic,
            topic=self.topic,
            events=self.events,
            prefix=self.prefix,
            suffixes=self.suffixes,
        )


def run_setup(request: SetupRequest, s3_settings: S3Settings) -> None:
    # Build both specs first: a bad event name or filter stops us before touching RGW.
    topic, notification = request.topic_spec(), request.notification_spec()
    result = setup(
        make_s3_client(s3_settings),
        make_sns_client(s3_settings),
        request.bucket,
        topic,
        notification,
    )
    log.info(
        "bucket notification in place",
        extra={
            "bucket": request.bucket,
            "topic_arn": result.topic_arn,
            "endpoint": topic.shown_endpoint,
            "events": list(request.events),
            "changed": result.notification_changed,
        },
    )
