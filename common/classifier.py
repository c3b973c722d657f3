"""What every classifier function does around its model: download, classify, log, tag, reply.

A classifier (resnet, vision) subclasses `ClassifierFunction` and writes only `classify(image)`
and the log line it wants; this module owns the rest of the flow, once:

    ObjectEvent -> bytes (RGW) -> labels (the model) -> log line, object tags, reply CloudEvent

Removal events are acknowledged and ignored (there is nothing left to classify).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

from common.cloudevents_http import CloudEvent, new_event
from common.config import ResultSettings, S3Settings
from common.runtime import Delivery, Function
from common.s3 import DownloadedObject, ObjectStore

# One project-wide prefix for the event types this project emits.
EVENT_TYPE_PREFIX = "dev.rgwinference"
RESULT_EVENT_TYPE = f"{EVENT_TYPE_PREFIX}.classification.result"

log = logging.getLogger("classifier")


@dataclass(frozen=True)
class Label:
    """One class with its score; `class_id` is the ImageNet index where the model has one."""

    name: str
    score: float
    class_id: int | None = None


@dataclass(frozen=True)
class Classification:
    bucket: str
    key: str
    version_id: str | None
    event_id: str
    model: str
    labels: list[Label]
    latency_ms: float

    def as_data(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = [label_data(label) for label in self.labels]
        return data


class ClassifierFunction(Function):
    """Download -> classify -> log / tag / reply, for every created object in an event."""

    model_name = "model"

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
            started = time.perf_counter()
            image = self.store.download(obj)
            labels = self.classify(image)[: self.results.top_k]
            result = Classification(
                bucket=obj.bucket,
                key=obj.key,
                version_id=obj.version_id,
                event_id=obj.event_id,
                model=self.model_name,
                labels=labels,
                latency_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            self.log_result(result)
            if self.results.tag_objects and labels:
                self.store.put_tags(
                    obj,
                    {
                        "classified-by": self.model_name,
                        "label": labels[0].name,
                        "score": f"{labels[0].score:.4f}",
                    },
                )
            results.append(result)
        if not results or not self.results.reply_events:
            return None
        return self.reply(results)

    def reply(self, results: list[Classification]) -> CloudEvent:
        source = f"/functions/{self.name}"
        if len(results) == 1:
            only = results[0]
            return new_event(RESULT_EVENT_TYPE, source, only.as_data(), subject=only.key)
        return new_event(RESULT_EVENT_TYPE, source, {"results": [r.as_data() for r in results]})


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
    }
