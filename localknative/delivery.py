"""The delivery loop of the local Channel: retries, dead letters, replies, the record.

For one event and one Subscription: POST to the target the split chose, retrying as the
`delivery` block says; park what fails for good at the deadLetterSink with Knative's
knativeerror* extensions; send a CloudEvent answer on to the `reply`; append the outcome to
the record as one JSON line, with the event's attributes as the CloudEvents binding decodes
them (a key with a space is `my dog.jpg` there, never `my%20dog.jpg`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from common.cloudevents_http import BaseCloudEvent
from localknative.poster import Answer, Message, Poster, Unanswered, reply_in
from localknative.routing import SubscriptionPlan, choose_target, is_retryable
from localknative.topology import DeliverySpec

if TYPE_CHECKING:
    from localknative.issuer import TokenClient

log = logging.getLogger("dispatcher")

DEFAULT_ATTEMPT_TIMEOUT = 60.0
ERROR_DATA_LIMIT = 1024


@dataclass(frozen=True)
class EventAttributes:
    """The attributes the dispatcher routes by and records, decoded by the binding."""

    id: str
    source: str
    type: str
    subject: str | None = None

    @classmethod
    def of(cls, event: BaseCloudEvent) -> EventAttributes:
        subject = event.get_subject()
        return cls(
            id=str(event.get_id()),
            source=str(event.get_source()),
            type=str(event.get_type()),
            subject=None if subject is None else str(subject),
        )


@dataclass(frozen=True)
class Credentials:
    """How the dispatcher authenticates to subscribers, as Knative's does with
    `authentication-oidc`: a token for the target's audience, with the Subscription's OIDC
    service account as the subject. A target without an audience gets no token (Knative adds
    one only when the destination has an audience)."""

    tokens: TokenClient
    audiences: Mapping[str, str]  # target (Kind/name) -> audience
    subjects: Mapping[str, str]  # Subscription name -> its identity (`sub`)

    def for_target(self, subscription: str, target: str) -> tuple[str, str] | None:
        audience = self.audiences.get(target)
        subject = self.subjects.get(subscription)
        return None if audience is None or subject is None else (subject, audience)


@dataclass(frozen=True)
class Attempted:
    """The last attempt of a delivery with retries."""

    ok: bool
    status: int | None
    attempts: int
    response: Answer | None
    error: str | None


@dataclass(frozen=True)
class Outcome:
    subscription: str
    target: str
    url: str
    outcome: str  # delivered | dead-lettered | dropped | failed
    status: int | None
    attempts: int
    replied: bool
    elapsed_ms: float
    error: str | None = None

    @property
    def settled(self) -> bool:
        """The source may forget the event: it is delivered, or parked where it can be seen."""
        return self.outcome in ("delivered", "dead-lettered", "dropped")


class Dispatcher:
    def __init__(
        self,
        plans: Sequence[SubscriptionPlan],
        client: Poster,
        record: IO[str] | None = None,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
        credentials: Credentials | None = None,
    ) -> None:
        self.plans = list(plans)
        self.client = client
        self.record = record
        self.attempt_timeout = attempt_timeout
        self.credentials = credentials

    async def send(
        self,
        url: str,
        message: Message,
        delivery: DeliverySpec,
        identity: tuple[str, str] | None = None,
    ) -> Attempted:
        """POST with Knative's retry rules; returns after success, a permanent error or the
        last retry. With an `identity` (subject, audience) each attempt carries a bearer token."""
        timeout = delivery.timeout or self.attempt_timeout
        attempts = 0
        while True:
            attempts += 1
            status: int | None = None
            response: Answer | None = None
            error: str | None = None
            try:
                headers = message.headers
                if identity is not None and self.credentials is not None:
                    token = await self.credentials.tokens.token(*identity)
                    headers = {**headers, "authorization": f"Bearer {token}"}
                response = await self.client.post(url, headers, message.body, timeout)
                status = response.status
            except Unanswered as exc:
                error = str(exc)
            if status is not None and 200 <= status < 300:
                return Attempted(True, status, attempts, response, None)
            retries_done = attempts - 1
            if not is_retryable(status) or retries_done >= delivery.retry:
                return Attempted(False, status, attempts, response, error)
            await asyncio.sleep(delivery.backoff(retries_done))

    async def dead_letter(
        self, plan: SubscriptionPlan, message: Message, failed_url: str, last: Attempted
    ) -> bool:
        assert plan.dead_letter_url is not None
        answer = last.response.body[:ERROR_DATA_LIMIT] if last.response is not None else b""
        if not answer and last.error:
            answer = last.error.encode()[:ERROR_DATA_LIMIT]
        extensions = {"knativeerrordest": failed_url}
        if last.status is not None:
            extensions["knativeerrorcode"] = str(last.status)
        if answer:
            extensions["knativeerrordata"] = base64.b64encode(answer).decode("ascii")
        parked = await self.send(
            plan.dead_letter_url, message.with_extensions(extensions), plan.delivery
        )
        return parked.ok

    async def deliver(
        self, plan: SubscriptionPlan, message: Message, event: EventAttributes
    ) -> Outcome:
        started = time.perf_counter()
        target = choose_target(plan.targets, event.id)
        identity = (
            self.credentials.for_target(plan.name, target.name)
            if self.credentials is not None
            else None
        )
        result = await self.send(target.url, message, plan.delivery, identity)
        replied = False
        if result.ok:
            outcome = "delivered"
            reply = reply_in(result.response) if result.response is not None else None
            if reply is not None and plan.reply_url is not None:
                sent = await self.send(plan.reply_url, reply, plan.delivery)
                replied = sent.ok
                if not sent.ok:
                    log.warning(
                        "reply not delivered",
                        extra={"event_id": event.id, "reply_url": plan.reply_url},
                    )
                    if plan.dead_letter_url is None or not await self.dead_letter(
                        plan, reply, plan.reply_url, sent
                    ):
                        outcome = "failed"
        elif plan.dead_letter_url is not None:
            parked = await self.dead_letter(plan, message, target.url, result)
            outcome = "dead-lettered" if parked else "failed"
        elif is_retryable(result.status):
            outcome = "failed"  # the source sends it again later
        else:
            outcome = "dropped"  # permanent, and nowhere to park it: Knative drops it too
        done = Outcome(
            subscription=plan.name,
            target=target.name,
            url=target.url,
            outcome=outcome,
            status=result.status,
            attempts=result.attempts,
            replied=replied,
            elapsed_ms=round((time.perf_counter() - started) * 1000, 2),
            error=result.error,
        )
        self._write(event, done)
        return done

    async def dispatch(self, message: Message, event: EventAttributes) -> list[Outcome]:
        return list(await asyncio.gather(*(self.deliver(p, message, event) for p in self.plans)))

    def _write(self, event: EventAttributes, outcome: Outcome) -> None:
        entry: dict[str, Any] = {
            "time": time.time(),
            "event_id": event.id,
            "subject": event.subject,
            "type": event.type,
            "source": event.source,
            **vars(outcome),
        }
        level = logging.INFO if outcome.outcome == "delivered" else logging.WARNING
        log.log(
            level, f"{outcome.subscription} -> {outcome.target}: {outcome.outcome}", extra=entry
        )
        if self.record is not None:
            self.record.write(json.dumps(entry) + "\n")
            self.record.flush()
