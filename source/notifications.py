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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from botocore.exceptions import ClientError

from source.notification_specs import (
    NotificationSpec,
    SpecError,
    TopicSpec,
    topic_arn,
    topic_name_of,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import (
        TopicConfigurationOutputTypeDef,
    )
    from mypy_boto3_sns import SNSClient

# RGW deletes one entry per call; more than this many for one Id means something else is wrong.
_MAX_DELETES_PER_ID = 20


class NotificationError(RuntimeError):
    """RGW refused a topic or notification request; the message says what to check."""


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
        raise _rgw_error(f"creating topic {spec.name!r} -> {spec.shown_endpoint}", exc) from exc
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
                f"{exchange!r} at {spec.shown_endpoint}; RGW uses one exchange per "
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
