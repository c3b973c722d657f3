"""What the demo prints: one line per thing that happened, a progress bar, a summary table.

`Tracker` folds the three recordings (the dispatcher's outcomes, the Broker's results, the
dead-letter sink) into one row per uploaded object, keyed by the object key as uploaded (the
dispatcher records the event's subject decoded, the results carry the key in their data);
`Reporter` turns new facts into lines in the style of the seed's slides, e.g.

    channel   chelsea.jpg    delivered to receiver
    resnet    chelsea.jpg    classes: [285] Egyptian cat 0.69
    vision    coffee.jpg     label: espresso, Score: 0.873011

Which Subscriptions only take note (the receiver's: no `reply`) or deliver to a function that
gives a verdict beside the classifiers (compliance), and which route to classifiers, comes from
the manifests (`localknative.workloads.audit_subscriptions`), not from names here. A result whose
CloudEvent type is not a classification (compliance's `compliance.verdict`) is kept as the row's
verdict and printed, e.g.

    compliance chelsea.jpg   not flagged: nsfw 0.0000 < 0.8   [open_nsfw@1, 40 ms]

but it never counts as the object's classification.
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import IO, Any

BAR_WIDTH = 30
# The classifiers' result type (common.classifier); any other result type is a verdict.
CLASSIFICATION_RESULT = "dev.rgwinference.classification.result"


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
    # Verdicts beside the classification, by function (compliance: score, flagged, ...).
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    noted: set[str] = field(default_factory=set)  # audit targets already printed
    refused_by: set[str] = field(default_factory=set)  # audit targets that never took it

    @property
    def awaiting_route(self) -> bool:
        """Classified, but the dispatcher's record of where the Route sent it not read yet."""
        return self.status == "classified" and self.routed_to is None

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
            "verdicts": self.verdicts,
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
        # Functions seen giving verdicts: once one has, a row waits for its verdict too.
        self.judges: set[str] = set()
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
            if entry["outcome"] == "delivered" and target not in row.noted:
                row.receiver_seen = True
                row.noted.add(target)
                # What the dispatcher recorded: the channel's delivery, not the receiver's log.
                return [f"{'channel':<9} {row.key:<14} delivered to {target}"]
            if entry["outcome"] != "delivered":
                row.refused_by.add(target)  # its dead letter is absorbed (and printed) apart
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
        kind = entry["attributes"].get("type")
        for item in items or []:
            row = self._row(item.get("key"), float(entry["time"]))
            if row is not None and kind is not None and kind != CLASSIFICATION_RESULT:
                self.judges.add(function)
                if function not in row.verdicts:
                    row.verdicts[function] = item
                    lines.append(verdict_line(function, row.key, item))
                continue
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
        return sum(1 for key in keys if self.settled(self.rows[key]))

    def settled(self, row: ObjectRow) -> bool:
        """Classified (or dead-lettered), and judged by every verdict function seen so far: the
        dispatcher records a delivery after the reply reached the Broker, so a verdict is read
        no later than the delivery it answers."""
        if row.status == "pending":
            return False
        if row.status == "dead-lettered":
            return True
        return all(j in row.verdicts or j in row.refused_by for j in self.judges)


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


def verdict_line(function: str, key: str, item: dict[str, Any]) -> str:
    """A verdict (compliance's) as the demo prints it."""
    score, threshold = item.get("score"), item.get("threshold")
    if score is None:
        return f"{function:<9} {key:<14} verdict (no score)"
    flagged = bool(item.get("flagged"))
    text = (
        f"{'flagged' if flagged else 'not flagged'}: nsfw {float(score):.4f} "
        f"{'>=' if flagged else '<'} {threshold}"
    )
    quarantine = item.get("quarantine")
    if isinstance(quarantine, dict):
        text += f", copied to s3://{quarantine.get('bucket')}"
    timing = f"{item['latency_ms']:.0f} ms" if item.get("latency_ms") is not None else "?"
    return (
        f"{function:<9} {key:<14} {text}   [{item.get('model_id') or item.get('model')}, {timing}]"
    )


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
    """The Markdown table printed at the end; a `verdict` column when verdicts came."""
    judges = sorted({name for row in rows for name in row.verdicts})
    lines = [
        "| object | function | top label | score | model latency | end to end |"
        + "".join(f" {name} |" for name in judges),
        "|---|---|---|---:|---:|---:|" + "---|" * len(judges),
    ]
    for row in rows:
        top = row.top or {}
        score = f"{float(top['score']):.4f}" if top else "-"
        latency = f"{row.latency_ms:.0f} ms" if row.latency_ms is not None else "-"
        e2e = f"{row.end_to_end_s:.2f} s" if row.end_to_end_s is not None else "-"
        function = row.function or (f"{row.routed_to} (no result)" if row.routed_to else "-")
        label = top.get("name") or (row.dead_letter or "(none yet)")
        verdicts = "".join(f" {_verdict_cell(row.verdicts.get(name))} |" for name in judges)
        lines.append(
            f"| {row.key} | {function} | {label} | {score} | {latency} | {e2e} |{verdicts}"
        )
    return "\n".join(lines)


def _verdict_cell(item: dict[str, Any] | None) -> str:
    if item is None or item.get("score") is None:
        return "-"
    return f"{'flagged' if item.get('flagged') else 'ok'} {float(item['score']):.4f}"
