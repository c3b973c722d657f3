"""The OpenTelemetry SDK side of `common.tracing`: imported only when OTEL_EXPORTER_OTLP_ENDPOINT
is set, so a function without a collector never loads the SDK.

The span ids are the SDK's own: the span is started under the incoming `traceparent` (a remote
parent), and its context becomes the `traceparent` the function logs and replies with.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from common.tracing import TraceParent

try:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
except ImportError as exc:  # pragma: no cover - depends on the optional packages
    from common.env import ConfigError

    raise ConfigError(
        "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry SDK is not installed "
        "(pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http)"
    ) from exc


def tracer(service: str, endpoint: str) -> tuple[Any, Any]:
    """(provider, tracer) exporting in batches to `<endpoint>/v1/traces`."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    return provider, provider.get_tracer("rgw-inference")


@contextlib.contextmanager
def span(
    otel_tracer: Any, name: str, parent: TraceParent | None, attributes: Mapping[str, Any]
) -> Iterator[TraceParent]:
    context = None
    if parent is not None:
        remote = trace.SpanContext(
            trace_id=int(parent.trace_id, 16),
            span_id=int(parent.span_id, 16),
            is_remote=True,
            trace_flags=trace.TraceFlags(int(parent.flags, 16)),
        )
        context = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    kind = trace.SpanKind.CONSUMER
    clean = {k: v for k, v in attributes.items() if isinstance(v, str | int | float | bool)}
    with otel_tracer.start_as_current_span(
        name, context=context, kind=kind, attributes=clean
    ) as current:
        own = current.get_span_context()
        yield TraceParent(
            f"{own.trace_id:032x}", f"{own.span_id:016x}", f"{int(own.trace_flags):02x}"
        )
