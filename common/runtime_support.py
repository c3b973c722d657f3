"""Parts of the function runtime: its Prometheus metrics, its in-memory window of recently
handled event ids, and the bounded read of a request body."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from threading import Lock

from fastapi import Request
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

from common.errors import TooLarge

__all__ = ["Metrics", "RecentIds", "read_body"]


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        # The *_created series only add noise for counters like these.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.received = Counter(
            "cloudevents_received", "CloudEvents received on POST /", registry=self.registry
        )
        self.handled = Counter(
            "cloudevents_handled", "CloudEvents handled with a 2xx answer", registry=self.registry
        )
        self.failed = Counter(
            "cloudevents_failed",
            "CloudEvents answered with an error, by status and reason",
            ["status", "reason"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "cloudevents_duplicates",
            "Redelivered CloudEvents dropped by id",
            registry=self.registry,
        )
        # Sender authentication (common.auth): requests refused before reading the event.
        self.unauthorized = Counter(
            "cloudevents_unauthorized",
            "POST / requests refused by sender authentication, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cloudevent_handle_seconds",
            "Time from request to answer",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )


class RecentIds:
    """A bounded set of recently handled (source, id) pairs: at-least-once in, once out."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._ids: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = Lock()

    def __contains__(self, key: tuple[str, str]) -> bool:
        with self._lock:
            return key in self._ids

    def add(self, key: tuple[str, str]) -> None:
        if self._capacity == 0:
            return
        with self._lock:
            self._ids[key] = None
            self._ids.move_to_end(key)
            while len(self._ids) > self._capacity:
                self._ids.popitem(last=False)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with TooLarge (413) past `limit` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"request body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
