"""The compliance function's own variables (the serving, S3 and result ones are shared).

MODEL_NAME and RESULT_RECORDS are shared variables with other defaults here: `open_nsfw`
(`serving_settings`), the model this function is written for, and false (`result_settings`).
"""

from __future__ import annotations

import os
from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass

from common.classifier import RESULT_RECORDS, ResultSettings
from common.env import ConfigError, Env, env_var
from common.tfserving import MODEL_NAME, TFServingSettings

COMPLIANCE = "Compliance (compliance)"
DEFAULT_MODEL = "open_nsfw"

THRESHOLD = env_var(
    "COMPLIANCE_THRESHOLD",
    "Score (the model's nsfw probability, 0..1) from which an object is flagged: tagged in "
    "place and, with QUARANTINE_BUCKET, copied there.",
    COMPLIANCE,
    "0.8",
)
QUARANTINE_BUCKET = env_var(
    "QUARANTINE_BUCKET",
    "Bucket a flagged object is copied to under the same key (server-side, that exact "
    "version, with its tags). Checked at start-up. Empty: no copy.",
    COMPLIANCE,
)
TAG_WAIT = env_var(
    "COMPLIANCE_TAG_WAIT",
    "Seconds a flagged object's in-place tags wait for the classifier's result record on the "
    "same version: S3 has no conditional tag write, and the classifier writes its tag set last, "
    "so tagging before it would lose the compliance tags. 0: do not wait.",
    COMPLIANCE,
    "10",
)
REMOVE_ORIGINAL = env_var(
    "COMPLIANCE_REMOVE_ORIGINAL",
    "Delete a flagged object's version from its bucket once the quarantine copy succeeded. "
    "Needs QUARANTINE_BUCKET.",
    COMPLIANCE,
    "false",
)


@dataclass(frozen=True)
class ComplianceSettings:
    threshold: float = 0.8
    quarantine_bucket: str | None = None
    remove_original: bool = False
    tag_wait: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ComplianceSettings:
        env = Env(environ)
        raw = env.required_str(THRESHOLD)
        try:
            threshold = float(raw)
        except ValueError:
            threshold = float("nan")
        if not 0.0 <= threshold <= 1.0:  # NaN fails too
            raise ConfigError(
                f"{THRESHOLD.name}: expected a number from 0 to 1 (a probability), got {raw!r}"
            )
        bucket = env.string(QUARANTINE_BUCKET)
        remove = env.flag(REMOVE_ORIGINAL)
        if remove and not bucket:
            raise ConfigError(
                f"{REMOVE_ORIGINAL.name}=true needs {QUARANTINE_BUCKET.name}: a flagged object "
                "is only removed once it is copied to quarantine"
            )
        return cls(threshold, bucket, remove, env.number(TAG_WAIT, 0.0))


def serving_settings(environ: Mapping[str, str] | None = None) -> TFServingSettings:
    """The shared TF Serving variables, with MODEL_NAME defaulting to `open_nsfw` here."""
    return TFServingSettings.from_env(_with_defaults(environ, {MODEL_NAME.name: DEFAULT_MODEL}))


def result_settings(environ: Mapping[str, str] | None = None) -> ResultSettings:
    """The shared result variables, with RESULT_RECORDS defaulting to false here: the object's
    classifier writes its record on the same object at the same time, and S3 has no
    conditional tag write, so a second record writer could make either record go missing."""
    return ResultSettings.from_env(_with_defaults(environ, {RESULT_RECORDS.name: "false"}))


def _with_defaults(
    environ: Mapping[str, str] | None, defaults: Mapping[str, str]
) -> ChainMap[str, str]:
    source = os.environ if environ is None else environ
    set_values = {name: value for name, value in source.items() if value != ""}
    return ChainMap(set_values, dict(defaults))
