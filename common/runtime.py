"""The function runtime: a `Function` with `handle` and lifecycle hooks becomes a FastAPI app.

Modelled on the Knative Functions Python template: the author writes `handle` and, if needed,
`start`, `stop`, `alive` and `ready`; the runtime owns HTTP, CloudEvents parsing, object-event
normalization, status codes, health endpoints, metrics, JSON logs and redelivery de-duplication.

Endpoints: `POST /` (a CloudEvent), `GET /health/liveness` and `/health/readiness`, `GET /metrics`,
and any read-only JSON endpoints the function adds (`Function.routes`).

A function takes RGW object notifications by default (`delivery.objects`); one that consumes
other events (the evaluation joins the classifiers' results) names their types in `event_types`
and reads `delivery.cloudevent` itself. Any other type is refused with 422, as before.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.concurrency import run_in_threadpool

# The AUTH_* variables are declared in common.auth; named here so that `rgw-inference config`
# (which lists the variables of common.runtime) documents them with the runtime's.
from common.auth import (  # noqa: F401
    AUTH_ALGORITHMS,
    AUTH_ALLOWED_SUBJECTS,
    AUTH_AUDIENCE,
    AUTH_CA_FILE,
    AUTH_ISSUER,
    AUTH_JWKS_MAX_AGE,
    AUTH_JWKS_MIN_REFRESH,
    AUTH_JWKS_TOKEN_FILE,
    AUTH_JWKS_URL,
    AUTH_LEEWAY_SECONDS,
    AUTH_OIDC_DISCOVERY_URL,
    SenderAuth,
    sender_auth_from_env,
)
from common.cloudevents_http import (
    BaseCloudEvent,
    parse_request,
    to_binary_headers,
    with_extensions,
)
from common.env import ConfigError, Env, env_var
from common.errors import EventError, UnsupportedPayload
from common.events import ObjectEvent, parse_object_events
from common.logs import configure_logging
from common.runtime_support import Metrics, RecentIds, read_body
from common.tracing import Span, Tracer, current_span, install_log_filter, traceparent_of

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
OTLP_ENDPOINT = env_var(
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTLP/HTTP collector base URL: each event's span goes to <URL>/v1/traces (needs the optional "
    "opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http). Unset: nothing is exported "
    "and the SDK is not imported; trace context still flows through the events.",
    RUNTIME,
)
OTEL_SERVICE_NAME = env_var(
    "OTEL_SERVICE_NAME",
    "service.name of the exported spans (default: the function's name).",
    RUNTIME,
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
    otlp_endpoint: str | None = None
    otel_service_name: str | None = None
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
            otlp_endpoint=_http_url(env.string(OTLP_ENDPOINT)),
            otel_service_name=env.string(OTEL_SERVICE_NAME),
            k_service=env.string(K_SERVICE),
            k_revision=env.string(K_REVISION),
            k_configuration=env.string(K_CONFIGURATION),
        )


def _http_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ConfigError(f"{OTLP_ENDPOINT.name}: expected an http(s) URL, got {value!r}")
    return value


@dataclass(frozen=True)
class Delivery:
    """One incoming CloudEvent and the object events it carries."""

    cloudevent: BaseCloudEvent
    objects: list[ObjectEvent]
    received_at: datetime | None = None  # when the runtime got the request (UTC)
    span: Span | None = None  # this function's span: same trace as the event, a new span id

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
    # None: RGW object notifications, normalized into `delivery.objects`. Else the CloudEvent
    # types the function takes as they are (`delivery.objects` is empty).
    event_types: ClassVar[frozenset[str] | None] = None

    def instrument(self, registry: CollectorRegistry) -> None:
        """Register the function's own Prometheus series; /metrics serves them with the
        runtime's. Called once, before `start`."""

    def refresh_metrics(self) -> None:
        """Bring derived series up to date; called before each /metrics answer."""

    def routes(self) -> Mapping[str, Callable[[], Any]]:
        """Extra read-only endpoints: `GET <path>` answers the callable's JSON-able value."""
        return {}

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


def _error_response(exc: EventError, event_id: str | None) -> JSONResponse:
    body: dict[str, Any] = {"error": exc.code, "message": exc.message}
    if event_id:
        body["event_id"] = event_id
    return JSONResponse(body, status_code=exc.status, headers=_trace_headers(body))


def _trace_headers(body: dict[str, Any] | None = None) -> dict[str, str]:
    """The span's traceparent on an answer; on an error, in its body too, which Knative copies
    into the dead letter (`knativeerrordata`), so a dead letter names the trace it ended."""
    span = current_span()
    if span is None:
        return {}
    if body is not None:
        body["traceparent"] = span.context.header()
    return {"traceparent": span.context.header()}


def configured(build: Callable[[], T]) -> T:
    """Run `build` (settings, the function), turning a ConfigError into one line and exit 2."""
    try:
        return build()
    except ConfigError as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        raise SystemExit(2) from None


