"""What every classifier function does around its model: download, classify, log, tag, reply.

A classifier (resnet, vision) subclasses `ClassifierFunction` and writes only `classify(image)`
and the log line it wants; this module owns the rest of the flow, once:

    ObjectEvent -> bytes (RGW) -> labels (the model) -> log line, object tags, reply CloudEvent

Removal events are acknowledged and ignored (there is nothing left to classify).

Exactly-once effects (see `common.result_records`): the reply's id is the result's identity, and
with RESULT_RECORDS (the default) each result is recorded in an object tag, read before anything
else. So a duplicate (another replica, a restarted pod, RGW's second notification of one PUT, a
reconciliation) costs one GetObjectTagging and is answered with the same result event, rebuilt from
the record; an event for a version the object no longer has (overwritten since) is acknowledged with
no result and a log line saying why."""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from common.cloudevents_http import CloudEvent, new_event
from common.env import Env, env_var
from common.errors import EventError, Forbidden
from common.events import ObjectEvent
from common.result_records import (
    RESULT_NAMESPACE,
    Label,
    ResultIdentity,
    encode_record,
    record_key,
    records_in,
    with_record,
)
from common.runtime import Delivery, Function
from common.s3 import DownloadedObject, ObjectStore, S3Settings, Stale

__all__ = ["Classification", "ClassifierFunction", "Label", "ResultSettings"]

# One project-wide prefix for the event types this project emits.
EVENT_TYPE_PREFIX = "dev.rgwinference"
RESULT_EVENT_TYPE = f"{EVENT_TYPE_PREFIX}.classification.result"

log = logging.getLogger("classifier")

RESULTS = "Classification results (resnet, vision)"
TOP_K = env_var("TOP_K", "How many classes to log and reply with.", RESULTS, "5")
TAG_OBJECTS = env_var(
    "TAG_OBJECTS",
    "Write the top label back to the object as S3 object tags (needs s3:PutObjectTagging).",
    RESULTS,
    "false",
)
REPLY_EVENTS = env_var(
    "REPLY_EVENTS",
    "Answer each event with a classification.result CloudEvent (Knative forwards it to `reply`).",
    RESULTS,
    "true",
)
RESULT_RECORDS = env_var(
    "RESULT_RECORDS",
    "Record each result on the object (one `rgwi:<model>` tag; needs s3:GetObjectTagging and "
    "s3:PutObjectTagging) and read it before downloading: a duplicate event then costs one "
    "metadata call and is answered with the same result event instead of a second Predict.",
    RESULTS,
    "true",
)
MAX_IMAGE_PIXELS = env_var(
    "MAX_IMAGE_PIXELS",
    "Largest decoded image (width x height) accepted; more is a decompression bomb and gets 413.",
    RESULTS,
    str(40_000_000),
)


@dataclass(frozen=True)
class ResultSettings:
    top_k: int = 5
    tag_objects: bool = False
    reply_events: bool = True
    max_image_pixels: int = 40_000_000
    result_records: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ResultSettings:
        env = Env(environ)
        return cls(
            top_k=env.integer(TOP_K, 1, 100),
            tag_objects=env.flag(TAG_OBJECTS),
            reply_events=env.flag(REPLY_EVENTS),
            max_image_pixels=env.integer(MAX_IMAGE_PIXELS, 1),
            result_records=env.flag(RESULT_RECORDS),
        )


