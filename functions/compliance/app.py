"""The compliance function: score each uploaded image with open_nsfw and act on the verdict.

    RGW bucket event -> download the object -> Predict (TF Serving gRPC) -> verdict:
        log it; reply with a compliance.verdict CloudEvent (score, flagged);
        flagged (score >= COMPLIANCE_THRESHOLD): tag the object in place, copy it to
        QUARANTINE_BUCKET if set, remove the original only if COMPLIANCE_REMOVE_ORIGINAL

The shared classifier flow (`ClassifierFunction`: download, exactly-once result records, stale
events, non-images, bombs and outages with the classifiers' status codes) does the first half;
this module adds the verdict and what follows from it (`quarantine.Enforcer`). The model client
is resnet's: the model's signature, read from its metadata at start-up, decides what is sent.

Configuration: RESNET_SERVING_ENDPOINT, MODEL_NAME (default `open_nsfw` here), MODEL_SIGNATURE,
MODEL_TIMEOUT, COMPLIANCE_THRESHOLD, QUARANTINE_BUCKET, COMPLIANCE_REMOVE_ORIGINAL, and the
shared result and S3 variables (see docs/compliance.md).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace

from common.classifier import Classification, Label, result_log_fields
from common.errors import ObjectGone
from common.events import ObjectEvent
from common.runtime import Delivery, create_app
from common.s3 import DownloadedObject, Stale
from common.served_classifier import ServedModelClassifier
from common.tfserving import tensor_to_array
from functions.compliance.quarantine import FLAG_TAG, FLAG_VALUE, SCORE_TAG, Enforcer
from functions.compliance.settings import ComplianceSettings, result_settings, serving_settings
from functions.compliance.verdict import (
    NSFW,
    NSFW_COLUMN,
    SFW,
    VERDICT_EVENT_TYPE,
    Quarantine,
    Verdict,
    nsfw_labels,
)

log = logging.getLogger("compliance")


class ComplianceFunction(ServedModelClassifier):
    name = "compliance"
    result_event_type = VERDICT_EVENT_TYPE

    def __init__(self) -> None:
        super().__init__(serving_settings())  # MODEL_NAME defaults to open_nsfw here
        # RESULT_RECORDS: false unless asked (settings.py). TAG_OBJECTS does not apply: this
        # function's tags are the compliance ones, merged (quarantine.py), where the shared
        # flow's would replace the object's whole tag set when there is no record.
        self.results = replace(result_settings(), tag_objects=False)
        self.settings = ComplianceSettings.from_env()
        self.enforcer: Enforcer | None = None

    def start(self) -> None:
        super().start()
        assert self.store is not None
        self.enforcer = Enforcer(self.store, self.settings)
        # A missing quarantine bucket stops the process here, before the first event.
        self.enforcer.check()

    def classify(self, image: DownloadedObject) -> list[Label]:
        response = self.client.predict(self.client.request_for(image.data))
        outputs = {name: tensor_to_array(proto) for name, proto in response.outputs.items()}
        return nsfw_labels(outputs)

    def handle_object(self, obj: ObjectEvent, delivery: Delivery) -> Classification | None:
        assert self.enforcer is not None, "start() was not called"
        try:
            result = super().handle_object(obj, delivery)
        except ObjectGone:
            # Quarantined and removed already (this is a redelivery): the verdict stands.
            quarantined = self.quarantined_result(obj, delivery)
            if quarantined is None:
                raise
            return quarantined
        if result is None:
            return None  # stale: logged by the shared flow
        verdict = Verdict.of(result, self.settings.threshold)
        if not verdict.flagged:
            return verdict
        identity = self.identity(obj, verdict.model_id, verdict.etag)
        try:
            outcome = self.enforcer.enforce(obj, identity, verdict.score)
        except Stale as exc:
            self.log_stale(obj, str(exc))
            return None
        return replace(
            verdict, quarantine=outcome.quarantine, original_removed=outcome.original_removed
        )

    def quarantined_result(self, obj: ObjectEvent, delivery: Delivery) -> Verdict | None:
        """The verdict of a version that is gone from its bucket because this function moved
        it to quarantine (a redelivery after step 3): the copy there has the event's ETag and
        the compliance tags, which say the score."""
        bucket = self.settings.quarantine_bucket
        if not (bucket and self.settings.remove_original and obj.etag):
            return None
        assert self.store is not None
        started = time.perf_counter()
        if self.store.head_etag(bucket, obj.key) != obj.etag:
            return None
        tags = self.store.current_tags(bucket, obj.key) or {}
        try:
            score = float(tags[SCORE_TAG]) if tags.get(FLAG_TAG) == FLAG_VALUE else math.nan
        except (KeyError, ValueError):
            score = math.nan
        if not 0.0 <= score <= 1.0:  # not this function's tags
            return None
        labels = [Label(NSFW, score, NSFW_COLUMN), Label(SFW, 1.0 - score, 0)]
        identity = self.identity(obj, self.model_id(), obj.etag)
        result = self.result(obj, delivery, identity, labels, started, recorded=True)
        return replace(
            Verdict.of(result, self.settings.threshold),
            quarantine=Quarantine(bucket, obj.key, None),
            original_removed=True,
        )

    def log_result(self, result: Classification) -> None:
        assert isinstance(result, Verdict)
        relation = ">=" if result.flagged else "<"
        word = "flagged" if result.flagged else "not flagged"
        where = f", copied to s3://{result.quarantine.bucket}" if result.quarantine else ""
        removed = ", original removed" if result.original_removed else ""
        log.info(
            f"verdict: {word}: nsfw {result.score:.4f} {relation} {result.threshold}{where}"
            f"{removed}",
            extra={**result_log_fields(result), **result.log_fields()},
        )


app = create_app(ComplianceFunction)
