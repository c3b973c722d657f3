"""What the demo's stack recorded, folded per object key.

The stack writes three JSON-lines files: the results (`results.jsonl`, the Broker: every
classification.result), the dead letters (`dead-letters.jsonl`, with Knative's knativeerror*
extensions) and the channel's own record of each delivery (`dispatch.jsonl`).

An object is *classified* when a classification.result for it reached the Broker,
*dead-lettered* when one of the classifiers' deliveries for it landed at the dead-letter sink,
and *lost* when RGW acknowledged its upload and neither happened. Dead-lettered is not lost: the
entry keeps the event, and `LiveStack.replay_dead_letters` sends it through the channel again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localknative.collector import read_entries

EXTENSIONS_OF_DEAD_LETTERS = ("knativeerrordest", "knativeerrorcode", "knativeerrordata")
# What the classifiers answer with; the Broker also gets other replies (compliance's verdicts),
# which are no classification.
CLASSIFICATION_RESULT = "dev.rgwinference.classification.result"

Entries = list[dict[str, Any]]


@dataclass
class Upload:
    """One PUT as the client saw it: acknowledged by RGW, or refused (with the error)."""

    key: str
    bucket: str
    started: float  # wall clock, comparable with the collectors' times
    acknowledged: bool
    error: str | None = None


@dataclass
class KeyOutcome:
    """What the recordings say about one object key."""

    results: list[tuple[float, str]] = field(default_factory=list)  # (time, function)
    labels: list[dict[str, Any]] = field(default_factory=list)  # of the first result
    dead: list[dict[str, Any]] = field(default_factory=list)  # classifier dead letters
    # (function, result id) of each result: a redelivery answered from the object's record
    # repeats its result's id, which a consumer drops; only a second id is a duplicate.
    result_ids: list[tuple[str, str]] = field(default_factory=list)

    @property
    def classified(self) -> bool:
        return bool(self.results)

    @property
    def duplicated(self) -> bool:
        """One function gave this object more than one distinct result (id)."""
        distinct = set(self.result_ids)
        return len(distinct) > len({function for function, _ in distinct})


@dataclass(frozen=True)
class Recordings:
    """The three files as they are now (complete lines only)."""

    results: Entries
    dead_letters: Entries
    dispatches: Entries

    @classmethod
    def read(cls, results: Path, dead_letters: Path, dispatches: Path) -> Recordings:
        return cls(read_entries(results), read_entries(dead_letters), read_entries(dispatches))

    def outcomes(
        self, keys: Iterable[str], receiver_url: str | Iterable[str]
    ) -> dict[str, KeyOutcome]:
        """Per key: its classification results (by function) and its classifiers' dead letters
        (those of `receiver_url`, the URL or URLs of the functions that are no classifier, are
        not counted)."""
        others = (receiver_url,) if isinstance(receiver_url, str) else tuple(receiver_url)
        wanted = {key: KeyOutcome() for key in keys}
        for entry in self.results:
            data = entry.get("data")
            if not isinstance(data, dict) or not is_classification(entry):
                continue
            function = str(entry["attributes"].get("source", "")).rstrip("/").rsplit("/", 1)[-1]
            for item in data.get("results", [data]):
                outcome = wanted.get(str(item.get("key")))
                if outcome is not None:
                    if not outcome.results:
                        outcome.labels = list(item.get("labels") or [])
                    outcome.results.append((float(entry["time"]), function))
                    # Results from before result ids existed count as one id per reply.
                    result_id = item.get("result_id") or entry["attributes"].get("id", "")
                    outcome.result_ids.append((function, str(result_id)))
        for entry in self.dead_letters:
            attributes = entry["attributes"]
            outcome = wanted.get(str(attributes.get("subject")))
            destination = str(attributes.get("knativeerrordest", ""))
            if outcome is not None and not destination.startswith(others):
                outcome.dead.append(entry)
        return wanted

    def dispatches_of(self, keys: Iterable[str], subscription: str) -> Entries:
        wanted = set(keys)
        return [
            e
            for e in self.dispatches
            if e.get("subject") in wanted and e["subscription"] == subscription
        ]

    def replies_to(self, event_id: str) -> int:
        """classification.results at the Broker answering this event id."""
        return sum(
            1
            for e in self.results
            if isinstance(e.get("data"), dict)
            and e["data"].get("event_id") == event_id
            and is_classification(e)
        )


def is_classification(entry: dict[str, Any]) -> bool:
    """A recorded event is a classification.result (entries without a type: older recordings)."""
    kind = entry.get("attributes", {}).get("type")
    return kind is None or kind == CLASSIFICATION_RESULT


def replayable(entry: dict[str, Any]) -> dict[str, Any]:
    """A dead letter's attributes without the knativeerror* marks: the event as first sent."""
    return {k: v for k, v in entry["attributes"].items() if k not in EXTENSIONS_OF_DEAD_LETTERS}
