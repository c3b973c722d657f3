"""W3C trace context on CloudEvents (the distributed-tracing extension), and optional OTLP export.

Every event carries a `traceparent` (`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`):
the source starts one where RGW's notification has none, and each function continues it: the same
trace id, a new span id of its own, whose parent is the incoming span. That span id goes in the
function's log lines (`trace_id`, `span_id`, `parent_span_id`), in its reply (`ce-traceparent`)
and in its error answers (which Knative copies into the dead letter's `knativeerrordata`).

With an OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT, read by `common.runtime`), each span is also
exported through the OpenTelemetry SDK over OTLP/HTTP (the optional `opentelemetry-sdk` and
`opentelemetry-exporter-otlp-proto-http` packages). Without one, nothing is exported and the SDK
is never imported.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_current: contextvars.ContextVar[Span | None] = contextvars.ContextVar("span", default=None)


@dataclass(frozen=True)
class TraceParent:
    """One W3C `traceparent` value."""

    trace_id: str
    span_id: str
    flags: str = "01"

    @classmethod
    def parse(cls, value: object) -> TraceParent | None:
        """The value if it is a valid version-00 traceparent (an all-zero id is invalid)."""
        if not isinstance(value, str):
            return None
        match = _TRACEPARENT.match(value.strip().lower())
        if match is None:
            return None
        version, trace_id, span_id, flags, rest = match.groups()
        if version == "ff" or (version == "00" and rest):
            return None
        if set(trace_id) == {"0"} or set(span_id) == {"0"}:
            return None
        return cls(trace_id, span_id, flags)

    @classmethod
    def new(cls) -> TraceParent:
        """The root of a new trace, sampled."""
        return cls(secrets.token_hex(16), secrets.token_hex(8))

    def child(self) -> TraceParent:
        """The same trace, a new span id."""
        return TraceParent(self.trace_id, secrets.token_hex(8), self.flags)

    def header(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


@dataclass(frozen=True)
class Span:
    """A span of this process: its own context and the parent it continues (if any)."""

    context: TraceParent
    parent: TraceParent | None

    def log_fields(self) -> dict[str, str]:
        fields = {"trace_id": self.context.trace_id, "span_id": self.context.span_id}
        if self.parent is not None:
            fields["parent_span_id"] = self.parent.span_id
        return fields


def traceparent_of(attributes: Mapping[str, Any]) -> TraceParent | None:
    return TraceParent.parse(attributes.get("traceparent"))


def current_span() -> Span | None:
    return _current.get()


class TraceFilter(logging.Filter):
    """Adds the current span's ids to every log record made while it is open."""

    def filter(self, record: logging.LogRecord) -> bool:
        span = _current.get()
        if span is not None:
            for name, value in span.log_fields().items():
                if not hasattr(record, name):
                    setattr(record, name, value)
        return True


def install_log_filter() -> None:
    """Trace ids on the root handlers' lines (call after the handlers are configured)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, TraceFilter) for f in handler.filters):
            handler.addFilter(TraceFilter())


class Tracer:
    """Opens spans; exports them over OTLP only when OTEL_EXPORTER_OTLP_ENDPOINT is set."""

    def __init__(self, service: str, endpoint: str | None = None) -> None:
        self.endpoint = endpoint
        self.service = service
        self._otel: Any = None
        self._provider: Any = None

    def start(self) -> None:
        """Set up the exporter (imports the SDK) if an endpoint is configured."""
        if self.endpoint is None or self._otel is not None:
            return
        from common import otlp  # the optional SDK, imported only here

        self._provider, self._otel = otlp.tracer(self.service, self.endpoint)

    def stop(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()
            self._provider = None
            self._otel = None

    @contextlib.contextmanager
    def span(
        self, name: str, parent: TraceParent | None, attributes: Mapping[str, Any] | None = None
    ) -> Iterator[Span]:
        """A span continuing `parent` (a new trace without one), current for the block."""
        if self._otel is None:
            span = Span(parent.child() if parent else TraceParent.new(), parent)
            token = _current.set(span)
            try:
                yield span
            finally:
                _current.reset(token)
            return
        from common import otlp

        with otlp.span(self._otel, name, parent, attributes or {}) as context:
            span = Span(context, parent)
            token = _current.set(span)
            try:
                yield span
            finally:
                _current.reset(token)
