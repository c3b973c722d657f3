"""The results service's HTTP app: result CloudEvents in, the page, JSON and live updates out.

    POST /                 a result CloudEvent (what Trigger `results` delivers); 202 when kept
    POST /dead-letters     a dead letter (the failed event with Knative's knativeerror* marks)
    GET  /                 the page: one card per object version, filters, agreement, live
    GET  /api/results      the same cards as JSON (?label=cat&function=resnet&flagged=true...)
    GET  /api/agreement    how often the classifiers agree on the objects both saw
    GET  /api/functions    the functions that sent results
    GET  /api/stream       server-sent events: `result` with {bucket, key, version} per update
    GET  /thumbnails       ?bucket=&key=&version= a JPEG thumbnail, read from RGW by the service
    GET  /health/readiness, /health/liveness

A refused event (not a CloudEvent: 400; an unknown type or a malformed result: 422; too large:
413) is logged and nothing of it is kept. The schema is at /openapi.json, the docs at /docs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from common.cloudevents_http import parse_request
from common.errors import EventError, InvalidCloudEvent, TransientError
from results.records import Record, Refused, dead_letter_records, is_dead_letter, result_records
from results.schema import Accepted, Agreement, Problem, ResultsAnswer
from results.storage import Filters, Store
from results.stream import Hub
from results.thumbnails import Thumbnailer

log = logging.getLogger("results")
STATIC = Path(__file__).resolve().parent / "static"
MAX_EVENT_BYTES = 1024 * 1024
# The page builds every element with textContent; the policy makes sure nothing else runs even
# if a value slipped into markup: no inline script, no foreign origin.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "not a CloudEvent"},
    413: {"model": Problem, "description": "over the size limit"},
    422: {"model": Problem, "description": "an unknown event type or a malformed result"},
    503: {"model": Problem, "description": "the database is unreachable: retry"},
}


def create_app(store: Store, thumbnails: Thumbnailer) -> FastAPI:
    hub = Hub()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(store.create)
        yield
        hub.close()
        store.close()

    app = FastAPI(
        title="rgw-inference results",
        version="0.1.0",
        summary="What the pipeline said about each object",
        lifespan=lifespan,
    )
    app.state.hub = hub
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    async def ingest(request: Request, dead_letter: bool) -> Response:
        body = await request.body()
        if len(body) > MAX_EVENT_BYTES:
            return _refuse(413, "too-large", f"body over {MAX_EVENT_BYTES} bytes", request)
        try:
            event = parse_request(dict(request.headers), body)
            if dead_letter or is_dead_letter(event):
                records = dead_letter_records(event)
            else:
                records = result_records(event)
        except InvalidCloudEvent as exc:
            return _refuse(400, "invalid-cloudevent", exc.message, request)
        except Refused as exc:
            return _refuse(422, "refused", str(exc), request, event.get_id(), event.get_type())
        try:
            added = await run_in_threadpool(store.add, records)
        except Exception as exc:  # any database failure: the sender retries, nothing was kept
            log.exception("could not store an event", extra={"event_id": event.get_id()})
            return _refuse(503, "unavailable", f"database error: {type(exc).__name__}", request)
        _announce(hub, added)
        kind = records[0].kind if records else "none"
        log.info(
            f"kept {len(added)} {kind} record(s)",
            extra={"event_id": event.get_id(), "event_type": event.get_type(), "new": bool(added)},
        )
        return JSONResponse({"stored": len(added), "kind": kind}, status_code=202)

    @app.post("/", status_code=202, response_model=Accepted, responses=PROBLEMS)
    async def receive(request: Request) -> Response:
        """A result CloudEvent (binary or structured mode); one with Knative's knativeerror*
        extensions is kept as a dead letter."""
        return await ingest(request, dead_letter=False)

    @app.post("/dead-letters", status_code=202, response_model=Accepted, responses=PROBLEMS)
    async def receive_dead_letter(request: Request) -> Response:
        """A dead letter: the event that failed, naming its objects by its S3 records."""
        return await ingest(request, dead_letter=True)

    @app.get("/api/results", response_model=ResultsAnswer)
    def list_results(
        label: Annotated[
            str | None, Query(max_length=400, description="a function's top label contains it")
        ] = None,
        function: Annotated[str | None, Query(max_length=400)] = None,
        flagged: bool | None = None,
        dead_lettered: bool | None = None,
        bucket: Annotated[str | None, Query(max_length=255)] = None,
        key: Annotated[str | None, Query(max_length=1024)] = None,
        version: Annotated[str | None, Query(max_length=1024)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> dict[str, Any]:
        """One card per object version, the most recently updated first."""
        filters = Filters(label, function, flagged, dead_lettered, bucket, key, version, limit)
        cards = store.objects(filters)
        for card in cards:
            query = {"bucket": card["bucket"], "key": card["key"], "version": card["version"]}
            card["thumbnail"] = "/thumbnails?" + urlencode(query)
        return {"count": len(cards), "objects": cards}

    @app.get("/api/agreement", response_model=Agreement)
    def agreement() -> dict[str, Any]:
        """Top-1 agreement of the classifiers on the object versions more than one classified."""
        return store.agreement()

    @app.get("/api/functions", response_model=list[str])
    def functions() -> list[str]:
        return store.functions()

    @app.get("/api/stream", response_class=StreamingResponse)
    async def stream() -> StreamingResponse:
        """text/event-stream: `event: result`, data {bucket, key, version}, per new result."""
        return StreamingResponse(
            hub.stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    jpeg: dict[int | str, dict[str, Any]] = {200: {"content": {"image/jpeg": {}}}}

    @app.get("/thumbnails", response_class=Response, responses=jpeg)
    def thumbnail(
        bucket: Annotated[str, Query(max_length=255)],
        key: Annotated[str, Query(max_length=1024)],
        version: Annotated[str, Query(max_length=1024)] = "",
    ) -> Response:
        """A JPEG thumbnail of an object version this service holds a result for."""
        row = store.known(bucket, key, version)
        if row is None:
            return _problem(404, "unknown", "no result for this object version")
        try:
            thumb = thumbnails.get(bucket, key, version, row["version_id"])
        except EventError as exc:
            status = exc.status if not isinstance(exc, TransientError) else 502
            return _problem(status if status != 500 else 502, exc.code, exc.message)
        return Response(
            thumb.jpeg,
            media_type="image/jpeg",
            headers={"cache-control": "private, max-age=86400", "etag": thumb.etag},
        )

    @app.get("/", response_class=FileResponse, include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(
            STATIC / "index.html",
            headers={"content-security-policy": PAGE_POLICY, "cache-control": "no-cache"},
        )

    @app.get("/health/readiness", include_in_schema=False)
    def readiness() -> Response:
        ready = store.ping()
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    @app.get("/health/liveness", include_in_schema=False)
    def liveness() -> Response:
        return JSONResponse({"alive": True})

    return app


def _announce(hub: Hub, added: list[Record]) -> None:
    seen = set()
    for record in added:
        object_id = (record.bucket, record.key, record.version)
        if object_id not in seen:
            seen.add(object_id)
            hub.publish("result", dict(zip(("bucket", "key", "version"), object_id, strict=True)))


def _refuse(
    status: int,
    code: str,
    message: str,
    request: Request,
    event_id: str | None = None,
    event_type: str | None = None,
) -> Response:
    log.warning(
        f"refused an event: {message}",
        extra={
            "status": status,
            "path": request.url.path,
            "event_id": event_id,
            "event_type": event_type,
        },
    )
    return _problem(status, code, message)


def _problem(status: int, code: str, message: str) -> Response:
    return JSONResponse({"error": code, "message": message}, status_code=status)
