"""One object-event model, normalized from every notification payload the functions see.

Payloads, each as CloudEvent `data`:
- S3 notification records: `{"Records": [...]}` (one event may carry several) or one bare record
  (what the source sends, one record per CloudEvent, per the CloudEvents AWS S3 adapter spec).
  RGW (`eventSource: "ceph:s3"`) sends keys as they are; AWS and MinIO URL-encode them with `+`
  for space, so those are decoded.
- The legacy RGW PubSub `RGWEvent` (`{"id", "event", "timestamp", "info": {...}}`), alone or as
  the pull API's `{"events": [...]}` envelope.

Anything else raises `UnsupportedPayload`; the runtime answers 422. Nothing here trusts the
payload: every field is type-checked, and the bucket name and key are validated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from common.errors import TooLarge, UnsupportedPayload

# S3 allows keys of up to 1024 bytes of UTF-8.
MAX_KEY_BYTES = 1024
# Strict S3 names are 3-63 chars of [a-z0-9.-]; RGW also accepts upper case and '_' in relaxed
# mode, and tenants as "tenant:bucket". Anything with '/', whitespace or a scheme is refused.
_BUCKET_RE = re.compile(r"^(?:[A-Za-z0-9_-]{1,64}:)?[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")
# Services that URL-encode object keys in notification records (space as '+').
_URL_ENCODING_SOURCES = frozenset({"aws:s3", "minio:s3"})
_LEGACY_EVENT_NAMES = {
    "OBJECT_CREATE": "ObjectCreated:*",
    "OBJECT_DELETE": "ObjectRemoved:Delete",
    "DELETE_MARKER_CREATE": "ObjectRemoved:DeleteMarkerCreated",
}


@dataclass(frozen=True)
class ObjectEvent:
    """What happened to which object: the one thing every function works from."""

    bucket: str
    key: str
    event_name: str
    event_id: str
    version_id: str | None = None
    size: int | None = None
    etag: str | None = None
    event_time: datetime | None = None
    # RGW's (and S3's) `sequencer`: hex, ordering two events of one key (a later write has a
    # greater value). Logged with stale events; not part of what the event *is* (equality).
    sequencer: str | None = field(default=None, compare=False)

    @property
    def created(self) -> bool:
        return self.event_name.startswith("ObjectCreated")

    @property
    def removed(self) -> bool:
        return self.event_name.startswith("ObjectRemoved")


def parse_object_events(data: Any, event_id: str, max_records: int = 100) -> list[ObjectEvent]:
    """Normalize CloudEvent `data` into ObjectEvents.

    `event_id` is the CloudEvent id; when one event carries several records, each gets
    `<id>/<index>` so every object event has its own stable id.
    """
    payload = _as_json(data)
    if not isinstance(payload, Mapping):
        raise UnsupportedPayload(
            f"event data must be a JSON object with 'Records' or an RGWEvent, got {_kind(payload)}"
        )
    parse: Callable[[Any, str, int], ObjectEvent]
    if "Records" in payload:
        items, parse = _list(payload, "Records"), _from_s3_record
    elif "events" in payload:
        items, parse = _list(payload, "events"), _from_rgw_event
    elif "s3" in payload and "eventName" in payload:
        items, parse = [payload], _from_s3_record
    elif "info" in payload and "event" in payload:
        items, parse = [payload], _from_rgw_event
    else:
        keys = ", ".join(sorted(str(k) for k in payload)[:8]) or "none"
        raise UnsupportedPayload(
            "event data is not an S3/RGW object notification: expected 'Records', a single "
            f"S3 record or an RGWEvent; top-level keys: {keys}"
        )
    if not items:
        raise UnsupportedPayload("event carries no records")
    if len(items) > max_records:
        raise TooLarge(f"event carries {len(items)} records; the limit is {max_records}")
    if len(items) == 1:
        return [parse(items[0], event_id, 0)]
    return [parse(item, f"{event_id}/{index}", index) for index, item in enumerate(items)]


def _as_json(data: Any) -> Any:
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise UnsupportedPayload("event data is not UTF-8 text") from None
    if isinstance(data, str):
        try:
            return json.loads(data)
        except ValueError:
            raise UnsupportedPayload("event data is not valid JSON") from None
    if data is None:
        raise UnsupportedPayload("event has no data")
    return data


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _list(payload: Mapping[str, Any], name: str) -> list[Any]:
    value = payload[name]
    if not isinstance(value, list):
        raise UnsupportedPayload(f"'{name}' must be a list, got {_kind(value)}")
    return value


def _field(obj: Any, path: str, kind: type | tuple[type, ...], required: bool = True) -> Any:
    """obj['a']['b'] for path 'a.b', type-checked; error messages name the path."""
    current = obj
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            if required:
                raise UnsupportedPayload(f"record has no '{path}'")
            return None
        current = current[part]
    if current is None and not required:
        return None
    if not isinstance(current, kind) or (isinstance(current, bool) and kind is not bool):
        raise UnsupportedPayload(f"record field '{path}' has the wrong type ({_kind(current)})")
    return current


def _from_s3_record(record: Any, event_id: str, index: int) -> ObjectEvent:
    if not isinstance(record, Mapping):
        raise UnsupportedPayload(f"record {index} is not a JSON object")
    event_name = _event_name(_field(record, "eventName", str))
    source = _field(record, "eventSource", str, required=False) or ""
    raw_key = _field(record, "s3.object.key", str)
    key = unquote_plus(raw_key) if source in _URL_ENCODING_SOURCES else raw_key
    size = _field(record, "s3.object.size", int, required=False)
    etag = _field(record, "s3.object.eTag", str, required=False)
    return ObjectEvent(
        bucket=_bucket(_field(record, "s3.bucket.name", str)),
        key=_key(key),
        event_name=event_name,
        event_id=event_id,
        version_id=_field(record, "s3.object.versionId", str, required=False) or None,
        size=size if size is None or size >= 0 else None,
        etag=etag.strip('"') if etag else None,
        event_time=_time(_field(record, "eventTime", str, required=False)),
        sequencer=_field(record, "s3.object.sequencer", str, required=False) or None,
    )


def _from_rgw_event(event: Any, event_id: str, index: int) -> ObjectEvent:
    if not isinstance(event, Mapping):
        raise UnsupportedPayload(f"event {index} is not a JSON object")
    legacy_name = _field(event, "event", str)
    event_name = _LEGACY_EVENT_NAMES.get(legacy_name)
    if event_name is None:
        raise UnsupportedPayload(f"unknown RGWEvent type {legacy_name[:64]!r}")
    return ObjectEvent(
        bucket=_bucket(_field(event, "info.bucket.name", str)),
        key=_key(_field(event, "info.key.name", str)),
        event_name=event_name,
        event_id=event_id,
        version_id=_field(event, "info.key.instance", str, required=False) or None,
        event_time=_time(_field(event, "timestamp", str, required=False)),
    )


def _event_name(name: str) -> str:
    name = name.removeprefix("s3:")
    if not name.startswith(
        (
            "ObjectCreated",
            "ObjectRemoved",
            "ObjectRestore",
            "ObjectLifecycle",
            "ObjectTagging",
            "ObjectAcl",
            "ObjectSynced",
            "ObjectTransition",
            "ObjectExpiration",
            "ReducedRedundancyLostObject",
            "Replication",
        )
    ):
        raise UnsupportedPayload(f"unknown S3 event name {name[:64]!r}")
    return name


def _bucket(name: str) -> str:
    if not _BUCKET_RE.match(name):
        raise UnsupportedPayload(f"invalid bucket name {name[:80]!r}")
    return name


def _key(key: str) -> str:
    if not key:
        raise UnsupportedPayload("empty object key")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsupportedPayload("object key is not valid UTF-8") from None
    if len(encoded) > MAX_KEY_BYTES:
        raise UnsupportedPayload(f"object key is {len(encoded)} bytes; S3 allows {MAX_KEY_BYTES}")
    return key


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        pass
    # RGW 16.2 writes "0.000000" (seconds since the epoch, unset) into the record of a PUT that
    # failed after its notification was reserved. Refusing the record would make RGW's
    # persistent queue push it again forever; the time is informational, so it is dropped.
    try:
        seconds = float(value)
        if seconds != seconds:  # NaN
            raise ValueError(value)
        return datetime.fromtimestamp(seconds, UTC) if seconds > 0 else None
    except (ValueError, OverflowError, OSError):
        raise UnsupportedPayload(f"invalid event time {value[:40]!r}") from None
