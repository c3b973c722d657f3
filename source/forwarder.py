"""One push from RGW (an HTTP request or an AMQP message) -> CloudEvents -> the sink.

Both ways in share this: parse the body (S3 `Records`, or a CloudEvent RGW made itself), map each
record to its own CloudEvent, deliver them concurrently, and report one result the caller turns
into an answer (HTTP status, or AMQP ack/nack).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.v1.event import CloudEvent

from common.cloudevents_http import STRUCTURED_CONTENT_TYPE, parse_request
from common.errors import EventError
from common.tracing import TraceParent
from source.delivery import Attempt, Deliverer, Outcome, Verdict
from source.mapping import lineage, parse_body, request_id, to_cloudevent, with_overrides
from source.metrics import SourceMetrics
from source.settings import DeliverySettings

log = logging.getLogger("source")

INVALID_EVENT_TYPE = "dev.rgwinference.source.invalid"
INVALID_EVENT_SOURCE = "rgw-knative-source"


@dataclass
class PushResult:
    """The outcome of every event in one push, and why part of it was unusable (if so)."""

    outcomes: list[Outcome] = field(default_factory=list)
    invalid: str | None = None

    @property
    def settled(self) -> bool:
        """Every event is delivered, dead-lettered or deliberately dropped: safe to ack."""
        return all(outcome.settled for outcome in self.outcomes)

    @property
    def rejected(self) -> bool:
        """Unusable input that no dead-letter URL took: the HTTP pusher should hear 400."""
        return self.invalid is not None and Outcome.DEAD_LETTERED not in self.outcomes


def _is_cloudevent(headers: Mapping[str, str]) -> bool:
    lowered = {name.lower(): value for name, value in headers.items()}
    content_type = lowered.get("content-type", "").split(";", 1)[0].strip().lower()
    return "ce-specversion" in lowered or content_type == STRUCTURED_CONTENT_TYPE


def _push_trace(headers: Mapping[str, str]) -> TraceParent | None:
    """A `traceparent` the pusher sent along (HTTP header or ce- attribute), if any."""
    lowered = {name.lower(): value for name, value in headers.items()}
    return TraceParent.parse(lowered.get("traceparent") or lowered.get("ce-traceparent"))


def _trace(parent: TraceParent | None) -> TraceParent:
    """The source's span for one event: a child of the pusher's, else the root of a new trace
    (one per object event: each PUT is its own trace)."""
    return parent.child() if parent is not None else TraceParent.new()


class Forwarder:
    def __init__(
        self, settings: DeliverySettings, deliverer: Deliverer, metrics: SourceMetrics, way: str
    ) -> None:
        self.settings = settings
        self.deliverer = deliverer
        self.metrics = metrics
        self.way = way

    def events_of(self, headers: Mapping[str, str], body: bytes) -> list[BaseCloudEvent]:
        """The CloudEvents one push becomes; `EventError` if the push is unusable as a whole.

        A CloudEvent RGW made itself (Ceph >= 18 with `cloudevents=true`) is passed on as it is,
        overrides added. Plain records each become their own CloudEvent.
        """
        received = datetime.now(UTC)
        parent = _push_trace(headers)
        if _is_cloudevent(headers):
            event = parse_request(headers, body)
            data = event.get_data()
            extensions = lineage(
                _trace(parent), received, request_id(data) if isinstance(data, Mapping) else None
            )
            return [with_overrides(event, self.settings.overrides, extensions)]
        return [
            to_cloudevent(
                record,
                self.settings.region,
                self.settings.overrides,
                lineage(_trace(parent), received, request_id(record)),
            )
            for record in parse_body(body)
        ]

    async def handle(self, headers: Mapping[str, str], body: bytes) -> PushResult:
        received_at = time.monotonic()
        deadline = received_at + self.settings.deadline
        try:
            events = self.events_of(headers, body)
        except EventError as exc:
            self.metrics.received.labels(self.way).inc()
            return await self._invalid(body, exc.message, deadline)
        self.metrics.received.labels(self.way).inc(len(events))
        outcomes = await asyncio.gather(
            *(self.deliverer.deliver(event, received_at, deadline) for event in events)
        )
        return PushResult(list(outcomes))

    async def _invalid(self, body: bytes, reason: str, deadline: float) -> PushResult:
        """Unusable input: retrying cannot help, so it goes to the dead letter (if any) as a
        CloudEvent wrapping the raw body, and is never retried."""
        self.metrics.failed.labels("invalid").inc()
        log.error("unusable notification", extra={"reason": reason, "way": self.way})
        wrapper = CloudEvent(
            {
                "specversion": "1.0",
                "id": hashlib.sha256(body).hexdigest()[:32],
                "type": INVALID_EVENT_TYPE,
                "source": INVALID_EVENT_SOURCE,
                "datacontenttype": "text/plain; charset=utf-8",
            },
            body.decode("utf-8", errors="replace"),
        )
        refusal = Attempt(Verdict.PERMANENT, None, reason, body=reason.encode())
        outcome = await self.deliverer.dead_letter(wrapper, refusal, deadline)
        return PushResult([outcome], invalid=reason)
