"""The source's Prometheus metrics, in a registry of its own (served on GET /metrics)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # type: ignore[no-untyped-call]

# Upload-to-sink is tens of milliseconds when all is well, seconds to minutes while retrying.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class SourceMetrics:
    """Counters per event (one S3 record = one CloudEvent), not per HTTP request or message."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.received = Counter(
            "source_events_received",
            "Object events received from RGW (HTTP push or AMQP), redeliveries included",
            ["way"],
            registry=self.registry,
        )
        self.unauthenticated = Counter(
            "source_pushes_unauthenticated",
            "HTTP pushes refused with 401 because their path lacks the push secret "
            "(SOURCE_PUSH_SECRET); their body is never read nor forwarded",
            registry=self.registry,
        )
        self.delivered = Counter(
            "source_events_delivered", "CloudEvents the sink accepted (2xx)", registry=self.registry
        )
        self.retried = Counter(
            "source_delivery_retries",
            "Delivery attempts repeated after a transient failure (connection, timeout, 5xx, "
            "408, 429)",
            registry=self.registry,
        )
        self.failed = Counter(
            "source_events_failed",
            "Events not delivered: refused (permanent 4xx), invalid (not an S3 record), "
            "gave_up (handed back to RGW/RabbitMQ for a later retry)",
            ["reason"],
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            "source_events_dead_lettered",
            "Refused or invalid events accepted by DEAD_LETTER_URL",
            registry=self.registry,
        )
        self.latency = Histogram(
            "source_delivery_latency_seconds",
            "From receiving an event to the sink accepting it, retries included",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "source_deliveries_in_flight", "Events being delivered now", registry=self.registry
        )

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
