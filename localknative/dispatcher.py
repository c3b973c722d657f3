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

With `--oidc-issuer URL` (the local issuer, `localknative.issuer`) it sends tokens the way
Knative's dispatcher does with `authentication-oidc`: each delivery to a target with an
`--audience Kind/name=AUDIENCE` carries `Authorization: Bearer <JWT>` for that audience, with
the Subscription's OIDC service account (in `--namespace`) as the subject; the token a sender
brought for the channel is never forwarded.

Each final outcome per (event, subscription) is appended to `--record` as one JSON line, which
`make demo` reads to show which function got which object. The parts: `localknative.routing`
(plans, split), `localknative.delivery` (retries, dead letters, replies, the record),
`localknative.poster` (the wire); this module is the HTTP app and the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from common.cloudevents_http import parse_request
from common.errors import InvalidCloudEvent, TooLarge
from common.logs import configure_logging
from common.runtime_support import read_body
from localknative.delivery import DEFAULT_ATTEMPT_TIMEOUT, Credentials, Dispatcher, EventAttributes
from localknative.poster import Message, Poster
from localknative.routing import Bindings, SubscriptionPlan, plan_channel, split_point
from localknative.topology import Ref, TopologyError, load_topology

# split_point stays importable from here: the fault scenarios compute where an event goes.
__all__ = ["Dispatcher", "create_app", "main", "split_point"]

log = logging.getLogger("dispatcher")

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
        outcomes = await dispatcher.dispatch(message, EventAttributes.of(event))
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
    parser.add_argument(
        "--oidc-issuer",
        metavar="URL",
        help="the local issuer (python -m localknative.issuer) to request tokens from",
    )
    parser.add_argument(
        "--audience",
        action="append",
        default=[],
        metavar="KIND/NAME=AUDIENCE",
        help="with --oidc-issuer: the audience of a target's tokens (repeat for each)",
    )
    parser.add_argument(
        "--namespace", default="default", help="namespace of the Subscriptions' identities"
    )
    return parser


def credentials(
    args: argparse.Namespace, plans: Sequence[SubscriptionPlan], poster: Poster
) -> Credentials | None:
    if args.oidc_issuer is None:
        return None
    from localknative.issuer import TokenClient, subscription_identity

    audiences: dict[str, str] = {}
    for pair in args.audience:
        ref, sep, audience = pair.partition("=")
        if not sep or not audience:
            raise TopologyError(f"--audience {pair!r}: expected Kind/name=AUDIENCE")
        audiences[str(Ref.parse(ref))] = audience
    subjects = {plan.name: subscription_identity(args.namespace, plan.name) for plan in plans}
    return Credentials(TokenClient(args.oidc_issuer, poster), audiences, subjects)


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    args = build_parser().parse_args(argv)
    configure_logging("INFO", {"service": "dispatcher"})
    poster = Poster()
    try:
        plans = plan_channel(
            load_topology(args.knative_dir), args.channel, Bindings.parse(args.bind)
        )
        signer = credentials(args, plans, poster)
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
            Dispatcher(plans, poster, record, args.attempt_timeout, signer), args.max_body_bytes
        )
        uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)
    finally:
        if record is not None:
            record.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
