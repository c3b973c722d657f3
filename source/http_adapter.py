"""The HTTP receive adapter: RGW pushes notifications here (persistent topic), we forward them.

RGW hears 2xx only once the sink accepted (or the dead letter took) every record of its request;
unusable input (no S3 notification) is logged, counted, dead-lettered and answered 202; otherwise
503, and RGW keeps the entry in its persistent queue and pushes it again later. So
nothing is lost while the sink or the functions are down, and a redelivered record maps to the
same CloudEvent id.

Routes: `POST <any path>` (RGW's push endpoint), `GET /health/liveness`, `GET /health/readiness`,
`GET /metrics`. The same operations routes serve the AMQP way (`operations_routes`). With a push
secret (source.push_auth), a push whose path does not end in it (nor carries it as a Basic
password) is answered 401, counted, and neither read nor forwarded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from source.forwarder import Forwarder
from source.metrics import SourceMetrics
from source.push_auth import PushAuth

log = logging.getLogger("source")

# RGW 16.2 pushes one record per request; this leaves room for AWS-style batches.
MAX_PUSH_BYTES = 4 * 1024 * 1024


def operations_routes(metrics: SourceMetrics, ready: Callable[[], bool]) -> list[Route]:
    async def liveness(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def readiness(_: Request) -> Response:
        if ready():
            return PlainTextResponse("ready")
        return PlainTextResponse("not ready", status_code=503)

    async def prometheus(_: Request) -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    return [
        Route("/health/liveness", liveness, methods=["GET"]),
        Route("/health/readiness", readiness, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]


def create_http_app(
    forwarder: Forwarder,
    metrics: SourceMetrics,
    ready: Callable[[], bool],
    push_auth: PushAuth | None = None,
) -> Starlette:
    async def receive(request: Request) -> Response:
        authorization = request.headers.get("authorization")
        if push_auth is not None and not push_auth.accepts_request(request.url.path, authorization):
            # Before the body is read: a stranger's push costs no parsing and reaches nobody.
            # RGW treats any non-2xx as failed: a persistent topic keeps the entry and pushes it
            # again (docs/source.md, "Push authentication"). The path is never logged.
            metrics.unauthenticated.inc()
            log.warning(
                "push refused: no valid push secret in the path",
                extra={"client": request.client.host if request.client else None},
            )
            return PlainTextResponse("push not authenticated", status_code=401)
        declared = int(request.headers.get("content-length") or 0)
        if declared > MAX_PUSH_BYTES:
            return PlainTextResponse("push body too large", status_code=413)
        body = await request.body()
        if len(body) > MAX_PUSH_BYTES:
            return PlainTextResponse("push body too large", status_code=413)
        result = await forwarder.handle(request.headers, body)
        if not result.settled:
            # RGW keeps the entry and pushes it again; records of this push that already got
            # through will come again with the same ids (at least once).
            return PlainTextResponse("sink unavailable, retry later", status_code=503)
        if result.invalid is not None:
            # Never 4xx: RGW retries every non-2xx answer, so an unusable entry would sit at the
            # head of its persistent queue and be pushed again forever. It was logged, counted
            # and dead-lettered (if a URL is set) instead.
            what = "dead-lettered" if not result.rejected else "dropped"
            return PlainTextResponse(
                f"unusable notification, {what}: {result.invalid}", status_code=202
            )
        return PlainTextResponse("ok")

    routes = [
        *operations_routes(metrics, ready),
        Route("/{path:path}", receive, methods=["POST", "PUT"]),
    ]
    return Starlette(routes=routes)
