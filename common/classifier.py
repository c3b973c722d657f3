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
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from common.cloudevents_http import CloudEvent, new_event
from common.env import Env, env_var
from common.runtime import Delivery, Function
from common.s3 import DownloadedObject, ObjectStore, S3Settings

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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ResultSettings:
        env = Env(environ)
        return cls(
            top_k=env.integer(TOP_K, 1, 100),
            tag_objects=env.flag(TAG_OBJECTS),
            reply_events=env.flag(REPLY_EVENTS),
            max_image_pixels=env.integer(MAX_IMAGE_PIXELS, 1),
        )


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
