"""What happens to a flagged object: tagged in place, copied to quarantine, maybe removed.

Every step is idempotent, so a retried or duplicated event converges on the same state:

1. the tags `compliance=flagged` and `compliance-score=<score>` are merged into the version's
   tag set (the owner's tags and the `rgwi:` result records are kept; see `ObjectStore.merge_tags`),
   once the object's classifier has written its result record, or COMPLIANCE_TAG_WAIT has
   passed: the classifier got the same event at the same time and writes back the tag set it read
   when it started, so tags written before that would be lost (S3 has no conditional tag write);
2. with QUARANTINE_BUCKET, a server-side CopyObject of exactly that version (its version id, or
   If-Match on its ETag) to the same key there, with its metadata and tags; skipped when the
   quarantine already holds those bytes (same ETag) under that key;
3. with COMPLIANCE_REMOVE_ORIGINAL, and only once the copy is there, that version is deleted.

A failed copy or delete is a `TransientError` (503): Knative retries the event, and then
dead-letters it; the original stays where it was until the copy exists, so nothing is lost.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from common.env import ConfigError
from common.errors import EventError, TransientError
from common.events import ObjectEvent
from common.result_records import RECORD_PREFIX, ResultIdentity, record_key
from common.s3 import ObjectStore, Stale
from functions.compliance.settings import QUARANTINE_BUCKET, ComplianceSettings
from functions.compliance.verdict import Quarantine

log = logging.getLogger("compliance")

FLAG_TAG = "compliance"
FLAG_VALUE = "flagged"
SCORE_TAG = "compliance-score"
TAG_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Outcome:
    quarantine: Quarantine | None = None
    original_removed: bool = False


class Enforcer:
    def __init__(self, store: ObjectStore, settings: ComplianceSettings) -> None:
        self.store = store
        self.settings = settings

    def check(self) -> None:
        """At start-up: the quarantine bucket exists and these keys may use it; else the
        process stops with a ConfigError naming it (a missing bucket is a deployment error)."""
        bucket = self.settings.quarantine_bucket
        if not bucket:
            return
        try:
            self.store.require_bucket(bucket)
        except EventError as exc:
            raise ConfigError(f"{QUARANTINE_BUCKET.name}={bucket}: {exc.message}") from None

    def enforce(self, obj: ObjectEvent, identity: ResultIdentity, score: float) -> Outcome:
        """Steps 1-3 of the module docstring for one flagged version. `Stale` if the object
        changed since it was judged (then the newer version's own event decides)."""
        etag = identity.etag
        self.wait_for_classifier(obj, identity)
        self.store.merge_tags(
            obj, {FLAG_TAG: FLAG_VALUE, SCORE_TAG: f"{score:.4f}"}, keep=RECORD_PREFIX
        )
        bucket = self.settings.quarantine_bucket
        if not bucket:
            return Outcome()
        quarantine = self.copy(obj, etag, bucket)
        if not self.settings.remove_original:
            return Outcome(quarantine)
        return Outcome(quarantine, self.remove(obj, etag))

    def wait_for_classifier(self, obj: ObjectEvent, identity: ResultIdentity) -> bool:
        """Until another model's result record names this version (its classifier is done with
        the tags), at most `tag_wait` seconds; whether one did."""
        own = record_key(identity.model)
        deadline = time.monotonic() + self.settings.tag_wait
        while True:
            tags = self.store.get_tags(obj).tags
            if any(
                key.startswith(RECORD_PREFIX)
                and key != own
                and value.partition(" ")[0] == identity.marker
                for key, value in tags.items()
            ):
                return True
            if time.monotonic() + TAG_POLL_SECONDS > deadline:
                return False
            time.sleep(TAG_POLL_SECONDS)

    def copy(self, obj: ObjectEvent, etag: str | None, bucket: str) -> Quarantine:
        try:
            if etag is not None and self.store.head_etag(bucket, obj.key) == etag:
                # A retry or a duplicate: those bytes are in quarantine already.
                return Quarantine(bucket, obj.key, None)
            version = self.store.copy_version(obj, etag, bucket)
        except Stale:
            raise
        except EventError as exc:
            raise TransientError(
                f"quarantine copy to s3://{bucket}/{obj.key} failed ({exc.message}); the original "
                "stays in place and the event is retried"
            ) from None
        return Quarantine(bucket, obj.key, version)

    def remove(self, obj: ObjectEvent, etag: str | None) -> bool:
        try:
            self.store.delete_version(obj, etag)
        except Stale as exc:
            # Overwritten since: the new content is not what was judged, so it stays.
            log.warning(f"flagged version not removed: {exc}", extra={"key": obj.key})
            return False
        except EventError as exc:
            raise TransientError(
                f"removing s3://{obj.bucket}/{obj.key} after its quarantine copy failed "
                f"({exc.message}); the event is retried"
            ) from None
        return True
