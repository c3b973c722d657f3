"""CloudEvents over HTTP: parse a request into an event, encode a reply, with clear 400s.

This is the protocol binding only (CloudEvents SDK 2.x, `cloudevents.core.bindings.http`); the
event model lives in the SDK and the object model in `common.events`. Binary and structured
content modes are accepted; replies go out in binary mode.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from common.errors import InvalidCloudEvent

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
_JSON_CONTENT_TYPE = re.compile(r"^(application|text)/([a-zA-Z0-9.\-]+\+)?json\s*(;.*)?$", re.I)
_FORMAT = JSONFormat()
_REQUIRED = ("id", "source", "type", "specversion")

__all__ = [
    "BaseCloudEvent",
    "CloudEvent",
    "new_event",
    "parse_request",
    "to_binary_headers",
    "with_extensions",
]


def parse_request(headers: Mapping[str, str], body: bytes) -> BaseCloudEvent:
    """A CloudEvent from HTTP headers and body, or `InvalidCloudEvent` saying what is wrong."""
    lowered = {name.lower(): value for name, value in headers.items()}
    content_type = lowered.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    binary = any(name.startswith("ce-") for name in lowered)

    if not binary:
        if media_type == BATCH_CONTENT_TYPE:
            raise InvalidCloudEvent("batched CloudEvents are not supported; send one per request")
        if media_type != STRUCTURED_CONTENT_TYPE:
            raise InvalidCloudEvent(
                "not a CloudEvent: no ce-* headers (binary mode) and Content-Type is "
                f"{content_type or 'missing'!r}, not {STRUCTURED_CONTENT_TYPE!r} (structured mode)"
            )
        attributes = _structured_attributes(body)
        missing = [name for name in _REQUIRED if not attributes.get(name)]
    else:
        missing = [name for name in _REQUIRED if not lowered.get(f"ce-{name}")]
        if body and _JSON_CONTENT_TYPE.match(content_type or "application/json"):
            _require_json(body)
    if missing:
        raise InvalidCloudEvent(f"missing required CloudEvent attribute(s): {', '.join(missing)}")

    message = ce_http.HTTPMessage(headers=dict(lowered), body=body)
    try:
        if binary:
            return ce_http.from_binary(message, _FORMAT)
        return ce_http.from_structured(message, _FORMAT)
    except (BaseCloudEventException, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InvalidCloudEvent(f"invalid CloudEvent: {_short(exc)}") from None


def _structured_attributes(body: bytes) -> dict[str, Any]:
    parsed = _require_json(body)
    if not isinstance(parsed, dict):
        raise InvalidCloudEvent("structured CloudEvent body must be a JSON object")
    return parsed


def _require_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidCloudEvent("body is not valid UTF-8") from None
    except ValueError as exc:
        raise InvalidCloudEvent(f"body is not valid JSON: {_short(exc)}") from None


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "…"


def new_event(
    event_type: str,
    source: str,
    data: dict[str, Any],
    subject: str | None = None,
    extensions: Mapping[str, str] | None = None,
    event_id: str | None = None,
) -> CloudEvent:
    """A CloudEvents 1.0 event with JSON data, a fresh id and the current time."""
    attributes: dict[str, Any] = {
        "id": event_id or str(uuid.uuid4()),
        "source": source,
        "type": event_type,
        "specversion": "1.0",
        "time": datetime.now(UTC),
        "datacontenttype": "application/json",
    }
    if subject is not None:
        attributes["subject"] = subject
    attributes.update(extensions or {})
    return CloudEvent(attributes, data)


def with_extensions(event: BaseCloudEvent, extensions: Mapping[str, str]) -> BaseCloudEvent:
    """The same event with these extension attributes set (CloudEvents are immutable)."""
    if all(event.get_attributes().get(k) == v for k, v in extensions.items()):
        return event
    return CloudEvent({**event.get_attributes(), **extensions}, event.get_data())


def to_binary_headers(event: BaseCloudEvent) -> tuple[dict[str, str], bytes]:
    """Binary content mode: attributes as ce-* headers, data as the body."""
    message = ce_http.to_binary(event, _FORMAT)
    return message.headers, message.body


def to_structured(event: BaseCloudEvent) -> tuple[dict[str, str], bytes]:
    message = ce_http.to_structured(event, _FORMAT)
    return message.headers, message.body
