"""Deliver CloudEvents to the sink (binary mode) with retries, and refused ones to a dead letter.

What an answer means (the classification is pure, `classify_status` / `classify_error`):
- 2xx: accepted.
- connection errors, timeouts, 5xx, 408 and 429: transient; retried with exponential backoff and
  jitter (honouring Retry-After) until the delivery deadline, then handed back to the caller,
  which hands it back to RGW or RabbitMQ (so nothing is lost while the sink is down).
- every other status (4xx, and 1xx/3xx, which a sink has no business answering): permanent;
  logged, counted and sent to DEAD_LETTER_URL (with Knative's knativeerror* extensions), then
  acknowledged. Without a dead-letter URL the event is dropped with an ERROR log line.

One httpx client per process; a semaphore bounds the requests in flight to the sink.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import logging
import random
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.v1.event import CloudEvent

from common.cloudevents_http import to_binary_headers
from source.metrics import SourceMetrics
from source.oidc_token import TokenFile
from source.settings import DeliverySettings

log = logging.getLogger("source.delivery")

RETRYABLE_STATUSES = frozenset({408, 429})
# Enough of a refusal's body to tell why, small enough for a header.
_ERROR_DATA_BYTES = 1024


class Verdict(enum.Enum):
    ACCEPTED = "accepted"
    RETRY = "retry"
    PERMANENT = "permanent"


class Outcome(enum.Enum):
    """What became of one event; all but RETRY_LATER may be acknowledged to RGW/RabbitMQ."""

    DELIVERED = "delivered"
    DEAD_LETTERED = "dead-lettered"
    DROPPED = "dropped"
    RETRY_LATER = "retry-later"

    @property
    def settled(self) -> bool:
        return self is not Outcome.RETRY_LATER


def classify_status(status: int) -> Verdict:
    if 200 <= status < 300:
        return Verdict.ACCEPTED
    if status >= 500 or status in RETRYABLE_STATUSES:
        return Verdict.RETRY
    return Verdict.PERMANENT


def classify_error(error: Exception) -> Verdict:
    """Errors without an answer: the sink may never have seen the event, so try again.

    Anything that is not a transport problem (a bug, a malformed URL) is raised, not retried.
    """
    if isinstance(error, httpx.TransportError):
        return Verdict.RETRY
    raise error


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Delay before retry number `attempt` (0-based): base * 2^attempt, capped, jittered into
    [d/2, d] so that many sources retrying at once spread out but never spin."""
    ceiling = min(cap, base * (2 ** min(attempt, 30)))
    return rng.uniform(ceiling / 2, ceiling)


def retry_after_seconds(headers: Mapping[str, str], cap: float) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), cap)
    except ValueError:
        return None  # an HTTP date: rare from a sink; our own backoff applies


@dataclass(frozen=True)
class Attempt:
    verdict: Verdict
    status: int | None
    detail: str
    retry_after: float | None = None
    body: bytes = b""


