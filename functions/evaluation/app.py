"""The evaluation function: the two classifiers' results for each object version, side by side.

    classification result (CloudEvent) -> join by object version -> compare -> log, count

It takes `dev.rgwinference.classification.result` events (Trigger `evaluation` of
knative/overlays/evaluation), so it names that type in `event_types` instead of reading RGW
notifications; the rest is the function runtime's (status codes, metrics, redelivery window,
sender authentication). Besides the runtime's endpoints:

    GET /report   JSON: pairs, top-1 agreement, mean top-5 overlap, pending and unpaired
                  results, the recent comparisons and the disagreements among them
    GET /metrics  the runtime's cloudevents_* series and the evaluation_* counters

The join (functions.evaluation.join) and the state behind the report live in this process's
memory: one replica (the manifest's max-scale 1) sees both halves of a pair; a restart starts
the counts again, as Prometheus counters do.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from common.cloudevents_http import BaseCloudEvent
from common.errors import UnsupportedPayload
from common.runtime import Delivery, Function, create_app
from functions.evaluation.join import Joiner, Unpaired, halves_of
from functions.evaluation.settings import EvaluationSettings
from functions.evaluation.tally import Comparison, Tally

# common.classifier.RESULT_EVENT_TYPE; not imported from there, which would pull in boto3.
RESULT_EVENT_TYPE = "dev.rgwinference.classification.result"
TOP_K = 5  # the classifiers' default TOP_K, and the 5 of evaluation_top5_overlap
NAME = "evaluation"

log = logging.getLogger(NAME)


class Evaluation:
    """The joiner and the tally, and the log line of each pair and each lost half."""

    def __init__(self, settings: EvaluationSettings, registry: CollectorRegistry) -> None:
        self.joiner = Joiner(settings.max_pending, settings.max_wait)
        self.tally = Tally(registry, TOP_K, settings.keep)

    def take(self, source: str, data: Any) -> list[Comparison]:
        """Every result the event carries; the comparisons it completed."""
        halves = halves_of(source, _json(data), time.monotonic())  # all checked before any is kept
        done = []
        for half in halves:
            outcome = self.joiner.add(half)
            self._lost(outcome.dropped)
            if outcome.duplicate:
                self.tally.duplicate()
                continue
            self.tally.received(half)
            if outcome.pair is not None:
                comparison = self.tally.add(*outcome.pair)
                _log_comparison(comparison)
                done.append(comparison)
        self.tally.pending.set(len(self.joiner))
        return done

    def expire(self) -> None:
        """Drop (and count) what waited too long: called before anything reports."""
        self._lost(self.joiner.expire())
        self.tally.pending.set(len(self.joiner))

    def report(self) -> dict[str, Any]:
        self.expire()
        return self.tally.report(len(self.joiner))

    def _lost(self, dropped: list[Unpaired]) -> None:
        for lost in dropped:
            self.tally.dropped(lost)
            log.warning(
                f"no pair for {lost.half.version} from {lost.half.function}: {lost.reason}",
                extra={**lost.half.version.as_json(), "model": lost.half.model,
                       "reason": lost.reason},
            )  # fmt: skip


def _json(data: Any) -> Any:
    if isinstance(data, bytes | bytearray):
        try:
            return json.loads(data)
        except ValueError:
            raise UnsupportedPayload("a classification result's data must be JSON") from None
    return data


def _log_comparison(comparison: Comparison) -> None:
    sides = []
    for half in (comparison.first, comparison.second):
        top = half.top
        sides.append(f"{half.function} {top.name} {top.score:.4f}" if top else f"{half.function} -")
    verdict = "agree" if comparison.top1_agree else "disagree"
    log.info(
        f"{verdict}: {comparison.version.key}: {' | '.join(sides)}; "
        f"top-{comparison.top_k} overlap {comparison.overlap}",
        extra={**comparison.version.as_json(), "top1_agree": comparison.top1_agree,
               "overlap": comparison.overlap},
    )  # fmt: skip


class EvaluationFunction(Function):
    name = NAME
    blocking = False  # in-memory work only
    event_types = frozenset({RESULT_EVENT_TYPE})

    def __init__(self, settings: EvaluationSettings | None = None) -> None:
        self.settings = settings or EvaluationSettings.from_env()
        self.evaluation: Evaluation | None = None

    def instrument(self, registry: CollectorRegistry) -> None:
        self.evaluation = Evaluation(self.settings, registry)

    def refresh_metrics(self) -> None:
        self._evaluation().expire()

    def routes(self) -> Mapping[str, Callable[[], Any]]:
        return {"/report": self._evaluation().report}

    def handle(self, delivery: Delivery) -> BaseCloudEvent | None:
        event = delivery.cloudevent
        self._evaluation().take(event.get_source(), event.get_data())
        return None

    def _evaluation(self) -> Evaluation:
        assert self.evaluation is not None, "the runtime calls instrument() first"
        return self.evaluation


app = create_app(EvaluationFunction)
