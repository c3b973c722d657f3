"""From a CloudEvent to the records the service keeps, or a `Refused` saying why not.

A result event (`dev.rgwinference.<kind>.result`, kind classification, compliance or
evaluation) carries one result as its data, or `{"results": [...]}`. Each result names its object
(`bucket`, `key`, and `version_id` and/or `etag` when known) and may carry `model`, `labels`
(`[{name, score, class_id}]`, best first), `latency_ms`, `flagged`, `verdict`, `score` and the
stage times. Fields this module does not know are kept as JSON, so results that grow new fields
lose nothing. A dead letter is the event that failed, with Knative's `knativeerror*` extensions;
its object comes from its S3 records (or from the result it carried).

Every field is checked before anything is kept: one bad result refuses the whole event.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from common.cloudevents_http import BaseCloudEvent
from common.errors import EventError
from common.events import parse_object_events

RESULT_PREFIX = "dev.rgwinference."
RESULT_KINDS = ("classification", "compliance", "evaluation")
RESULT_TYPES = frozenset(f"{RESULT_PREFIX}{kind}.result" for kind in RESULT_KINDS)
DEAD_LETTER = "dead-letter"
MAX_RESULTS_PER_EVENT = 100
MAX_LABELS = 100
MAX_KEY = 1024
MAX_TEXT = 400
# The stage times a result may carry (when each hop happened), under any of these names.
STAGE_FIELDS = ("stages", "timestamps", "stage_times")
KNOWN_FIELDS = frozenset(
    {
        "bucket", "key", "version_id", "etag", "model", "labels", "latency_ms",
        "flagged", "verdict", "score", "timings", "function", *STAGE_FIELDS,
    }
)  # fmt: skip


class Refused(ValueError):
    """The event is not one this service keeps; the message says why (answered 4xx)."""


@dataclass
class Record:
    """One result (or one dead letter) for one object version."""

    kind: str
    event_id: str
    event_source: str
    event_type: str
    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    function: str | None = None
    model: str | None = None
    labels: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: float | None = None
    flagged: bool | None = None
    verdict: str | None = None
    score: float | None = None
    timings: dict[str, float] = field(default_factory=dict)  # stage -> ms
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    received_at: float = field(default_factory=time.time)
    index: int = 0  # position in its event, for the identity of multi-result events

    @property
    def version(self) -> str:
        """What tells two versions of one key apart: the version id, else the ETag."""
        return self.version_id or self.etag or ""

    @property
    def dedup(self) -> str:
        """Same event delivered twice -> same value (a dead letter per failed destination)."""
        dest = self.extra.get("knativeerrordest", "") if self.kind == DEAD_LETTER else ""
        raw = "\0".join((self.kind, self.event_source, self.event_id, str(self.index), dest))
        return hashlib.sha256(raw.encode()).hexdigest()


def result_records(event: BaseCloudEvent) -> list[Record]:
    event_type = event.get_type()
    if event_type not in RESULT_TYPES:
        known = ", ".join(sorted(RESULT_TYPES))
        raise Refused(f"unknown event type {event_type!r}; this service keeps {known}")
    data = _data_object(event)
    items = data.get("results") if set(data) == {"results"} else [data]
    if not isinstance(items, list) or not items:
        raise Refused("'results' must be a non-empty list of results")
    if len(items) > MAX_RESULTS_PER_EVENT:
        raise Refused(f"{len(items)} results in one event; the limit is {MAX_RESULTS_PER_EVENT}")
    kind = event_type.removeprefix(RESULT_PREFIX).removesuffix(".result")
    return [
        _result(kind, event, item, index, where=f"results[{index}]" if len(items) > 1 else "data")
        for index, item in enumerate(items)
    ]


def dead_letter_records(event: BaseCloudEvent) -> list[Record]:
    """The objects a dead-lettered event named, each with why it failed."""
    attributes = event.get_attributes()
    data = event.get_data()
    objects: list[tuple[str, str, str | None, str | None]] = []
    if event.get_type() in RESULT_TYPES:
        for record in result_records(event):
            objects.append((record.bucket, record.key, record.version_id, record.etag))
    else:
        try:
            parsed = parse_object_events(data, event.get_id())
        except EventError as exc:
            raise Refused(f"dead letter names no object: {exc}") from None
        objects = [(o.bucket, o.key, o.version_id, o.etag) for o in parsed]
    dest = str(attributes.get("knativeerrordest") or "")
    extra = {
        name: str(value)
        for name, value in attributes.items()
        if name.startswith("knativeerror") and name != "knativeerrordata"
    }
    return [
        Record(
            kind=DEAD_LETTER,
            event_id=event.get_id(),
            event_source=event.get_source(),
            event_type=event.get_type(),
            bucket=bucket,
            key=key,
            version_id=version_id,
            etag=etag,
            function=_destination_name(dest),
            error=_dead_letter_reason(attributes),
            extra=extra,
            index=index,
        )
        for index, (bucket, key, version_id, etag) in enumerate(objects)
    ]


def is_dead_letter(event: BaseCloudEvent) -> bool:
    return any(name.startswith("knativeerror") for name in event.get_attributes())


def _data_object(event: BaseCloudEvent) -> dict[str, Any]:
    data = event.get_data()
    if isinstance(data, bytes | bytearray):
        import json

        try:
            data = json.loads(data)
        except ValueError:
            raise Refused("event data is not JSON") from None
    if not isinstance(data, dict):
        raise Refused(f"event data must be a JSON object, got {type(data).__name__}")
    return data


def _result(kind: str, event: BaseCloudEvent, item: Any, index: int, where: str) -> Record:
    if not isinstance(item, dict):
        raise Refused(f"{where}: a result must be a JSON object")
    source = event.get_source()
    record = Record(
        kind=kind,
        event_id=event.get_id(),
        event_source=source,
        event_type=event.get_type(),
        bucket=_required(item, "bucket", where, limit=255),
        key=_required(item, "key", where, limit=MAX_KEY),
        version_id=_text(item, "version_id", where),
        etag=_text(item, "etag", where),
        function=_text(item, "function", where) or _function_of(source),
        model=_text(item, "model", where),
        labels=_labels(item.get("labels"), where),
        latency_ms=_number(item, "latency_ms", where),
        flagged=_flag(item, "flagged", where),
        verdict=_text(item, "verdict", where),
        score=_number(item, "score", where),
        timings=_timings(item, where),
        extra={name: value for name, value in item.items() if name not in KNOWN_FIELDS},
        index=index,
    )
    if record.etag:
        record.etag = record.etag.strip('"')
    if record.version_id == "null":  # S3's name for "no version" in an unversioned bucket
        record.version_id = None
    return record


def _text(
    item: Mapping[str, Any], name: str, where: str, required: bool = False, limit: int = MAX_TEXT
) -> str | None:
    value = item.get(name)
    if value is None or value == "":
        if required:
            raise Refused(f"{where}: '{name}' is missing")
        return None
    if not isinstance(value, str):
        raise Refused(f"{where}: '{name}' must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise Refused(f"{where}: '{name}' is longer than {limit} characters")
    return value


def _required(item: Mapping[str, Any], name: str, where: str, limit: int = MAX_TEXT) -> str:
    value = _text(item, name, where, required=True, limit=limit)
    assert value is not None
    return value


def _number(item: Mapping[str, Any], name: str, where: str) -> float | None:
    value = item.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Refused(f"{where}: '{name}' must be a finite number")
    return float(value)


def _flag(item: Mapping[str, Any], name: str, where: str) -> bool | None:
    value = item.get(name)
    if value is None or isinstance(value, bool):
        return value
    raise Refused(f"{where}: '{name}' must be true or false")


def _labels(value: Any, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_LABELS:
        raise Refused(f"{where}: 'labels' must be a list of at most {MAX_LABELS} labels")
    labels = []
    for rank, label in enumerate(value):
        at = f"{where}.labels[{rank}]"
        if not isinstance(label, dict):
            raise Refused(f"{at}: a label must be a JSON object")
        name = _required(label, "name", at)
        class_id = label.get("class_id")
        if class_id is not None and (isinstance(class_id, bool) or not isinstance(class_id, int)):
            raise Refused(f"{at}: 'class_id' must be an integer")
        labels.append({"name": name, "score": _number(label, "score", at), "class_id": class_id})
    return labels


def _timings(item: Mapping[str, Any], where: str) -> dict[str, float]:
    """Per-stage milliseconds: `timings` as given ({stage: ms}), then the hops between the stage
    times (`stages`: {stage: ISO time or epoch seconds}) in the order they happened."""
    timings: dict[str, float] = {}
    given = item.get("timings")
    if given is not None:
        if not isinstance(given, dict):
            raise Refused(f"{where}: 'timings' must be an object of milliseconds")
        for name in given:
            value = _number(given, name, f"{where}.timings")
            if value is not None:
                timings[str(name)[:MAX_TEXT]] = value
    for field_name in STAGE_FIELDS:
        stages = item.get(field_name)
        if stages is None:
            continue
        if not isinstance(stages, dict):
            raise Refused(f"{where}: '{field_name}' must be an object of times")
        times = sorted(
            (_instant(value, f"{where}.{field_name}.{name}"), str(name)[:MAX_TEXT])
            for name, value in stages.items()
            if value is not None
        )
        for (before, first), (after, second) in itertools.pairwise(times):
            timings[f"{first} → {second}"] = round((after - before) * 1000, 3)
    return timings


def _instant(value: Any, where: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    raise Refused(f"{where}: expected an ISO 8601 time or epoch seconds")


def _function_of(source: str) -> str | None:
    """`/functions/resnet` (what the classifiers send) -> resnet."""
    parts = [part for part in source.split("/") if part]
    return parts[-1][:MAX_TEXT] if parts else None


def _destination_name(dest: str) -> str | None:
    """Which subscriber failed: a cluster address's service name, else the URL as given."""
    if not dest:
        return None
    host = urlsplit(dest).hostname or ""
    if ".svc" in host:
        return host.split(".", 1)[0]
    return dest[:MAX_TEXT]


def _dead_letter_reason(attributes: Mapping[str, Any]) -> str:
    code = attributes.get("knativeerrorcode")
    reason = f"HTTP {code}" if code else "delivery failed"
    raw = attributes.get("knativeerrordata")
    if raw:
        try:
            text = base64.b64decode(str(raw), validate=True).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            text = str(raw)
        reason += f": {text.strip()[:300]}"
    return reason