@dataclass(frozen=True)
class Classification:
    bucket: str
    key: str
    version_id: str | None
    event_id: str
    model: str
    labels: list[Label]
    latency_ms: float
    result_id: str = ""
    etag: str | None = None
    model_id: str = ""  # name@version: part of the result's identity
    # When each stage happened (ISO 8601, UTC): rgw_event_time, source_received,
    # function_received, model_done. Per-hop latency is the difference of two.
    stages: dict[str, str | None] = field(default_factory=dict)
    trace_id: str | None = None
    recorded: bool = False  # rebuilt from the object's result record (a duplicate event)

    def as_data(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = [label_data(label) for label in self.labels]
        return data


class ClassifierFunction(Function):
    """Download -> classify -> log / tag / reply, for every created object in an event."""

    model_name = "model"
    # The reply's CloudEvent type: a function that answers with something other than a
    # classification (the compliance verdict) names its own.
    result_event_type = RESULT_EVENT_TYPE

    def __init__(self) -> None:
        self.s3_settings = S3Settings.from_env()
        self.results = ResultSettings.from_env()
        self.store: ObjectStore | None = None

    def start(self) -> None:
        self.store = ObjectStore(self.s3_settings)

    def classify(self, image: DownloadedObject) -> list[Label]:
        """The labels for one image, best first, at most `self.results.top_k`."""
        raise NotImplementedError

    def log_result(self, result: Classification) -> None:
        """One log line per object; subclasses print it the way the seed did."""
        top = result.labels[0] if result.labels else Label("(none)", 0.0)
        log.info(f"{top.name} {top.score:.6f}", extra=result_log_fields(result))

    def model_id(self) -> str:
        """The model's identity in results and records: `name@version` where it has one."""
        return self.model_name

    def handle(self, delivery: Delivery) -> CloudEvent | None:
        assert self.store is not None, "start() was not called"
        results: list[Classification] = []
        for obj in delivery.objects:
            if not obj.created:
                log.info(
                    "ignoring a non-creation event",
                    extra={"event_id": obj.event_id, "event_name": obj.event_name, "key": obj.key},
                )
                continue
            result = self.handle_object(obj, delivery)
            if result is not None:
                self.log_result(result)
                results.append(result)
        if not results or not self.results.reply_events:
            return None
        return self.reply(results)

    def handle_object(self, obj: ObjectEvent, delivery: Delivery) -> Classification | None:
        """One created object: its result (classified now or rebuilt from its record), or None
        when the event is stale."""
        assert self.store is not None
        started = time.perf_counter()
        model = self.model_id()
        tags = self.read_record_tags(obj) if self.results.result_records else None
        if tags is not None:
            identity = self.identity(obj, model, obj.etag)
            record = records_in(tags).get(model)
            if record is not None and record.matches(identity) and identity.marker != "-":
                return self.result(obj, delivery, identity, record.labels, started, recorded=True)
        try:
            image = self.store.download(obj, if_match=True)
        except Stale as exc:
            self.log_stale(obj, str(exc))
            return None
        identity = self.identity(obj, model, obj.etag or image.etag)
        if tags is not None and not obj.etag:
            # An event without an ETag (the legacy RGWEvent) is checked once the GET named it.
            record = records_in(tags).get(model)
            if record is not None and record.matches(identity):
                return self.result(obj, delivery, identity, record.labels, started, recorded=True)
        labels = self.classify(image)[: self.results.top_k]
        result = self.result(obj, delivery, identity, labels, started, recorded=False)
        self.write_record(obj, identity, labels, tags)
        return result

    def identity(self, obj: ObjectEvent, model: str, etag: str | None) -> ResultIdentity:
        return ResultIdentity(obj.bucket, obj.key, obj.version_id, etag, model)

    def read_record_tags(self, obj: ObjectEvent) -> dict[str, str] | None:
        """The tags of the event's version (one GetObjectTagging), or None if they cannot be
        read (no permission: the function then works as without records)."""
        assert self.store is not None
        self.store.check_bucket(obj.bucket)  # ALLOWED_BUCKETS stays a 403
        try:
            return self.store.get_tags(obj).tags
        except Forbidden as exc:
            log.warning("cannot read the result record", extra={"key": obj.key, "error": str(exc)})
            return None

    def write_record(
        self,
        obj: ObjectEvent,
        identity: ResultIdentity,
        labels: list[Label],
        current: dict[str, str] | None,
    ) -> None:
        assert self.store is not None
        display = {}
        if self.results.tag_objects and labels:
            display = {
                "classified-by": self.model_name,
                "label": labels[0].name,
                "score": f"{labels[0].score:.4f}",
            }
        if not self.results.result_records or current is None:
            if display:
                self.store.put_tags(obj, display)
            return
        record = encode_record(identity.marker, labels)
        tags = with_record(current, identity.model, record, display)
        try:
            self.store.put_tags(obj, tags)
        except EventError as exc:
            if display:
                raise  # the tags were asked for (TAG_OBJECTS): let the channel retry
            # The result stands without its record: a later duplicate is classified again and
            # gets the same result id.
            log.warning(
                "result record not written",
                extra={"key": obj.key, "tag": record_key(identity.model), "error": exc.message},
            )

    def result(
        self,
        obj: ObjectEvent,
        delivery: Delivery,
        identity: ResultIdentity,
        labels: list[Label],
        started: float,
        recorded: bool,
    ) -> Classification:
        attributes = delivery.cloudevent.get_attributes()
        stages: dict[str, str | None] = {
            "rgw_event_time": _iso(obj.event_time),
            "source_received": _text(attributes.get("sourcereceived")),
            "function_received": _iso(delivery.received_at),
            "model_done": None if recorded else _iso(datetime.now(UTC)),
        }
        return Classification(
            bucket=obj.bucket,
            key=obj.key,
            version_id=obj.version_id,
            event_id=obj.event_id,
            model=self.model_name,
            labels=labels,
            latency_ms=round((time.perf_counter() - started) * 1000, 2),
            result_id=identity.result_id,
            etag=identity.etag,
            model_id=identity.model,
            stages=stages,
            trace_id=delivery.span.context.trace_id if delivery.span else None,
            recorded=recorded,
        )

    def log_stale(self, obj: ObjectEvent, why: str) -> None:
        log.info(
            f"stale event, no result: {why}",
            extra={
                "event_id": obj.event_id,
                "key": obj.key,
                "etag": obj.etag,
                "version_id": obj.version_id,
                "sequencer": obj.sequencer,
                "reason": "stale",
            },
        )

    def reply(self, results: list[Classification]) -> CloudEvent:
        source = f"/functions/{self.name}"
        if len(results) == 1:
            only = results[0]
            return new_event(
                self.result_event_type,
                source,
                only.as_data(),
                subject=only.key,
                event_id=only.result_id,
            )
        # One reply for several objects: its id is derived from theirs, so it is stable too.
        combined = str(uuid.uuid5(RESULT_NAMESPACE, "\0".join(r.result_id for r in results)))
        data = {"results": [r.as_data() for r in results]}
        return new_event(self.result_event_type, source, data, event_id=combined)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def label_data(label: Label) -> dict[str, Any]:
    """JSON-safe: a model that reports only classes has no scores (NaN), which JSON cannot hold."""
    data = asdict(label)
    if math.isnan(label.score):
        data["score"] = None
    return data


def result_log_fields(result: Classification) -> dict[str, Any]:
    return {
        "event_id": result.event_id,
        "bucket": result.bucket,
        "key": result.key,
        "model": result.model,
        "labels": [label_data(label) for label in result.labels],
        "latency_ms": result.latency_ms,
        "result_id": result.result_id,
        "etag": result.etag,
        "recorded": result.recorded,
    }
