"""The resnet function: classify each uploaded image with a model on TF Serving, over gRPC.

    RGW bucket event -> download the object -> Predict (gRPC) -> log, tag, reply

The seed's function, kept as short: the shared flow is `ClassifierFunction` (common/classifier.py),
the model client `TFServingClient` (common/tfserving.py). The model's signature, read once at
start-up, decides what is sent: the raw image bytes (the seed's `image_bytes` ResNet export) or
pixels this function decodes and resizes (`images` float32/uint8 [N, 224, 224, 3]).

Configuration: RESNET_SERVING_ENDPOINT, MODEL_NAME, MODEL_SIGNATURE, MODEL_TIMEOUT, TOP_K,
TAG_OBJECTS, REPLY_EVENTS, MAX_IMAGE_PIXELS, and the S3 variables (see the README's table).
"""

from __future__ import annotations

import logging

from common.classifier import Classification, ClassifierFunction, Label, result_log_fields
from common.images import set_pillow_pixel_limit
from common.result_records import model_id
from common.runtime import create_app
from common.s3 import DownloadedObject
from common.tfserving import TFServingClient, TFServingSettings

log = logging.getLogger("resnet")


class ResnetFunction(ClassifierFunction):
    name = "resnet"

    def __init__(self) -> None:
        super().__init__()
        self.serving = TFServingSettings.from_env()
        self.model_name = self.serving.model_name
        self.client = TFServingClient(self.serving, self.results.max_image_pixels)

    def start(self) -> None:
        set_pillow_pixel_limit(self.results.max_image_pixels)
        # Returns at once: the model's metadata is fetched (and retried) in the background while
        # the S3 client is built, and readiness stays false until it arrives.
        self.client.start()
        super().start()

    def stop(self) -> None:
        self.client.stop()
        super().stop()

    def ready(self) -> bool:
        return self.client.ready

    def model_id(self) -> str:
        # The version the model server's metadata named at start-up: a new model version finds
        # no result record of its own and classifies again (with new result ids).
        return model_id(self.model_name, self.client.require_signature().version)

    def classify(self, image: DownloadedObject) -> list[Label]:
        return self.client.classify(image.data, self.results.top_k).labels

    def log_result(self, result: Classification) -> None:
        # The seed printed `classes: [285] Egyptian cat 0.71`; the top-k ride along as fields.
        if result.labels:
            top = result.labels[0]
            message = f"classes: [{top.class_id}] {top.name} {top.score:.2f}"
        else:
            message = "classes: [] (no labels)"
        log.info(message, extra=result_log_fields(result))


app = create_app(ResnetFunction)
