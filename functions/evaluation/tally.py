"""The evaluation's figures: every joined pair compared, counted, and the recent ones kept.

`compare` turns a pair of halves into a `Comparison`: top-1 agreement and top-k overlap by the
matching rule of `functions.evaluation.matching`. `Tally` adds each comparison to Prometheus
counters (on the registry the app serves at /metrics) and keeps the last `keep` comparisons for
the JSON report; older ones live on in the counters only.

Counters (labels `first` and `second` are the two models, in function-name order):

    evaluation_results_total{function, model}        halves received (duplicates not counted)
    evaluation_pairs_total{first, second}             versions both classifiers answered
    evaluation_top1_agree_total{first, second}        of those, top-1 labels agree
    evaluation_top5_overlap_total{first, second, overlap}   pairs by top-5 overlap, 0..5
    evaluation_top5_shared_labels_total{first, second}      the overlaps added up
    evaluation_top1_unmatched_total{function, model}  a top-1 label that names no ImageNet class
    evaluation_unpaired_total{function, model, reason}      halves dropped unpaired
    evaluation_duplicates_total                       a model's result for a version again
    evaluation_pending                                 halves waiting for their pair (gauge)

Mean top-5 overlap = evaluation_top5_shared_labels_total / evaluation_pairs_total.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from common.result_records import Label
from functions.evaluation.join import Half, Unpaired, Version
from functions.evaluation.matching import agree, classes_of, overlap


@dataclass(frozen=True)
class Comparison:
    version: Version
    first: Half
    second: Half
    top1_agree: bool
    overlap: int
    top_k: int

    @property
    def models(self) -> tuple[str, str]:
        return (self.first.model, self.second.model)

    def as_json(self) -> dict[str, Any]:
        return {
            **self.version.as_json(),
            "top1_agree": self.top1_agree,
            "top_k_overlap": self.overlap,
            "first": _side(self.first, self.top_k),
            "second": _side(self.second, self.top_k),
        }


def _score(label: Label) -> float | None:
    return None if math.isnan(label.score) else round(label.score, 6)


def _side(half: Half, top_k: int) -> dict[str, Any]:
    top = half.top
    return {
        "function": half.function,
        "model": half.model,
        "label": top.name if top else None,
        "score": _score(top) if top else None,
        "class_id": top.class_id if top else None,
        "imagenet_classes": sorted(classes_of(top)) if top else [],
        "top": [
            {"name": label.name, "score": _score(label), "class_id": label.class_id}
            for label in half.labels[:top_k]
        ],
    }


def compare(first: Half, second: Half, top_k: int) -> Comparison:
    return Comparison(
        version=first.version,
        first=first,
        second=second,
        top1_agree=agree(first.top, second.top),
        overlap=overlap(first.labels[:top_k], second.labels[:top_k]),
        top_k=top_k,
    )


class Tally:
    def __init__(self, registry: CollectorRegistry, top_k: int, keep: int) -> None:
        self.top_k = top_k
        self.recent: deque[Comparison] = deque(maxlen=keep)
        self.pairs = 0
        self.agreements = 0
        self.overlap_sum = 0
        self.duplicates = 0
        self.unpaired: dict[str, int] = {}
        self._results = Counter(
            "evaluation_results",
            "Classification results received, by function and model",
            ["function", "model"],
            registry=registry,
        )
        self._pairs = Counter(
            "evaluation_pairs",
            "Object versions both classifiers answered",
            ["first", "second"],
            registry=registry,
        )
        self._agree = Counter(
            "evaluation_top1_agree",
            "Pairs whose top-1 labels stand for the same ImageNet class",
            ["first", "second"],
            registry=registry,
        )
        self._overlap = Counter(
            "evaluation_top5_overlap",
            f"Pairs by how many of their top-{top_k} labels the two share",
            ["first", "second", "overlap"],
            registry=registry,
        )
        self._shared = Counter(
            "evaluation_top5_shared_labels",
            f"The top-{top_k} overlaps of all pairs, added up (divide by the pairs for the mean)",
            ["first", "second"],
            registry=registry,
        )
        self._unmatched = Counter(
            "evaluation_top1_unmatched",
            "Top-1 labels that name no ImageNet class (never an agreement)",
            ["function", "model"],
            registry=registry,
        )
        self._unpaired = Counter(
            "evaluation_unpaired",
            "Results dropped before their pair came: expired (waited too long) or capacity",
            ["function", "model", "reason"],
            registry=registry,
        )
        self._duplicates = Counter(
            "evaluation_duplicates",
            "A model's result for an object version it had already answered",
            registry=registry,
        )
        self.pending = Gauge(
            "evaluation_pending", "Results waiting for their pair", registry=registry
        )

    def received(self, half: Half) -> None:
        self._results.labels(half.function, half.model).inc()

    def duplicate(self) -> None:
        self.duplicates += 1
        self._duplicates.inc()

    def dropped(self, lost: Unpaired) -> None:
        self.unpaired[lost.reason] = self.unpaired.get(lost.reason, 0) + 1
        self._unpaired.labels(lost.half.function, lost.half.model, lost.reason).inc()

    def add(self, first: Half, second: Half) -> Comparison:
        comparison = compare(first, second, self.top_k)
        models = comparison.models
        self.pairs += 1
        self.overlap_sum += comparison.overlap
        self._pairs.labels(*models).inc()
        self._overlap.labels(*models, str(comparison.overlap)).inc()
        self._shared.labels(*models).inc(comparison.overlap)
        if comparison.top1_agree:
            self.agreements += 1
            self._agree.labels(*models).inc()
        for half in (first, second):
            if half.top is not None and not classes_of(half.top):
                self._unmatched.labels(half.function, half.model).inc()
        self.recent.append(comparison)
        return comparison

    def report(self, pending: int) -> dict[str, Any]:
        """The JSON report: totals since start, and the recent comparisons."""
        rows = [comparison.as_json() for comparison in self.recent]
        return {
            "pairs": self.pairs,
            "top1_agree": self.agreements,
            "top1_agreement": round(self.agreements / self.pairs, 4) if self.pairs else None,
            "top_k": self.top_k,
            "mean_top_k_overlap": round(self.overlap_sum / self.pairs, 4) if self.pairs else None,
            "pending": pending,
            "unpaired": dict(sorted(self.unpaired.items())),
            "duplicates": self.duplicates,
            "kept": len(rows),
            "comparisons": rows,
            "disagreements": [row for row in rows if not row["top1_agree"]],
        }
