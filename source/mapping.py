"""RGW notification records -> CloudEvents 1.0, per the CloudEvents AWS S3 adapter. Pure.

One record becomes one CloudEvent:

    type             com.amazonaws.s3.<eventName>       (e.g. com.amazonaws.s3.ObjectCreated:Put)
    source           <eventSource>.<awsRegion>.<bucket>  (e.g. ceph:s3.default.photos; RGW's
                     default zonegroup leaves awsRegion empty, then the configured region is used)
    subject          the object key, decoded (RGW sends it as is; AWS/MinIO URL-encode it)
    time             eventTime
    data             the record itself, JSON (application/json)
    id               see `event_id`

The adapter spec's id (x-amz-request-id + "." + x-amz-id-2) names the *request*, and one
DeleteObjects request yields a record per key with the same request id (and RGW may repeat
eventIds/eTags), so a consumer de-duplicating on it would drop real events. `event_id` therefore
hashes the fields that identify one object event. Every one of them is stored with the event in
RGW's queue (or the AMQP message), so a redelivery carries the same values and gets the same id.

Lineage (`lineage`), as extension attributes: `traceparent` (W3C trace context, the CloudEvents
distributed-tracing extension), `xamzrequestid` (RGW's x-amz-request-id of the PUT) and
`sourcereceived` (when the source got the notification, RFC 3339).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.v1.event import CloudEvent

from common.errors import UnsupportedPayload
from common.events import ObjectEvent, parse_object_events
from common.tracing import TraceParent

TYPE_PREFIX = "com.amazonaws.s3."
DATA_CONTENT_TYPE = "application/json"
# The record fields the id is derived from, in this order (dotted paths into the record).
ID_FIELDS = (
    "s3.bucket.name",
    "s3.object.key",
    "s3.object.versionId",
    "s3.object.sequencer",
    "eventName",
    "eventTime",
    "eventId",
    "responseElements.x-amz-request-id",
    "s3.configurationId",
)


def records_of(payload: Any) -> list[Mapping[str, Any]]:
    """The records of a push body: `{"Records": [...]}` (RGW, AWS) or one bare record."""
    if isinstance(payload, Mapping):
        if "Records" in payload:
            records = payload["Records"]
            if not isinstance(records, list) or not records:
                raise UnsupportedPayload("'Records' must be a non-empty list")
            if not all(isinstance(record, Mapping) for record in records):
                raise UnsupportedPayload("every record must be a JSON object")
            return list(records)
        if "s3" in payload and "eventName" in payload:
            return [payload]
    raise UnsupportedPayload("body is not an S3 notification: expected {'Records': [...]}")


def parse_body(body: bytes) -> list[Mapping[str, Any]]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise UnsupportedPayload("body is not valid JSON") from None
    return records_of(payload)


def _lookup(record: Mapping[str, Any], path: str) -> str:
    current: Any = record
    for part in path.split("."):
        if not isinstance(current, Mapping):
            return ""
        current = current.get(part)
    return "" if current is None else str(current)


def event_id(record: Mapping[str, Any]) -> str:
    """A stable id per object event: SHA-256 over ID_FIELDS, 32 hex digits.

    Fields are joined with NUL (which no S3 key, name or id contains), so ("a", "bc") and
    ("ab", "c") cannot collide; a missing field counts as empty.
    """
    canonical = "\0".join(_lookup(record, path) for path in ID_FIELDS)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def event_source(record: Mapping[str, Any], default_region: str) -> str:
    origin = _lookup(record, "eventSource") or "ceph:s3"
    region = _lookup(record, "awsRegion") or default_region
    return f"{origin}.{region}.{_lookup(record, 's3.bucket.name')}"


def request_id(record: Mapping[str, Any]) -> str:
    """RGW's x-amz-request-id of the request that made the record ("" if it names none)."""
    return _lookup(record, "responseElements.x-amz-request-id")


def lineage(
    trace: TraceParent, received_at: datetime, request: str | None = None
) -> dict[str, str]:
    """The extension attributes that tie an event to its PUT and its trace."""
    extensions = {
        "traceparent": trace.header(),
        "sourcereceived": received_at.astimezone(UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
    }
    if request:
        extensions["xamzrequestid"] = request
    return extensions


def to_cloudevent(
    record: Mapping[str, Any],
    default_region: str = "default",
    overrides: Mapping[str, str] | None = None,
    extensions: Mapping[str, str] | None = None,
) -> CloudEvent:
    """The CloudEvent for one record; `UnsupportedPayload` if it is no valid object record."""
    obj: ObjectEvent = parse_object_events(dict(record), "-", max_records=1)[0]
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id(record),
        "type": TYPE_PREFIX + obj.event_name,
        "source": event_source(record, default_region),
        "subject": obj.key,
        "datacontenttype": DATA_CONTENT_TYPE,
    }
    if obj.event_time is not None:
        time = obj.event_time
        attributes["time"] = time if time.tzinfo else time.replace(tzinfo=UTC)
    attributes.update(extensions or {})
    attributes.update(overrides or {})
    return CloudEvent(attributes, dict(record))


def with_overrides(
    event: BaseCloudEvent,
    overrides: Mapping[str, str] | None,
    extensions: Mapping[str, str] | None = None,
) -> BaseCloudEvent:
    """The same event with the extensions an event lacks, then the overrides, set (for events
    RGW made itself: its own `traceparent` wins over a new one)."""
    attributes = event.get_attributes()
    missing = {k: v for k, v in (extensions or {}).items() if k not in attributes}
    if not overrides and not missing:
        return event
    return CloudEvent({**attributes, **missing, **(overrides or {})}, event.get_data())
