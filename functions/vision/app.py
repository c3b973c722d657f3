"""The vision function: label each new object with the Google Cloud Vision API.

download (RGW) -> LABEL_DETECTION (Vision REST) -> one log line per label, as the seed printed:

    label: tabby, Score: 0.993347

Object tags and the reply CloudEvent come from `ClassifierFunction`. No model code is imported
here: the function is an HTTP client, so it starts in a fraction of a second.

Readiness is true once the HTTP client exists. There is no network probe: Google offers no free
health endpoint for the Vision API (every annotate call is billed), and a readiness probe that
failed on a Google outage would only pull every replica out of the Service at once; outages show
up as 503 answers that the channel retries instead.
"""

from __future__ import annotations

import contextlib
import logging

from common.classifier import Classification, ClassifierFunction, Label, result_log_fields
from common.errors import NotAnImage
from common.runtime import create_app
from common.s3 import DownloadedObject
from common.vision import VisionClient, VisionSettings

log = logging.getLogger("vision")


class VisionFunction(ClassifierFunction):
    name = "vision"
    model_name = "google-cloud-vision"

    def __init__(self) -> None:
        super().__init__()
        self.vision_settings = VisionSettings.from_env()
        self.vision: VisionClient | None = None

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
        return self.vision.detect_labels(image.data)

    def log_result(self, result: Classification) -> None:
        fields = result_log_fields(result)
        if not result.labels:
            log.info("no labels found", extra=fields)
        for label in result.labels:
            log.info(
                f"label: {label.name}, Score: {label.score:.6f}",
                extra={**fields, "label": label.name, "score": label.score},
            )


app = create_app(VisionFunction)
