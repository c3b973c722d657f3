"""A local stand-in for the Knative Channel: fan out, split, retry, dead-letter, reply.

    python -m localknative.dispatcher --knative-dir knative/base --channel rgw-events --port 8090 \
        --bind Service/receiver=http://127.0.0.1:8101 \
        --bind Configuration/resnet=http://127.0.0.1:8102 \
        --bind Configuration/vision=http://127.0.0.1:8103 \
        --bind Service/dead-letters=http://127.0.0.1:8104 \
        --bind Broker/default=http://127.0.0.1:8105 \
        --record dispatch.jsonl

The wiring comes from the manifests (`localknative.topology`); `--bind` says where each referenced
object listens locally. For every CloudEvent POSTed to `/`:

- each Subscription of the channel gets the event, all at once;
- a subscriber that is a Route gets it on one of its traffic targets, chosen by the event id:
  the first 8 bytes of sha256(id) modulo 100 pick a point on the cumulative percents. Knative
  picks at random; a hash splits just as evenly over many events, but a retry or a redelivery
  of one event lands on the same revision, and a test can tell where an event had to go;
- a failed attempt is retried as Knative's delivery block says: connection errors, timeouts and
  status 404, 408, 409, 429 and 5xx, `retry` times, waiting backoffDelay * 2^n (exponential) or
  backoffDelay * n (linear) after n retries (n = 0 before the first, as Knative counts);
- what fails for good goes to the deadLetterSink with Knative's extensions knativeerrordest,
  knativeerrorcode and knativeerrordata (base64 of the subscriber's answer, first 1 KiB);
- a 2xx answer that carries a CloudEvent is POSTed on to the Subscription's reply destination
  (with the same retries; an undeliverable reply is dead-lettered);
- the source gets 202 only when every subscription has delivered or dead-lettered its copy, and
  503 otherwise, so a persistent source (RGW's queue, the AMQP consumer) sends it again instead
  of losing it. (Knative's in-memory channel answers 202 at once and may lose events on a
  crash; this stand-in trades that latency for the no-loss guarantee.)

Each final outcome per (event, subscription) is appended to `--record` as one JSON line, which
`make demo` reads to show which function got which object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from common.cloudevents_http import STRUCTURED_CONTENT_TYPE, parse_request
from common.errors import InvalidCloudEvent, TooLarge
from common.logs import configure_logging
from common.runtime import read_body
from localknative.topology import (
    DeliverySpec,
    Destination,
    Ref,
    Subscription,
    Topology,
    TopologyError,
    load_topology,
)

log = logging.getLogger("dispatcher")

# Knative's SelectiveRetry: everything 5xx plus these; other 4xx are permanent.
RETRYABLE_STATUSES = frozenset({404, 408, 409, 429})
DEFAULT_ATTEMPT_TIMEOUT = 60.0
ERROR_DATA_LIMIT = 1024
# Hop-by-hop and length headers are the HTTP client's business, never forwarded.
_NOT_FORWARDED = frozenset(
    {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}
)


def split_point(event_id: str) -> int:
    """0..99: where an event falls on a Route's cumulative traffic percents."""
    digest = hashlib.sha256(event_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100


@dataclass(frozen=True)
class WeightedTarget:
    name: str  # e.g. Configuration/resnet
    percent: int
    url: str


def choose_target(targets: Sequence[WeightedTarget], event_id: str) -> WeightedTarget:
    """The traffic target an event goes to (see the module docstring)."""
    point = split_point(event_id)
    upper = 0
    for target in targets:
        upper += target.percent
        if point < upper:
            return target
    raise ValueError("traffic percents add up to less than 100")


def is_retryable(status: int | None) -> bool:
    """None stands for no answer at all (refused connection, reset, timeout)."""
    return status is None or status >= 500 or status in RETRYABLE_STATUSES


@dataclass(frozen=True)
class SubscriptionPlan:
    """One Subscription with every reference resolved to a local URL."""

    name: str
    targets: tuple[WeightedTarget, ...]
    reply_url: str | None
    dead_letter_url: str | None
    delivery: DeliverySpec


class Bindings:
    """Kind/name -> base URL of the local process playing that object."""

    def __init__(self, urls: Mapping[str, str]) -> None:
        self._urls = {key: url.rstrip("/") for key, url in urls.items()}

    @classmethod
    def parse(cls, pairs: Sequence[str]) -> Bindings:
        urls: dict[str, str] = {}
        for pair in pairs:
            key, sep, url = pair.partition("=")
            if not sep or not url.startswith(("http://", "https://")):
                raise TopologyError(f"--bind {pair!r}: expected Kind/name=http://host:port")
            urls[str(Ref.parse(key))] = url
        return cls(urls)

    def url_of(self, ref: Ref, where: str) -> str:
        try:
            return self._urls[str(ref)]
        except KeyError:
            raise TopologyError(
                f"{where} refers to {ref}, which has no local binding (--bind {ref}=URL)"
            ) from None

    def resolve(self, destination: Destination, where: str) -> str:
        if destination.ref is None:
            assert destination.uri is not None
            return destination.uri
        base = self.url_of(destination.ref, where)
        return base + (destination.uri or "")


def plan_channel(topology: Topology, channel: str, bindings: Bindings) -> list[SubscriptionPlan]:
    """Resolve every Subscription of `channel`; fails at start-up, not at the first event."""
    plans = []
    for sub in topology.subscriptions_of(channel):
        where = f"Subscription/{sub.name}"
        plans.append(
            SubscriptionPlan(
                name=sub.name,
                targets=_subscriber_targets(topology, sub, bindings),
                reply_url=bindings.resolve(sub.reply, f"{where} reply") if sub.reply else None,
                dead_letter_url=(
                    bindings.resolve(sub.delivery.dead_letter_sink, f"{where} deadLetterSink")
                    if sub.delivery.dead_letter_sink
                    else None
                ),
                delivery=sub.delivery,
            )
        )
    if not plans:
        raise TopologyError(f"Channel {channel!r} has no Subscriptions: nothing to deliver to")
    return plans


def _subscriber_targets(
    topology: Topology, sub: Subscription, bindings: Bindings
) -> tuple[WeightedTarget, ...]:
    where = f"Subscription/{sub.name} subscriber"
    ref = sub.subscriber.ref
    if ref is not None and ref.kind == "Route":
        suffix = sub.subscriber.uri or ""
        return tuple(
            WeightedTarget(str(t.target), t.percent, bindings.url_of(t.target, where) + suffix)
            for t in topology.traffic(ref.name)
            if t.percent > 0
        )
    name = str(ref) if ref is not None else str(sub.subscriber.uri)
    return (WeightedTarget(name, 100, bindings.resolve(sub.subscriber, where)),)


@dataclass(frozen=True)
class Message:
    """A CloudEvent as it travels: headers to forward and the body, untouched."""

    headers: dict[str, str]
    body: bytes

    @property
    def structured(self) -> bool:
        media = self.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        return media == STRUCTURED_CONTENT_TYPE

    def with_extensions(self, extensions: Mapping[str, str]) -> Message:
        """The same event with extra attributes, in whichever content mode it came."""
        if self.structured:
            document = json.loads(self.body)
            document.update(extensions)
            return Message(dict(self.headers), json.dumps(document).encode())
        headers = dict(self.headers)
        headers.update({f"ce-{name}": value for name, value in extensions.items()})
        return Message(headers, self.body)

    @classmethod
    def from_http(cls, headers: Mapping[str, str], body: bytes) -> Message:
        kept = {k.lower(): v for k, v in headers.items() if k.lower() not in _NOT_FORWARDED}
        return cls(kept, body)


@dataclass(frozen=True)
class Answer:
    """What a subscriber answered to one attempt."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class Unanswered(Exception):
    """No answer at all: refused or reset connection, timeout."""


class Poster:
    """POSTs with one keep-alive connection pool for every target.

    aiohttp rather than httpx: on this hot path (three POSTs per event) httpx's pure-Python
    connection pool and h11 parser cost about 3 ms of CPU per event, aiohttp's C parser a fraction
    of that (benchmarks/bench_pipeline.py, the dispatcher row).
    """

    # Below uvicorn's 5 s keep-alive, so that we never send on a connection the server is
    # closing at that very moment (which would cost a retry and its backoff).
    KEEPALIVE_SECONDS = 4.0

    def __init__(self, max_connections: int = 200) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Created on first use: aiohttp binds the session to the running event loop.
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, limit_per_host=0, keepalive_timeout=self.KEEPALIVE_SECONDS
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            # Forward the event's own headers only: no invented Content-Type for a body
            # that came without one.
            skip_auto_headers=("Content-Type",),
            auto_decompress=False,
        )

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> Answer:
        if self._session is None:
            self._session = self._open()
        try:
            async with self._session.post(
                url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                return Answer(response.status, response.headers, await response.read())
        except TimeoutError:
            raise Unanswered(f"TimeoutError: no answer within {timeout:g} s") from None
        except aiohttp.ClientError as exc:
            text = str(exc)
            raise Unanswered(
                f"{type(exc).__name__}: {text}" if text else type(exc).__name__
            ) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def reply_in(response: Answer) -> Message | None:
    """The CloudEvent a subscriber answered with, if any (binary or structured mode)."""
    if not 200 <= response.status < 300 or not response.body:
        return None
    message = Message.from_http(response.headers, response.body)
    if "ce-id" in message.headers or message.structured:
        try:
            parse_request(message.headers, message.body)
        except InvalidCloudEvent as exc:
            log.warning("subscriber replied with an invalid CloudEvent", extra={"why": str(exc)})
            return None
        return message
    return None


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
    ) -> None:
        self.plans = list(plans)
        self.client = client
        self.record = record
        self.attempt_timeout = attempt_timeout

    async def send(self, url: str, message: Message, delivery: DeliverySpec) -> Attempted:
        """POST with Knative's retry rules; returns after success, a permanent error or the
        last retry."""
        timeout = delivery.timeout or self.attempt_timeout
        attempts = 0
        while True:
            attempts += 1
            status: int | None = None
            response: Answer | None = None
            error: str | None = None
            try:
                response = await self.client.post(url, message.headers, message.body, timeout)
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

    async def deliver(self, plan: SubscriptionPlan, message: Message, event_id: str) -> Outcome:
        started = time.perf_counter()
        target = choose_target(plan.targets, event_id)
        result = await self.send(target.url, message, plan.delivery)
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
                        extra={"event_id": event_id, "reply_url": plan.reply_url},
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
        self._write(event_id, message, done)
        return done

    async def dispatch(self, message: Message, event_id: str) -> list[Outcome]:
        return list(await asyncio.gather(*(self.deliver(p, message, event_id) for p in self.plans)))

    def _write(self, event_id: str, message: Message, outcome: Outcome) -> None:
        entry: dict[str, Any] = {
            "time": time.time(),
            "event_id": event_id,
            "subject": message.headers.get("ce-subject"),
            **vars(outcome),
        }
        level = logging.INFO if outcome.outcome == "delivered" else logging.WARNING
        log.log(
            level, f"{outcome.subscription} -> {outcome.target}: {outcome.outcome}", extra=entry
        )
        if self.record is not None:
            self.record.write(json.dumps(entry) + "\n")
            self.record.flush()


# A channel holds whole events in memory; S3 notification events are a few KiB.
MAX_BODY_BYTES = 4 * 1024 * 1024


def create_app(dispatcher: Dispatcher, max_body_bytes: int = MAX_BODY_BYTES) -> Starlette:
    async def receive(request: Request) -> Response:
        try:
            body = await read_body(request, max_body_bytes)
        except TooLarge as exc:
            return JSONResponse({"error": exc.code, "message": exc.message}, exc.status)
        message = Message.from_http(request.headers, body)
        try:
            event = parse_request(message.headers, body)
        except InvalidCloudEvent as exc:
            return JSONResponse({"error": "invalid-cloudevent", "message": str(exc)}, 400)
        outcomes = await dispatcher.dispatch(message, event.get_id())
        unsettled = [o for o in outcomes if not o.settled]
        if unsettled:
            return JSONResponse(
                {
                    "error": "not-delivered",
                    "message": "some subscribers neither took the event nor could it be "
                    "dead-lettered; send it again",
                    "subscriptions": [o.subscription for o in unsettled],
                },
                503,
            )
        return Response(status_code=202)

    async def health(_: Request) -> Response:
        return JSONResponse({"ready": True})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await dispatcher.client.close()

    return Starlette(
        routes=[
            Route("/", receive, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m localknative.dispatcher",
        description="Play a Knative Channel locally, wired from the manifests.",
    )
    parser.add_argument("--knative-dir", type=Path, required=True, help="e.g. knative/base")
    parser.add_argument("--channel", default="rgw-events", help="Channel name (default rgw-events)")
    parser.add_argument("--port", type=int, required=True, help="port on --host")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--bind",
        action="append",
        default=[],
        metavar="KIND/NAME=URL",
        help="where an object of the manifests listens locally (repeat for each)",
    )
    parser.add_argument("--record", type=Path, help="append each outcome to this JSON-lines file")
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=MAX_BODY_BYTES,
        help=f"largest event accepted; larger gets 413 (default {MAX_BODY_BYTES})",
    )
    parser.add_argument(
        "--attempt-timeout",
        type=float,
        default=DEFAULT_ATTEMPT_TIMEOUT,
        help="seconds per delivery attempt when the manifests set no delivery.timeout",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    args = build_parser().parse_args(argv)
    configure_logging("INFO", {"service": "dispatcher"})
    try:
        plans = plan_channel(
            load_topology(args.knative_dir), args.channel, Bindings.parse(args.bind)
        )
    except TopologyError as exc:
        sys.stderr.write(f"dispatcher: {exc}\n")
        return 2
    for plan in plans:
        log.info(
            f"subscription {plan.name}",
            extra={
                "targets": [vars(t) for t in plan.targets],
                "reply": plan.reply_url,
                "dead_letter": plan.dead_letter_url,
                "retry": plan.delivery.retry,
                "backoff": f"{plan.delivery.backoff_policy} {plan.delivery.backoff_delay}s",
            },
        )
    record = args.record.open("a", encoding="utf-8") if args.record else None
    try:
        app = create_app(
            Dispatcher(plans, Poster(), record, args.attempt_timeout), args.max_body_bytes
        )
        uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)
    finally:
        if record is not None:
            record.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
