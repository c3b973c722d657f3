"""What a topic and a bucket notification are, checked before RGW sees them.

`TopicSpec` (where and how RGW pushes) and `NotificationSpec` (which events of which bucket go to
which topic) refuse, with a `SpecError`, what RGW 16.2 would refuse or silently mishandle; they
render the attributes and configurations `source.notifications` sends to RGW.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from source.push_auth import endpoint_for_logs

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import (
        TopicConfigurationTypeDef,
    )
REGION_FOR_ARNS = "default"

OBJECT_EVENTS = frozenset(
    {
        "s3:ObjectCreated:*",
        "s3:ObjectCreated:Put",
        "s3:ObjectCreated:Post",
        "s3:ObjectCreated:Copy",
        "s3:ObjectCreated:CompleteMultipartUpload",
        "s3:ObjectRemoved:*",
        "s3:ObjectRemoved:Delete",
        "s3:ObjectRemoved:DeleteMarkerCreated",
    }
)
AMQP_ACK_LEVELS = ("none", "broker", "routable")
PUSH_SCHEMES = ("http", "https", "amqp", "amqps")
# Topic names double as AMQP routing keys and ARN parts: keep them plain.
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_NOTIFICATION_ID = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")
_ECMASCRIPT_SPECIAL = set("\\^$.|?*+()[]{}/")
# How many duplicate entries of one Id to delete before giving up (RGW deletes one per call).


class SpecError(ValueError):
    """A topic or notification spec that RGW would refuse or silently mishandle."""


@dataclass(frozen=True)
class TopicSpec:
    """Where and how RGW pushes a topic's events.

    endpoint       http(s)://host[:port]/path, or amqp(s)://host[:port][/vhost]
    persistent     queue events inside RGW and retry until the endpoint takes them (delivered
                   asynchronously); otherwise pushed within the S3 request and dropped on failure
    opaque_data    copied verbatim into every record's `opaqueData`
    amqp_exchange  exchange to publish to (AMQP only; must exist, type topic; routing key = name)
    amqp_ack_level none | broker | routable (AMQP only; RGW's default is broker)
    cloudevents    ask RGW to push in CloudEvents HTTP binding (Ceph >= 18 "Reef" honours it;
                   16.2 stores the attribute but pushes plain S3 records)
    verify_ssl     check the TLS certificate of an https/amqps endpoint
    secret_in_path the endpoint's last path segment is the source's push secret
                   (source.push_auth): messages show *** in its place
    """

    name: str
    endpoint: str
    persistent: bool = False
    opaque_data: str = ""
    amqp_exchange: str | None = None
    amqp_ack_level: str | None = None
    cloudevents: bool = False
    verify_ssl: bool = True
    secret_in_path: bool = False

    def __post_init__(self) -> None:
        if not _TOPIC_NAME.match(self.name):
            raise SpecError(
                f"topic name {self.name!r}: use 1-256 letters, digits, '-' or '_' "
                "(it is also the AMQP routing key)"
            )
        parts = urlsplit(self.endpoint)
        if parts.scheme not in PUSH_SCHEMES or not parts.hostname:
            raise SpecError(
                f"endpoint {self.endpoint!r}: expected http(s)://host[:port]/path or "
                "amqp(s)://host[:port]"
            )
        if parts.password is not None and parts.scheme in ("http", "amqp"):
            raise SpecError(
                f"endpoint {self.shown_endpoint!r}: RGW 16.2 refuses credentials "
                f"in a {parts.scheme}:// push endpoint (it will not send a password over an "
                "unencrypted connection). Leave out user:password@ (AMQP then logs in as "
                f"guest, which RabbitMQ allows from localhost only) or use "
                f"{parts.scheme}s://."
            )
        if self.is_amqp:
            if not self.amqp_exchange:
                raise SpecError(f"topic {self.name!r}: an amqp endpoint needs amqp_exchange")
            if self.amqp_ack_level is not None and self.amqp_ack_level not in AMQP_ACK_LEVELS:
                raise SpecError(
                    f"amqp_ack_level {self.amqp_ack_level!r}: use one of {AMQP_ACK_LEVELS}"
                )
            if self.cloudevents:
                raise SpecError("cloudevents applies to http(s) endpoints only")
        elif self.amqp_exchange is not None or self.amqp_ack_level is not None:
            raise SpecError(
                f"topic {self.name!r}: amqp_exchange/amqp_ack_level need an amqp:// endpoint, "
                f"not {parts.scheme}://"
            )

    @property
    def shown_endpoint(self) -> str:
        """The endpoint as messages and logs may show it: no password, no push secret."""
        if self.secret_in_path:
            return endpoint_for_logs(self.endpoint)
        return without_password(self.endpoint)

    @property
    def is_amqp(self) -> bool:
        return urlsplit(self.endpoint).scheme in ("amqp", "amqps")

    @property
    def arn(self) -> str:
        """The ARN RGW gives this topic (create_topic's answer is authoritative)."""
        return topic_arn(self.name)

    def attributes(self) -> dict[str, str]:
        """The CreateTopic attributes. Every one is always sent, so an update resets old ones."""
        attributes = {
            "push-endpoint": self.endpoint,
            "persistent": _bool(self.persistent),
            "OpaqueData": self.opaque_data,
        }
        if self.is_amqp:
            attributes["amqp-exchange"] = self.amqp_exchange or ""
            attributes["amqp-ack-level"] = self.amqp_ack_level or "broker"
        else:
            attributes["cloudevents"] = _bool(self.cloudevents)
        if urlsplit(self.endpoint).scheme in ("https", "amqps"):
            attributes["verify-ssl"] = _bool(self.verify_ssl)
        return attributes


@dataclass(frozen=True)
class NotificationSpec:
    """Which events of a bucket go to which topic.

    id        the notification's Id on the bucket; `setup` replaces only this Id
    topic     topic name (not ARN)
    events    e.g. ("s3:ObjectCreated:*",); see OBJECT_EVENTS
    prefix    only keys starting with this
    suffixes  only keys ending with one of these (case-sensitive)
    """

    id: str
    topic: str
    events: tuple[str, ...] = ("s3:ObjectCreated:*",)
    prefix: str | None = None
    suffixes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not _NOTIFICATION_ID.match(self.id):
            raise SpecError(f"notification id {self.id!r}: use 1-255 letters, digits, '.-_'")
        if not _TOPIC_NAME.match(self.topic):
            raise SpecError(f"topic name {self.topic!r}: use 1-256 letters, digits, '-' or '_'")
        if not self.events:
            raise SpecError("a notification needs at least one event, e.g. s3:ObjectCreated:*")
        unknown = sorted(set(self.events) - OBJECT_EVENTS)
        if unknown:
            raise SpecError(f"unknown event(s) {unknown}; RGW 16.2 knows {sorted(OBJECT_EVENTS)}")
        if self.prefix == "":
            raise SpecError("prefix must not be empty (leave it out to match every key)")
        if any(not suffix for suffix in self.suffixes):
            raise SpecError("a suffix must not be empty (leave it out to match every key)")

    def filter_rules(self) -> list[dict[str, str]]:
        rules = []
        if self.prefix is not None:
            rules.append({"Name": "prefix", "Value": self.prefix})
        if len(self.suffixes) == 1:
            rules.append({"Name": "suffix", "Value": self.suffixes[0]})
        elif self.suffixes:
            rules.append({"Name": "regex", "Value": suffixes_regex(self.suffixes)})
        return rules

    def configuration(self, arn: str) -> TopicConfigurationTypeDef:
        """The bucket's TopicConfiguration entry for this spec, publishing to `arn`."""
        config: dict[str, Any] = {"Id": self.id, "TopicArn": arn, "Events": list(self.events)}
        rules = self.filter_rules()
        if rules:
            config["Filter"] = {"Key": {"FilterRules": rules}}
        return config  # type: ignore[return-value]


def topic_arn(name: str) -> str:
    return f"arn:aws:sns:{REGION_FOR_ARNS}::{name}"


def topic_name_of(arn: str) -> str:
    return arn.rsplit(":", 1)[-1]


def suffixes_regex(suffixes: Sequence[str]) -> str:
    """An ECMAScript regex matching whole keys that end with one of `suffixes`."""
    escaped = ("".join("\\" + c if c in _ECMASCRIPT_SPECIAL else c for c in s) for s in suffixes)
    return ".*(" + "|".join(escaped) + ")"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()