def create_app(
    factory: Callable[[], Function],
    settings: RuntimeSettings | None = None,
    sender_auth: Callable[[], SenderAuth | None] = sender_auth_from_env,
) -> FastAPI:
    """The ASGI app serving one function. Configuration is read here, at import time."""
    runtime = settings or configured(RuntimeSettings.from_env)
    auth = configured(sender_auth)  # None unless AUTH_AUDIENCE is set (common.auth)
    configure_logging(
        runtime.log_level,
        {"service": runtime.k_service or "", "revision": runtime.k_revision or ""},
    )
    install_log_filter()
    function = configured(factory)
    tracer = Tracer(runtime.otel_service_name or function.name, runtime.otlp_endpoint)
    metrics = Metrics()
    function.instrument(metrics.registry)
    recent = RecentIds(runtime.dedup_window)
    state = {"started": False}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        tracer.start()
        if auth is not None:
            await run_in_threadpool(auth.start)
        await run_in_threadpool(function.start)
        state["started"] = True
        log.info("function started", extra={"function": function.name})
        try:
            yield
        finally:
            state["started"] = False
            await run_in_threadpool(function.stop)
            tracer.stop()
            log.info("function stopped", extra={"function": function.name})

    app = FastAPI(title=function.name, lifespan=lifespan, docs_url=None, redoc_url=None)

    async def receive(request: Request) -> Response:
        with ExitStack() as scope:
            return await handle_request(request, scope)

    async def handle_request(request: Request, scope: ExitStack) -> Response:
        started = time.perf_counter()
        received_at = datetime.now(UTC)
        metrics.received.inc()
        if auth is not None:
            # Before the body is read: a stranger's event costs nothing more than the check.
            refusal = await auth.check(request.headers.get("authorization"))
            if refusal is not None:
                metrics.unauthorized.labels(refusal.reason).inc()
                metrics.failed.labels(str(refusal.status), refusal.reason).inc()
                log.warning(
                    "sender refused: " + refusal.message,
                    extra={"status": refusal.status, "reason": refusal.reason},
                )
                return refusal.response()
        event_id: str | None = None
        fields: dict[str, Any] = {}
        try:
            body = await read_body(request, runtime.max_event_bytes)
            event = parse_request(request.headers, body)
            event_id = event.get_id()
            fields = {"event_id": event_id, "event_type": event.get_type()}
            # The span stays current (log lines, the answer's traceparent) until the answer.
            span = scope.enter_context(
                tracer.span(
                    f"{function.name} {event.get_type()}",
                    traceparent_of(event.get_attributes()),
                    {
                        "cloudevents.event_id": event_id,
                        "cloudevents.event_source": event.get_source(),
                    },
                )
            )
            dedup_key = (event.get_source(), event_id)
            if dedup_key in recent:
                metrics.duplicates.inc()
                log.info("duplicate event dropped", extra=fields)
                return Response(status_code=200, headers=_trace_headers())
            objects = objects_of(event, function, event_id, runtime.max_records_per_event)
            delivery = Delivery(event, objects, received_at, span)
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
            return Response(status_code=200, headers=_trace_headers())
        # The reply continues the trace: this function's span is its parent.
        reply = with_extensions(reply, {"traceparent": span.context.header()})
        headers, payload = to_binary_headers(reply)
        return Response(content=payload, status_code=200, headers=headers)

    async def liveness(_: Request) -> JSONResponse:
        alive = function.alive()
        return JSONResponse({"alive": alive}, status_code=200 if alive else 503)

    async def readiness(_: Request) -> JSONResponse:
        ready = state["started"] and function.ready()
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def prometheus_metrics(_: Request) -> Response:
        function.refresh_metrics()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # Plain Starlette routes: the CloudEvent is parsed by the binding, so FastAPI's per-request
    # validation machinery would only add latency.
    app.add_route("/", receive, methods=["POST"])
    app.add_route("/health/liveness", liveness, methods=["GET"])
    app.add_route("/health/readiness", readiness, methods=["GET"])
    app.add_route("/metrics", prometheus_metrics, methods=["GET"])
    for path, answer in function.routes().items():
        if path in RESERVED_PATHS:
            raise ValueError(f"{function.name}: {path} is the runtime's own endpoint")
        app.add_route(path, _json_endpoint(answer), methods=["GET"])

    return app


RESERVED_PATHS: Sequence[str] = ("/", "/health/liveness", "/health/readiness", "/metrics")


def _json_endpoint(answer: Callable[[], Any]) -> Callable[[Request], Any]:
    async def endpoint(_: Request) -> JSONResponse:
        return JSONResponse(answer())

    return endpoint


def objects_of(
    event: BaseCloudEvent, function: Function, event_id: str, max_records: int
) -> list[ObjectEvent]:
    """The object events a notification carries; none for a function that takes the event as it
    is (`event_types`), which must be of one of its types (else 422)."""
    if function.event_types is None:
        return parse_object_events(event.get_data(), event_id, max_records)
    if event.get_type() not in function.event_types:
        raise UnsupportedPayload(
            f"event type {event.get_type()!r}: {function.name} takes "
            f"{', '.join(sorted(function.event_types))}"
        )
    return []


def _elapsed(started: float) -> dict[str, float]:
    return {"latency_ms": round((time.perf_counter() - started) * 1000, 2)}


def serve(
    app: FastAPI,
    settings: RuntimeSettings | None = None,
    before_shutdown: Callable[[], None] | None = None,
    grace_seconds: int = 30,
) -> None:
    """Run the app with uvicorn on $HOST:$PORT (what the container images start). A server with
    endless responses (event streams) ends them in `before_shutdown`, or a stop waits out the
    grace period."""
    import uvicorn

    runtime = settings or RuntimeSettings.from_env()
    config = uvicorn.Config(
        app,
        host=runtime.host,
        port=runtime.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=grace_seconds,
    )

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            if before_shutdown is not None:
                before_shutdown()
            await super().shutdown(sockets=sockets)

    Server(config).run()
