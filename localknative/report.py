"""What the demo prints: one line per thing that happened, a progress bar, a summary table.

`Tracker` folds the three recordings (the dispatcher's outcomes, the Broker's results, the
dead-letter sink) into one row per uploaded object, keyed by the object key as uploaded (the
dispatcher records the event's subject decoded, the results carry the key in their data);
`Reporter` turns new facts into lines in the style of the seed's slides, e.g.

    channel   chelsea.jpg    delivered to receiver
    resnet    chelsea.jpg    classes: [285] Egyptian cat 0.69
    vision    coffee.jpg     label: espresso, Score: 0.873011

Which Subscriptions only take note (the receiver's: no `reply`) and which route to classifiers
comes from the manifests (`localknative.workloads.audit_subscriptions`), not from names here.
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import IO, Any

BAR_WIDTH = 30


@dataclass
class ObjectRow:
    """Everything known about one uploaded object so far."""

    key: str
    uploaded_at: float
    receiver_seen: bool = False  # an audit Subscription (the receiver's) delivered it
    routed_to: str | None = None  # the split's choice, e.g. "resnet"
    function: str | None = None  # who answered with a result
    model: str | None = None
    labels: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: float | None = None  # download + classify, measured by the function
    end_to_end_s: float | None = None  # upload started -> result at the Broker
    dead_letter: str | None = None  # why it was dead-lettered

    @property
    def status(self) -> str:
        if self.function is not None:
            return "classified"
        if self.dead_letter is not None:
            return "dead-lettered"
        return "pending"

    @property
    def top(self) -> dict[str, Any] | None:
        return self.labels[0] if self.labels else None

    def as_json(self) -> dict[str, Any]:
        top = self.top or {}
        return {
            "key": self.key,
            "status": self.status,
            "routed_to": self.routed_to,
            "function": self.function,
            "model": self.model,
            "top_label": top.get("name"),
            "score": top.get("score"),
            "class_id": top.get("class_id"),
            "labels": self.labels,
            "latency_ms": self.latency_ms,
            "end_to_end_s": self.end_to_end_s,
            "receiver_seen": self.receiver_seen,
            "dead_letter": self.dead_letter,
        }


def _short_target(name: str) -> str:
    return name.rsplit("/", 1)[-1]


class Tracker:
    """Folds recordings into rows; each `absorb_*` returns the lines worth printing."""

    def __init__(self, bucket: str, audit_subscriptions: Collection[str] = ()) -> None:
        self.bucket = bucket
        # Subscriptions without a reply: their delivery is a fact to print, not a routing.
        self.audit_subscriptions = frozenset(audit_subscriptions)
        self.rows: dict[str, ObjectRow] = {}
        self._seen: set[tuple[str, int]] = set()

    def expect(self, key: str, uploaded_at: float) -> None:
        self.rows.setdefault(key, ObjectRow(key, uploaded_at))

    def _row(self, key: str | None, when: float) -> ObjectRow | None:
        if not key:
            return None
        # Objects uploaded by hand while the stack runs (`make up`) get a row when first seen.
        return self.rows.setdefault(key, ObjectRow(key, when))

    def absorb_dispatch(self, entry: dict[str, Any]) -> list[str]:
        row = self._row(entry.get("subject"), float(entry["time"]))
        if row is None:
            return []
        target = _short_target(str(entry["target"]))
        if entry["subscription"] in self.audit_subscriptions:
            if entry["outcome"] == "delivered" and not row.receiver_seen:
                row.receiver_seen = True
                # What the dispatcher recorded: the channel's delivery, not the receiver's log.
                return [f"{'channel':<9} {row.key:<14} delivered to {target}"]
            return []
        row.routed_to = target
        if entry["outcome"] != "delivered":
            return [
                f"{'channel':<9} {row.key}: {entry['outcome']} at {target} "
                f"(status {entry['status']}, {entry['attempts']} attempt(s))"
            ]
        return []

    def absorb_result(self, entry: dict[str, Any]) -> list[str]:
        data = entry.get("data")
        if not isinstance(data, dict):
            return []
        items = data.get("results") if "results" in data else [data]
        lines = []
        source = str(entry["attributes"].get("source", ""))
        function = source.rstrip("/").rsplit("/", 1)[-1] or "?"
        for item in items or []:
            row = self._row(item.get("key"), float(entry["time"]))
            if row is None or row.function is not None:
                continue
            row.function = function
            row.model = item.get("model")
            row.labels = list(item.get("labels") or [])
            row.latency_ms = item.get("latency_ms")
            row.end_to_end_s = round(float(entry["time"]) - row.uploaded_at, 3)
            lines.append(result_line(row))
        return lines

    def absorb_dead_letter(self, entry: dict[str, Any]) -> list[str]:
        attributes = entry["attributes"]
        row = self._row(attributes.get("subject"), float(entry["time"]))
        if row is None or row.function is not None:
            return []
        code = attributes.get("knativeerrorcode", "no answer")
        row.dead_letter = f"status {code} from {attributes.get('knativeerrordest', '?')}"
        return [f"{'dead-letter':<9} {row.key}: {row.dead_letter}"]

    def done(self, keys: list[str]) -> int:
        return sum(1 for key in keys if self.rows[key].status != "pending")


def result_line(row: ObjectRow) -> str:
    top = row.top
    function = row.function or "?"
    if top is None:
        return f"{function:<9} {row.key}: no labels"
    if top.get("class_id") is None:
        # A labelling API (Vision) has names, no class index: the seed's vision printed this.
        text = f"label: {top['name']}, Score: {float(top['score']):.6f}"
    else:
        # The seed's resnet printed `classes: [285] Egyptian cat 0.71`.
        text = f"classes: [{top.get('class_id')}] {top['name']} {float(top['score']):.2f}"
    others = ", ".join(str(label["name"]) for label in row.labels[1:3])
    more = f"; then {others}" if others else ""
    timing = f"{row.latency_ms:.0f} ms" if row.latency_ms is not None else "?"
    return f"{function:<9} {row.key:<14} {text}{more}   [{row.model}, {timing}]"


class Reporter:
    """Prints lines and keeps a progress bar under them (redrawn in place on a terminal)."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self._bar: str | None = None
        self._last_counts: tuple[int, int] | None = None

    def line(self, text: str) -> None:
        if self.tty and self._bar is not None:
            self.out.write("\r\033[K")
        self.out.write(text + "\n")
        if self.tty and self._bar is not None:
            self.out.write(self._bar)
        self.out.flush()

    def progress(self, done: int, total: int, note: str = "") -> None:
        if total <= 0:
            return
        filled = BAR_WIDTH * done // total
        bar = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total} classified {note}"
        self._bar = bar
        if self.tty:
            self.out.write("\r\033[K" + bar)
            self.out.flush()
        elif (done, total) != self._last_counts:
            # Not a terminal (a log, CI): one line per change, without the ticking clock.
            self.out.write(
                f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total} classified\n"
            )
            self.out.flush()
        self._last_counts = (done, total)

    def end_progress(self) -> None:
        if self.tty and self._bar is not None:
            self.out.write("\n")
            self.out.flush()
        self._bar = None


def summary_table(rows: list[ObjectRow]) -> str:
    """The Markdown table printed at the end."""
    lines = [
        "| object | function | top label | score | model latency | end to end |",
        "|---|---|---|---:|---:|---:|",
    ]
    for row in rows:
        top = row.top or {}
        score = f"{float(top['score']):.4f}" if top else "-"
        latency = f"{row.latency_ms:.0f} ms" if row.latency_ms is not None else "-"
        e2e = f"{row.end_to_end_s:.2f} s" if row.end_to_end_s is not None else "-"
        function = row.function or (f"{row.routed_to} (no result)" if row.routed_to else "-")
        label = top.get("name") or (row.dead_letter or "(none yet)")
        lines.append(f"| {row.key} | {function} | {label} | {score} | {latency} | {e2e} |")
    return "\n".join(lines)
