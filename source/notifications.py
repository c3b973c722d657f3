"""RGW topics and bucket notifications through RGW's SNS-compatible API.

A *topic* says where RGW pushes events (an HTTP(S) URL or an AMQP broker) and how (persistent
queue or synchronous push); a bucket *notification* says which events of which bucket go to
which topic. `setup()` makes both exist exactly as specified, and running it twice leaves the
same state. The boto3 clients are passed in (`common.s3.make_s3_client` / `make_sns_client`).

What RGW 16.2 (Pacific) does, and why the code below looks the way it does:
- CreateTopic on an existing name replaces all its attributes, so it is an idempotent upsert.
- PutBucketNotificationConfiguration *adds* configurations keyed by (Id, topic) instead of
  replacing the bucket's set as AWS does, and an empty set is refused (MalformedXML). Putting the
  same Id with another topic leaves two entries. So a changed notification is first deleted
  with RGW's `DELETE /<bucket>?notification=<Id>` extension (one entry per call), then put.
- Credentials in a push endpoint over plain http:// or amqp:// are refused ("sending password
  over insecure transport"), and the error reaches boto3 without its message.
- Only one prefix and one suffix rule fit in an S3 filter; several suffixes become one `regex`
  rule (an RGW extension, matched against the whole key with std::regex_match).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import (
        TopicConfigurationOutputTypeDef,
        TopicConfigurationTypeDef,
    )
    from mypy_boto3_sns import SNSClient

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
_MAX_DELETES_PER_ID = 20


class SpecError(ValueError):
    """A topic or notification spec that RGW would refuse or silently mishandle."""


class NotificationError(RuntimeError):
    """RGW refused a topic or notification request; the message says what to check."""


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
    """

    name: str
    endpoint: str
    persistent: bool = False
    opaque_data: str = ""
    amqp_exchange: str | None = None
    amqp_ack_level: str | None = None
    cloudevents: bool = False
    verify_ssl: bool = True

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
                f"endpoint {_without_password(self.endpoint)!r}: RGW 16.2 refuses credentials "
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


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def _error_code(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return str(error.get("Code") or exc.response.get("Code") or "Unknown")


def _rgw_error(what: str, exc: ClientError) -> NotificationError:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
    return NotificationError(f"{what}: RGW answered {status} {_error_code(exc)}")


# --- topics ----------------------------------------------------------------------------------


def ensure_topic(sns: SNSClient, spec: TopicSpec) -> str:
    """Create the topic or reset all its attributes to `spec`; returns its ARN."""
    if spec.is_amqp:
        _check_one_exchange_per_broker(sns, spec)
    try:
        answer = sns.create_topic(Name=spec.name, Attributes=spec.attributes())
    except ClientError as exc:
        raise _rgw_error(
            f"creating topic {spec.name!r} -> {_without_password(spec.endpoint)}", exc
        ) from exc
    return answer["TopicArn"]


def _check_one_exchange_per_broker(sns: SNSClient, spec: TopicSpec) -> None:
    """RGW 16.2 keeps one AMQP connection per broker URL, bound to the exchange of the first
    topic that used it; a topic naming another exchange on the same URL is silently never
    delivered ("AMQP connect: exchange mismatch" in RGW's log, and a persistent topic retries
    it forever). Refuse that up front."""
    try:
        arns = {t["TopicArn"] for t in sns.list_topics().get("Topics", [])}
    except ClientError as exc:
        raise _rgw_error("listing topics", exc) from exc
    for arn in sorted(arns - {topic_arn(spec.name)}):
        attributes = get_topic(sns, arn) or {}
        try:
            endpoint = json.loads(attributes.get("EndPoint") or "{}")
        except ValueError:
            continue
        if endpoint.get("EndpointAddress") != spec.endpoint:
            continue
        args = parse_qs(str(endpoint.get("EndpointArgs", "")))
        exchange = args.get("amqp-exchange", [""])[-1]
        if exchange and exchange != spec.amqp_exchange:
            raise SpecError(
                f"topic {spec.name!r}: topic {topic_name_of(arn)!r} already publishes to exchange "
                f"{exchange!r} at {_without_password(spec.endpoint)}; RGW uses one exchange per "
                f"broker URL, so use exchange {exchange!r} here too (or another broker URL)"
            )


def get_topic(sns: SNSClient, arn: str) -> dict[str, str] | None:
    """The topic's attributes (RGW's shape: EndPoint is a JSON string), or None if missing."""
    try:
        return dict(sns.get_topic_attributes(TopicArn=arn)["Attributes"])
    except ClientError as exc:
        if _error_code(exc) in ("NoSuchEntity", "NotFound", "NoSuchKey"):
            return None
        raise _rgw_error(f"reading topic {arn}", exc) from exc


def delete_topic(sns: SNSClient, name: str) -> None:
    """Delete the topic (no error if it is already gone). Buckets still naming it keep a dead
    entry: remove their notifications first."""
    try:
        sns.delete_topic(TopicArn=topic_arn(name))
    except ClientError as exc:
        raise _rgw_error(f"deleting topic {name!r}", exc) from exc


# --- bucket notifications --------------------------------------------------------------------


def list_notifications(s3: S3Client, bucket: str) -> list[TopicConfigurationOutputTypeDef]:
    try:
        answer = s3.get_bucket_notification_configuration(Bucket=bucket)
    except ClientError as exc:
        if _error_code(exc) == "NoSuchBucket":
            raise NotificationError(f"bucket {bucket!r} does not exist") from exc
        raise _rgw_error(f"reading the notifications of bucket {bucket!r}", exc) from exc
    return list(answer.get("TopicConfigurations", []))


def _comparable(config: Mapping[str, Any]) -> tuple[Any, ...]:
    rules = config.get("Filter", {}).get("Key", {}).get("FilterRules", [])
    return (
        config["Id"],
        config["TopicArn"],
        tuple(sorted(config["Events"])),
        tuple(sorted((rule["Name"].lower(), rule["Value"]) for rule in rules)),
    )


def delete_notification(s3: S3Client, bucket: str, notification_id: str) -> int:
    """Delete every entry with this Id from the bucket; returns how many there were."""
    deleted = 0
    while any(c.get("Id") == notification_id for c in list_notifications(s3, bucket)):
        if deleted >= _MAX_DELETES_PER_ID:
            raise NotificationError(
                f"notification {notification_id!r} on bucket {bucket!r} survived {deleted} deletes"
            )
        _rgw_delete_notification(s3, bucket, notification_id)
        deleted += 1
    return deleted


def _rgw_delete_notification(s3: S3Client, bucket: str, notification_id: str) -> None:
    """`DELETE /<bucket>?notification=<id>`, RGW's extension (S3 has no such call).

    boto3 has no operation for it, so this borrows GetBucketNotificationConfiguration (same
    path, same query key) and turns it into the DELETE before the request is signed. The
    handler is registered on this client only for the duration of the call.
    """
    event = "before-sign.s3.GetBucketNotificationConfiguration"
    handler_id = f"rgw-delete-notification-{id(s3)}"

    def into_delete(request: Any, **_: Any) -> None:
        request.method = "DELETE"
        request.url = request.url.replace(
            "?notification", "?notification=" + quote(notification_id, safe=""), 1
        )

    s3.meta.events.register_first(event, into_delete, unique_id=handler_id)
    try:
        s3.get_bucket_notification_configuration(Bucket=bucket)
    except ClientError as exc:
        raise _rgw_error(f"deleting notification {notification_id!r} of {bucket!r}", exc) from exc
    finally:
        s3.meta.events.unregister(event, unique_id=handler_id)


def ensure_notification(s3: S3Client, bucket: str, spec: NotificationSpec, arn: str) -> bool:
    """Make the bucket's entry with `spec.id` exactly `spec` (others are kept); True if changed."""
    wanted = spec.configuration(arn)
    current = [c for c in list_notifications(s3, bucket) if c.get("Id") == spec.id]
    if len(current) == 1 and _comparable(current[0]) == _comparable(wanted):
        return False
    if current:
        delete_notification(s3, bucket, spec.id)
    try:
        s3.put_bucket_notification_configuration(
            Bucket=bucket, NotificationConfiguration={"TopicConfigurations": [wanted]}
        )
    except ClientError as exc:
        hint = ""
        if _error_code(exc) == "NoSuchKey":
            hint = f" (topic {topic_name_of(arn)!r} does not exist)"
        raise _rgw_error(f"setting notification {spec.id!r} on {bucket!r}{hint}", exc) from exc
    return True


# --- the three user-level operations -----------------------------------------------------------


@dataclass(frozen=True)
class SetupResult:
    topic_arn: str
    notification_changed: bool


def setup(
    s3: S3Client, sns: SNSClient, bucket: str, topic: TopicSpec, notification: NotificationSpec
) -> SetupResult:
    """Ensure the topic, then the bucket notification that publishes to it."""
    if notification.topic != topic.name:
        raise SpecError(
            f"notification {notification.id!r} names topic {notification.topic!r}, "
            f"not {topic.name!r}"
        )
    list_notifications(s3, bucket)  # fails early, with a clear message, if the bucket is missing
    arn = ensure_topic(sns, topic)
    changed = ensure_notification(s3, bucket, notification, arn)
    return SetupResult(topic_arn=arn, notification_changed=changed)


def show(s3: S3Client, sns: SNSClient, bucket: str) -> dict[str, Any]:
    """The bucket's notifications, each with the attributes of the topic it publishes to."""
    topics: dict[str, dict[str, str] | None] = {}
    entries = []
    for config in list_notifications(s3, bucket):
        arn = config["TopicArn"]
        if arn not in topics:
            topics[arn] = get_topic(sns, arn)
        entries.append({"notification": dict(config), "topic": topics[arn]})
    return {"bucket": bucket, "notifications": entries}


def remove(
    s3: S3Client,
    sns: SNSClient,
    bucket: str,
    topic: str | None = None,
    ids: Iterable[str] = (),
    delete_topic_too: bool = True,
) -> list[str]:
    """Remove notifications from the bucket: those with the given ids, or those publishing to
    `topic`, or (neither given) all. With `topic` and `delete_topic_too`, the topic is deleted
    too. Returns the removed Ids."""
    wanted_ids = set(ids)
    removed = []
    for config in list_notifications(s3, bucket):
        notification_id = config["Id"]
        if wanted_ids and notification_id not in wanted_ids:
            continue
        if topic is not None and topic_name_of(config["TopicArn"]) != topic:
            continue
        if notification_id not in removed and delete_notification(s3, bucket, notification_id):
            removed.append(notification_id)
    if topic is not None and delete_topic_too:
        delete_topic(sns, topic)
    return removed