class Deliverer:
    def __init__(
        self,
        settings: DeliverySettings,
        metrics: SourceMetrics,
        client: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._client = client
        self._rng = rng or random.Random()
        self._slots: asyncio.Semaphore | None = None
        # Knative's token is for the sink's audience only: never sent to the dead-letter URL.
        token_file = settings.oidc_token_file
        self._sink_token = TokenFile(token_file) if token_file else None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(
                max_connections=self.settings.concurrency,
                max_keepalive_connections=self.settings.concurrency,
            )
            verify: ssl.SSLContext | bool = True
            if self.settings.ca_certs:
                # Eventing's own CA (transport-encryption), on top of the system's trust store.
                verify = ssl.create_default_context()
                verify.load_verify_locations(cadata=self.settings.ca_certs)
            self._client = httpx.AsyncClient(
                timeout=self.settings.attempt_timeout,
                limits=limits,
                follow_redirects=False,
                verify=verify,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def deliver(
        self, event: BaseCloudEvent, received_at: float | None = None, deadline: float | None = None
    ) -> Outcome:
        """Deliver one event; returns when it is settled or the deadline (monotonic) passed."""
        received_at = time.monotonic() if received_at is None else received_at
        deadline = received_at + self.settings.deadline if deadline is None else deadline
        self.metrics.in_flight.inc()
        try:
            attempt = await self._send_with_retries(self.settings.sink, event, deadline)
            if attempt.verdict is Verdict.ACCEPTED:
                self.metrics.delivered.inc()
                self.metrics.latency.observe(time.monotonic() - received_at)
                return Outcome.DELIVERED
            if attempt.verdict is Verdict.RETRY:
                self.metrics.failed.labels("gave_up").inc()
                log.warning(
                    "sink unavailable; event handed back for a later retry",
                    extra={"event_id": event.get_id(), "detail": attempt.detail},
                )
                return Outcome.RETRY_LATER
            self.metrics.failed.labels("refused").inc()
            return await self.dead_letter(event, attempt, deadline)
        finally:
            self.metrics.in_flight.dec()

    async def dead_letter(
        self, event: BaseCloudEvent, refusal: Attempt, deadline: float
    ) -> Outcome:
        """Send a refused event to DEAD_LETTER_URL, marked with Knative's error extensions."""
        fields = {"event_id": event.get_id(), "type": event.get_type(), "detail": refusal.detail}
        url = self.settings.dead_letter_url
        if url is None:
            log.error("sink refused the event and no DEAD_LETTER_URL is set: dropped", extra=fields)
            return Outcome.DROPPED
        marked = CloudEvent(
            {
                **event.get_attributes(),
                "knativeerrordest": self.settings.sink,
                "knativeerrorcode": str(refusal.status or 0),
                "knativeerrordata": base64.b64encode(refusal.body[:_ERROR_DATA_BYTES]).decode(),
            },
            event.get_data(),
        )
        attempt = await self._send_with_retries(url, marked, deadline)
        if attempt.verdict is Verdict.ACCEPTED:
            self.metrics.dead_lettered.inc()
            log.warning("sink refused the event; sent to the dead-letter URL", extra=fields)
            return Outcome.DEAD_LETTERED
        if attempt.verdict is Verdict.RETRY:
            log.warning(
                "dead-letter URL unavailable; event handed back for a later retry",
                extra={**fields, "dead_letter_detail": attempt.detail},
            )
            return Outcome.RETRY_LATER
        log.error(
            "sink and dead-letter URL both refused the event: dropped",
            extra={**fields, "dead_letter_detail": attempt.detail},
        )
        return Outcome.DROPPED

    async def _send_with_retries(self, url: str, event: BaseCloudEvent, deadline: float) -> Attempt:
        headers, body = to_binary_headers(event)
        retry = 0
        while True:
            if self._sink_token is not None and url == self.settings.sink:
                headers.pop("Authorization", None)
                headers.update(self._sink_token.authorization())
            attempt = await self._send_once(url, headers, body)
            if attempt.verdict is not Verdict.RETRY:
                return attempt
            delay = backoff_delay(
                retry, self.settings.backoff, self.settings.backoff_max, self._rng
            )
            if attempt.retry_after is not None:
                delay = max(delay, attempt.retry_after)
            if time.monotonic() + delay > deadline:
                return attempt
            self.metrics.retried.inc()
            log.info(
                "delivery failed, retrying",
                extra={"event_id": event.get_id(), "detail": attempt.detail, "delay_s": delay},
            )
            await asyncio.sleep(delay)
            retry += 1

    async def _send_once(self, url: str, headers: dict[str, str], body: bytes) -> Attempt:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.concurrency)
        async with self._slots:
            try:
                response = await self.client.post(url, headers=headers, content=body)
            except httpx.TransportError as exc:
                return Attempt(classify_error(exc), None, f"{type(exc).__name__}: {exc}")
        verdict = classify_status(response.status_code)
        return Attempt(
            verdict,
            response.status_code,
            f"HTTP {response.status_code}",
            retry_after_seconds(response.headers, self.settings.backoff_max),
            response.content,
        )
