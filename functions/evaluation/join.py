"""Two classifiers' results for one object version, joined: bounded, and honest about losses.

A result (one item of a `dev.rgwinference.classification.result` event's data) becomes a `Half`:
the object version it is about, the function and model that made it, its labels. The version is
the result identity's marker (common.result_records): `v:<versionId>` in a versioned bucket,
else `e:<ETag>`; a result with neither cannot be joined and is refused.

`Joiner.add` keeps a half until a half of the same version from another model arrives, then
hands back the pair. What waits is bounded twice, so memory is too:

- by count: at most `max_pending` versions wait; one more pushes the oldest out (`capacity`);
- by age: a half older than `max_wait` seconds is dropped at the next call (`expired`).

A dropped half is returned as `Unpaired` with its reason (the caller counts and logs it): its
pair never came in time (that classifier failed, was not routed the object, or is slower than
`max_wait`). The same model's result for a version again (a redelivery) is a `duplicate`, ignored
while waiting and after pairing, within a window of the last `max_pending` pairs.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from common.errors import UnsupportedPayload
from common.result_records import Label, ResultIdentity
from common.runtime_support import RecentIds

CAPACITY = "capacity"
EXPIRED = "expired"


@dataclass(frozen=True, order=True)
class Version:
    """One object version: bucket, key and the marker (v:<versionId> or e:<ETag>)."""

    bucket: str
    key: str
    marker: str

    def __str__(self) -> str:
        return f"{self.bucket}/{self.key}#{self.marker}"

    def as_json(self) -> dict[str, str]:
        return {"bucket": self.bucket, "key": self.key, "version": self.marker}


@dataclass(frozen=True)
class Half:
    version: Version
    function: str  # from the event's source, /functions/<name>
    model: str  # model id, name@version
    labels: tuple[Label, ...]
    received: float = 0.0  # the joiner's clock

    @property
    def top(self) -> Label | None:
        return self.labels[0] if self.labels else None


@dataclass(frozen=True)
class Unpaired:
    half: Half
    reason: str  # CAPACITY or EXPIRED


@dataclass
class Outcome:
    pair: tuple[Half, Half] | None = None
    duplicate: bool = False
    dropped: list[Unpaired] = field(default_factory=list)


def _label(item: Any, where: str) -> Label:
    if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
        raise UnsupportedPayload(f"{where}: a label needs a `name`")
    score = item.get("score")
    class_id = item.get("class_id")
    if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
        raise UnsupportedPayload(f"{where}: `score` must be a number")
    if class_id is not None and (isinstance(class_id, bool) or not isinstance(class_id, int)):
        raise UnsupportedPayload(f"{where}: `class_id` must be an integer")
    return Label(item["name"], float("nan") if score is None else float(score), class_id)


def _text(item: Mapping[str, Any], name: str, where: str) -> str | None:
    value = item.get(name)
    if value is not None and not isinstance(value, str):
        raise UnsupportedPayload(f"{where}: `{name}` must be a string")
    return value or None


def halves_of(source: str, data: Any, now: float) -> list[Half]:
    """The halves a result event carries (one result, or {"results": [...]})."""
    if not isinstance(data, Mapping):
        raise UnsupportedPayload("a classification result's data must be a JSON object")
    items = data.get("results", [data])
    if not isinstance(items, list) or not items:
        raise UnsupportedPayload("`results` must be a non-empty list")
    function = source.rstrip("/").rsplit("/", 1)[-1] or source
    halves = []
    for index, item in enumerate(items):
        where = f"result {index}"
        if not isinstance(item, Mapping):
            raise UnsupportedPayload(f"{where}: expected an object")
        bucket, key = _text(item, "bucket", where), _text(item, "key", where)
        model = _text(item, "model_id", where) or _text(item, "model", where)
        if bucket is None or key is None or model is None:
            raise UnsupportedPayload(f"{where}: needs `bucket`, `key` and `model_id` (or `model`)")
        identity = ResultIdentity(
            bucket, key, _text(item, "version_id", where), _text(item, "etag", where), model
        )
        if identity.marker == "-":
            raise UnsupportedPayload(
                f"{where}: {bucket}/{key} has neither `version_id` nor `etag`: "
                "no version to join by"
            )
        labels = item.get("labels") or []
        if not isinstance(labels, list):
            raise UnsupportedPayload(f"{where}: `labels` must be a list")
        halves.append(
            Half(
                Version(bucket, key, identity.marker),
                function,
                model,
                tuple(_label(label, f"{where} label {i}") for i, label in enumerate(labels)),
                now,
            )
        )
    return halves


class Joiner:
    """Pending halves by version, oldest first (see the module docstring). Not thread-safe:
    the app calls it from the event loop only."""

    def __init__(
        self, max_pending: int, max_wait: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_pending < 1 or max_wait <= 0:
            raise ValueError("max_pending must be >= 1 and max_wait > 0")
        self.max_pending = max_pending
        self.max_wait = max_wait
        self.clock = clock
        self._pending: OrderedDict[Version, Half] = OrderedDict()
        self._paired = RecentIds(max_pending)

    def __len__(self) -> int:
        return len(self._pending)

    def expire(self) -> list[Unpaired]:
        """Drop the halves that waited longer than max_wait."""
        dropped = []
        limit = self.clock() - self.max_wait
        while self._pending:
            version, half = next(iter(self._pending.items()))
            if half.received > limit:
                break
            del self._pending[version]
            dropped.append(Unpaired(half, EXPIRED))
        return dropped

    def add(self, half: Half) -> Outcome:
        outcome = Outcome(dropped=self.expire())
        if (str(half.version), half.model) in self._paired:
            outcome.duplicate = True
            return outcome
        waiting = self._pending.get(half.version)
        if waiting is not None:
            if waiting.model == half.model:
                outcome.duplicate = True
                return outcome
            del self._pending[half.version]
            for one in (waiting, half):
                self._paired.add((str(one.version), one.model))
            # Ordered by function name, so a table's columns stay put whoever answered first.
            first, second = sorted((waiting, half), key=lambda h: (h.function, h.model))
            outcome.pair = (first, second)
            return outcome
        self._pending[half.version] = half
        while len(self._pending) > self.max_pending:
            _, oldest = self._pending.popitem(last=False)
            outcome.dropped.append(Unpaired(oldest, CAPACITY))
        return outcome
