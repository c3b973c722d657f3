"""A classifier whose model is on a TF Serving API (gRPC): the client and its lifecycle, once.

resnet and compliance are both this: the model client is built from the TF Serving variables,
started in `start()` (its metadata is fetched in the background; readiness waits for it),
stopped in `stop()`, and the model id of every result names the version the metadata gave.
Each says how the model's answer becomes labels (`classify`).
"""

from __future__ import annotations

from common.classifier import ClassifierFunction
from common.images import set_pillow_pixel_limit
from common.result_records import model_id
from common.tfserving import TFServingClient, TFServingSettings


class ServedModelClassifier(ClassifierFunction):
    def __init__(self, serving: TFServingSettings | None = None) -> None:
        super().__init__()
        self.serving = serving or TFServingSettings.from_env()
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
