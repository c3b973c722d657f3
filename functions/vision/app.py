"""The vision function: label each new object with the Google Cloud Vision API.

download (RGW) -> VISION_FEATURES (Vision REST) -> one log line per label, as the seed printed:

    label: tabby, Score: 0.993347

and, with SAFE_SEARCH_DETECTION among the features, one line with the five likelihoods

    safe search: adult VERY_UNLIKELY, spoof UNKNOWN, medical UNKNOWN, violence UNKNOWN, racy ...

which the reply CloudEvent's data carries too, as `safe_search`. Object tags and the reply come
from `ClassifierFunction`; a duplicate event answered from the object's result record carries the
labels only (the record holds no SafeSearch). No model code is imported here: the function is an
HTTP client, so it starts in a fraction of a second.

Readiness is true once the HTTP client exists. There is no network probe: Google offers no free
health endpoint for the Vision API (every annotate call is billed), and a readiness probe that
failed on a Google outage would only pull every replica out of the Service at once; outages show
up as 503 answers that the channel retries instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from typing import Any

from common.classifier import Classification, ClassifierFunction, Label, result_log_fields
from common.errors import NotAnImage
from common.events import ObjectEvent
from common.runtime import Delivery, create_app
from common.s3 import DownloadedObject
from common.vision import VisionClient, VisionSettings
from common.vision_messages import SafeSearch

log = logging.getLogger("vision")


@dataclasses.dataclass(frozen=True)
class VisionResult(Classification):
    """A classification with the image's SafeSearch likelihoods, when they were asked for."""

    safe_search: SafeSearch | None = None

    def as_data(self) -> dict[str, Any]:
        data = super().as_data()
        data["safe_search"] = self.safe_search.as_dict() if self.safe_search else None
        return data


class VisionFunction(ClassifierFunction):
    name = "vision"
    model_name = "google-cloud-vision"

    def __init__(self) -> None:
        super().__init__()
        self.vision_settings = VisionSettings.from_env()
        self.vision: VisionClient | None = None
        # `classify` returns labels only; the SafeSearch of the object being handled waits here.
        # Per thread: the runtime handles each event in one worker thread.
        self._safe_search = threading.local()

    def start(self) -> None:
        super().start()
        self.vision = VisionClient(self.vision_settings)
        if self.vision_settings.api_key is None:
            log.warning(
                "GOOGLE_VISION_API_KEY is not set; Google's endpoint will refuse every call",
                extra={"endpoint": self.vision_settings.endpoint},
            )

    def stop(self) -> None:
        if self.vision is not None:
            self.vision.close()
            self.vision = None

    def ready(self) -> bool:
        return self.vision is not None

    def classify(self, image: DownloadedObject) -> list[Label]:
        assert self.vision is not None, "start() was not called"
        # Imported here: Pillow and numpy would add ~0.1 s to every cold start for a check that
        # only matters once an image arrives.
        from common.images import check_image

        # A decompression bomb is refused here (413, as resnet does), not billed by Google. What
        # Pillow cannot read goes on: Google reads formats Pillow does not (RAW, ICO, PDF).
        with contextlib.suppress(NotAnImage):
            check_image(image.data, self.results.max_image_pixels)
        annotation = self.vision.annotate(image.data)
        self._safe_search.value = annotation.safe_search
        return annotation.labels

    def handle_object(self, obj: ObjectEvent, delivery: Delivery) -> Classification | None:
        self._safe_search.value = None
        result = super().handle_object(obj, delivery)
        safe_search: SafeSearch | None = self._safe_search.value
        if result is None or safe_search is None:
            return result
        fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
        return VisionResult(**fields, safe_search=safe_search)

    def log_result(self, result: Classification) -> None:
        fields = result_log_fields(result)
        if not result.labels:
            log.info("no labels found", extra=fields)
        for label in result.labels:
            log.info(
                f"label: {label.name}, Score: {label.score:.6f}",
                extra={**fields, "label": label.name, "score": label.score},
            )
        if isinstance(result, VisionResult) and result.safe_search is not None:
            likelihoods = result.safe_search.as_dict()
            text = ", ".join(f"{category} {value}" for category, value in likelihoods.items())
            log.info(f"safe search: {text}", extra={**fields, "safe_search": likelihoods})


app = create_app(VisionFunction)
