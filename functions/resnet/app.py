"""The resnet function: classify each uploaded image with a model on TF Serving, over gRPC.

    RGW bucket event -> download the object -> Predict (gRPC) -> log, tag, reply

The seed's function, kept as short: the shared flow is `ClassifierFunction` (common/classifier.py),
the model client and its lifecycle `ServedModelClassifier` (common/served_classifier.py). The
model's signature, read once at start-up, decides what is sent: the raw image bytes (the seed's
`image_bytes` ResNet export) or pixels this function decodes and resizes (`images` float32/uint8
[N, 224, 224, 3]).

Configuration: RESNET_SERVING_ENDPOINT, MODEL_NAME, MODEL_SIGNATURE, MODEL_TIMEOUT, TOP_K,
TAG_OBJECTS, REPLY_EVENTS, MAX_IMAGE_PIXELS, and the S3 variables (see the README's table).
"""

from __future__ import annotations

import logging

from common.classifier import Classification, Label, result_log_fields
from common.runtime import create_app
from common.s3 import DownloadedObject
from common.served_classifier import ServedModelClassifier

log = logging.getLogger("resnet")


class ResnetFunction(ServedModelClassifier):
    name = "resnet"

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
