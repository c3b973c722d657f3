"""The function runtime: a `Function` with `handle` and lifecycle hooks becomes a FastAPI app.

Modelled on the Knative Functions Python template: the author writes `handle` and, if needed,
`start`, `stop`, `alive` and `ready`; the runtime owns HTTP, CloudEvents parsing, object-event
normalization, status codes, health endpoints, metrics, JSON logs and redelivery de-duplication.

Endpoints: `POST /` (a CloudEvent), `GET /health/liveness`, `GET /health/readiness`,
`GET /metrics` (Prometheus text format).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from threading import Lock
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from starlette.concurrency import run_in_threadpool

from common.cloudevents_http import BaseCloudEvent, parse_request, to_binary_headers
from common.env import ConfigError, Env, env_var
from common.errors import EventError, TooLarge
from common.events import ObjectEvent, parse_object_events
from common.logs import configure_logging

log = logging.getLogger("function")
T = TypeVar("T")

RUNTIME = "Function runtime (every function container)"
PORT = env_var(
    "PORT", "Port the HTTP server listens on (Knative's runtime contract).", RUNTIME, "8080"
)
HOST = env_var(
    "HOST",
    "Address to bind. Loopback by default; container images set 0.0.0.0.",
    RUNTIME,
    "127.0.0.1",
)
LOG_LEVEL = env_var("LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR.", RUNTIME, "INFO")
MAX_EVENT_BYTES = env_var(
    "MAX_EVENT_BYTES",
    "Largest CloudEvent request body accepted; larger gets 413.",
    RUNTIME,
    str(1024 * 1024),
)
MAX_RECORDS_PER_EVENT = env_var(
    "MAX_RECORDS_PER_EVENT",
    "Most object records one CloudEvent may carry; more gets 413.",
    RUNTIME,
    "100",
)
DEDUP_WINDOW = env_var(
    "DEDUP_WINDOW",
    "How many recent CloudEvent ids a function remembers to drop redeliveries (0 = off).",
    RUNTIME,
    "10000",
)
K_SERVICE = env_var("K_SERVICE", "Set by Knative: service name, added to log lines.", RUNTIME)
K_REVISION = env_var("K_REVISION", "Set by Knative: revision name, added to log lines.", RUNTIME)
K_CONFIGURATION = env_var(
    "K_CONFIGURATION", "Set by Knative: configuration name, added to log lines.", RUNTIME
)


@dataclass(frozen=True)
class RuntimeSettings:
    port: int = 8080
    host: str = "127.0.0.1"
    log_level: str = "INFO"
    max_event_bytes: int = 1024 * 1024
    max_records_per_event: int = 100
    dedup_window: int = 10000
    k_service: str | None = None
    k_revision: str | None = None
    k_configuration: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RuntimeSettings:
        env = Env(environ)
        level = (env.string(LOG_LEVEL) or "INFO").upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError(f"LOG_LEVEL: expected DEBUG, INFO, WARNING or ERROR, got {level!r}")
        return cls(
            port=env.integer(PORT, 1, 65535),
            host=env.required_str(HOST),
            log_level=level,
            max_event_bytes=env.integer(MAX_EVENT_BYTES, 1024),
            max_records_per_event=env.integer(MAX_RECORDS_PER_EVENT, 1),
            dedup_window=env.integer(DEDUP_WINDOW, 0),
            k_service=env.string(K_SERVICE),
            k_revision=env.string(K_REVISION),
            k_configuration=env.string(K_CONFIGURATION),
        )


@dataclass(frozen=True)
class Delivery:
    """One incoming CloudEvent and the object events it carries."""

    cloudevent: BaseCloudEvent
    objects: list[ObjectEvent]

    @property
    def event_id(self) -> str:
        return self.cloudevent.get_id()

    @property
    def event_type(self) -> str:
        return self.cloudevent.get_type()


class Function:
    """Base class for a function. Override `handle`; the hooks are optional.

    `__init__` reads configuration only (no I/O) so a bad variable stops the process at once;
    `start` opens clients; `ready` says whether the function can take events now.
    """

    name = "function"
    # `handle` runs in a worker thread so blocking I/O (boto3, gRPC) never stalls the event loop.
    # A function that does no I/O can say so and skip the thread hop.
    blocking = True

    def start(self) -> None:
        """Open clients (S3, gRPC, HTTP). Called once before the first event."""

    def stop(self) -> None:
        """Close clients. Called once at shutdown."""

    def alive(self) -> bool:
        return True

    def ready(self) -> bool:
        return True

    def handle(self, delivery: Delivery) -> BaseCloudEvent | None:
        """Handle one event; return a reply CloudEvent or None. Raise EventError subclasses."""
        raise NotImplementedError


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


def _error_response(exc: EventError, event_id: str | None) -> JSONResponse:
    body: dict[str, Any] = {"error": exc.code, "message": exc.message}
    if event_id:
        body["event_id"] = event_id
    return JSONResponse(body, status_code=exc.status)


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


def configured(build: Callable[[], T]) -> T:
    """Run `build` (settings, the function), turning a ConfigError into one line and exit 2."""
    try:
        return build()
    except ConfigError as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        raise SystemExit(2) from None


def create_app(factory: Callable[[], Function], settings: RuntimeSettings | None = None) -> FastAPI:
    """The ASGI app serving one function. Configuration is read here, at import time."""
    runtime = settings or configured(RuntimeSettings.from_env)
    configure_logging(
        runtime.log_level,
        {"service": runtime.k_service or "", "revision": runtime.k_revision or ""},
    )
    function = configured(factory)
    metrics = Metrics()
    recent = RecentIds(runtime.dedup_window)
    state = {"started": False}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(function.start)
        state["started"] = True
        log.info("function started", extra={"function": function.name})
        try:
            yield
        finally:
            state["started"] = False
            await run_in_threadpool(function.stop)
            log.info("function stopped", extra={"function": function.name})

    app = FastAPI(title=function.name, lifespan=lifespan, docs_url=None, redoc_url=None)

    async def receive(request: Request) -> Response:
        started = time.perf_counter()
        metrics.received.inc()
        event_id: str | None = None
        fields: dict[str, Any] = {}
        try:
            body = await read_body(request, runtime.max_event_bytes)
            event = parse_request(request.headers, body)
            event_id = event.get_id()
            fields = {"event_id": event_id, "event_type": event.get_type()}
            dedup_key = (event.get_source(), event_id)
            if dedup_key in recent:
                metrics.duplicates.inc()
                log.info("duplicate event dropped", extra=fields)
                return Response(status_code=200)
            objects = parse_object_events(event.get_data(), event_id, runtime.max_records_per_event)
            delivery = Delivery(event, objects)
            if function.blocking:
                reply = await run_in_threadpool(function.handle, delivery)
            else:
                reply = function.handle(delivery)
            recent.add(dedup_key)
        except EventError as exc:
            metrics.failed.labels(str(exc.status), exc.code).inc()
            log.warning(
                exc.message,
                extra={**fields, "status": exc.status, "reason": exc.code, **_elapsed(started)},
            )
            return _error_response(exc, event_id)
        except Exception:
            metrics.failed.labels("500", "internal").inc()
            log.exception("unexpected error while handling an event", extra=fields)
            return JSONResponse(
                {"error": "internal", "message": "unexpected error; see the function's log"},
                status_code=500,
            )
        finally:
            metrics.latency.observe(time.perf_counter() - started)
        metrics.handled.inc()
        # The function logs its own line per object; this summary is for debugging only.
        log.debug("event handled", extra={**fields, "status": 200, **_elapsed(started)})
        if reply is None:
            return Response(status_code=200)
        headers, payload = to_binary_headers(reply)
        return Response(content=payload, status_code=200, headers=headers)

    async def liveness(_: Request) -> JSONResponse:
        alive = function.alive()
        return JSONResponse({"alive": alive}, status_code=200 if alive else 503)

    async def readiness(_: Request) -> JSONResponse:
        ready = state["started"] and function.ready()
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def prometheus_metrics(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # Plain Starlette routes: the CloudEvent is parsed by the binding, so FastAPI's per-request
    # validation machinery would only add latency.
    app.add_route("/", receive, methods=["POST"])
    app.add_route("/health/liveness", liveness, methods=["GET"])
    app.add_route("/health/readiness", readiness, methods=["GET"])
    app.add_route("/metrics", prometheus_metrics, methods=["GET"])

    return app


def _elapsed(started: float) -> dict[str, float]:
    return {"latency_ms": round((time.perf_counter() - started) * 1000, 2)}


def serve(app: FastAPI, settings: RuntimeSettings | None = None) -> None:
    """Run the app with uvicorn on $HOST:$PORT (what the container images start)."""
    import uvicorn

    runtime = settings or RuntimeSettings.from_env()
    uvicorn.run(
        app,
        host=runtime.host,
        port=runtime.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
    )
