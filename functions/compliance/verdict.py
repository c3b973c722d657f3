"""What the compliance function concludes about one object: open_nsfw's score -> a verdict.

The model answers `probabilities` [N, 2] (column 0 sfw, column 1 nsfw); the score is column 1.
As labels (what the shared classifier flow records in the `rgwi:` tag and rebuilds duplicates
from) that is `nsfw` first, whatever TOP_K, then `sfw`, each with its column as class id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from common.classifier import EVENT_TYPE_PREFIX, Classification, Label
from common.errors import PermanentError
from common.scores import find_score_output, is_distribution

VERDICT_EVENT_TYPE = f"{EVENT_TYPE_PREFIX}.compliance.verdict"
NSFW, SFW = "nsfw", "sfw"
NSFW_COLUMN = 1  # open_nsfw's order: [sfw, nsfw]


def nsfw_labels(outputs: Mapping[str, npt.NDArray[Any]]) -> list[Label]:
    """The nsfw and sfw labels of the first image of a Predict answer."""
    name = find_score_output(outputs)
    if name is None:
        raise PermanentError(f"model answered with outputs {sorted(outputs)}: no probabilities")
    scores = outputs[name]
    if scores.ndim != 2 or scores.shape[0] < 1 or scores.shape[1] != 2:
        raise PermanentError(
            f"output {name!r} has shape {list(scores.shape)}; expected [N, 2] (sfw, nsfw): "
            "is MODEL_NAME an sfw/nsfw model?"
        )
    row = scores[0].astype(np.float64)
    if not is_distribution(row):  # logits
        row = np.exp(row - row.max())
        row = row / row.sum()
    nsfw = float(row[NSFW_COLUMN])
    return [Label(NSFW, nsfw, NSFW_COLUMN), Label(SFW, float(row[0]), 0)]


def nsfw_score(labels: list[Label]) -> float:
    """The nsfw score among a result's labels (fresh, or rebuilt from the result record)."""
    for label in labels:
        if label.name == NSFW:
            return label.score
    raise PermanentError(f"the result has no {NSFW!r} score: labels {[x.name for x in labels]}")


@dataclass(frozen=True)
class Quarantine:
    """Where a flagged object's copy is."""

    bucket: str
    key: str
    version_id: str | None  # the copy's version (None: an unversioned quarantine bucket)


@dataclass(frozen=True)
class Verdict(Classification):
    """A classification plus what the compliance function concluded and did about it."""

    score: float = 0.0  # the nsfw probability
    flagged: bool = False  # score >= threshold
    threshold: float = 0.8
    quarantine: Quarantine | None = None
    original_removed: bool = False

    @classmethod
    def of(cls, result: Classification, threshold: float, **outcome: Any) -> Verdict:
        base = {f.name: getattr(result, f.name) for f in fields(Classification)}
        score = nsfw_score(result.labels)
        return cls(**base, score=score, flagged=score >= threshold, threshold=threshold, **outcome)

    def log_fields(self) -> dict[str, Any]:
        return {
            "score": round(self.score, 6),
            "flagged": self.flagged,
            "threshold": self.threshold,
            "bucket": self.bucket,
            "key": self.key,
            "version_id": self.version_id,
            "etag": self.etag,
            "quarantine_bucket": self.quarantine.bucket if self.quarantine else None,
            "quarantine_version_id": self.quarantine.version_id if self.quarantine else None,
            "original_removed": self.original_removed,
        }
