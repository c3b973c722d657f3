"""A classifier's answer as labels: the class-score output of a Predict response -> top-k labels.

What is read: a class-score output (`probabilities`, else `logits`/`scores`, else the one
floating-point [N, C] output): softmax is applied when a row is not already a distribution. C =
1001 means index 0 is "background" (TF-slim ImageNet models), so class ids shift by one; that is
decided from the width the server returns, never assumed. With only a `classes` output the
scores are unknown: each label's score is NaN and `Prediction.scores_known` is False.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from common.classifier import Label
from common.errors import PermanentError
from common.labels import imagenet_name

BACKGROUND_CLASSES = 1001  # ImageNet-1k plus "background" at index 0
# Output names that hold per-class scores, in order of preference.
SCORE_OUTPUTS = ("probabilities", "logits", "scores", "predictions")
CLASS_OUTPUTS = ("classes",)
# A row whose values are >= 0 and sum to 1 within this is taken as probabilities already.
SUM_TOLERANCE = 1e-2


@dataclass(frozen=True)
class Prediction:
    """Top-k labels for one image, best first. `scores_known` is False when the model returned
    only class ids (then every score is NaN)."""

    labels: list[Label]
    model_name: str
    model_version: int | None
    scores_known: bool = True
    outputs_used: tuple[str, ...] = field(default=())


def _softmax(row: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    shifted = np.exp(row - row.max())
    result: npt.NDArray[np.float64] = shifted / shifted.sum()
    return result


def is_distribution(row: npt.NDArray[Any]) -> bool:
    return (
        bool(row.size) and bool((row >= 0).all()) and abs(float(row.sum()) - 1.0) <= SUM_TOLERANCE
    )


def label_for(index: int, width: int, score: float) -> Label:
    """Label of output column `index` in a `width`-wide score row (1001: 0 is background)."""
    offset = 1 if width == BACKGROUND_CLASSES else 0
    class_id = index - offset
    if class_id < 0:
        return Label("background", score, None)
    return Label(imagenet_name(class_id), score, class_id)


def top_k_from_scores(row: npt.NDArray[Any], k: int) -> list[Label]:
    """The k best columns of one score row (probabilities or logits), best first."""
    scores = row.astype(np.float64)
    if not is_distribution(scores):
        scores = _softmax(scores)
    k = min(k, scores.size)
    best = np.argpartition(-scores, k - 1)[:k]
    best = best[np.argsort(-scores[best], kind="stable")]
    return [label_for(int(i), scores.size, float(scores[i])) for i in best]


def find_score_output(outputs: Mapping[str, npt.NDArray[Any]]) -> str | None:
    for name in SCORE_OUTPUTS:
        if name in outputs:
            return name
    floating = [n for n, a in outputs.items() if a.dtype.kind == "f" and a.ndim == 2]
    return floating[0] if len(floating) == 1 else None


def labels_from_outputs(
    outputs: Mapping[str, npt.NDArray[Any]], k: int
) -> tuple[list[Label], bool, tuple[str, ...]]:
    """(labels, scores_known, outputs used) for the first image of a Predict answer."""
    score_name = find_score_output(outputs)
    if score_name is not None:
        scores = outputs[score_name]
        if scores.ndim != 2 or scores.shape[0] < 1 or scores.shape[1] < 1:
            raise PermanentError(
                f"output {score_name!r} has shape {list(scores.shape)}; expected [N, classes]"
            )
        return top_k_from_scores(scores[0], k), True, (score_name,)
    for name in CLASS_OUTPUTS:
        if name in outputs:
            ids = np.atleast_1d(outputs[name][0] if outputs[name].ndim >= 1 else outputs[name])
            # No score row, so no width to tell a 1001-class model from a 1000-class one: the
            # ids are taken as ImageNet-1k ids, as they are.
            labels = [Label(imagenet_name(int(i)), math.nan, int(i)) for i in ids[:k]]
            return labels, False, (name,)
    raise PermanentError(f"model answered with outputs {sorted(outputs)}: no scores or classes")
