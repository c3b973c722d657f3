"""The source's own environment variables, and its typed settings.

Declared on the project's one environment engine (`common.env`), so `rgw-inference config`
documents them with all the others: first Knative's source contract (K_SINK, K_CE_OVERRIDES,
DEAD_LETTER_URL), then the source's own. Every command-line flag of `python -m source` defaults
to one of these variables, so a Knative ContainerSource can configure everything through `env:`.
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from common.env import ConfigError, Env, env_var

SOURCE = "Source (RGW notifications to CloudEvents)"
K_SINK = env_var(
    "K_SINK",
    "Where CloudEvents go (injected by Knative ContainerSource / SinkBinding; or --sink).",
    SOURCE,
)
K_CE_OVERRIDES = env_var(
    "K_CE_OVERRIDES",
    'JSON {"extensions": {...}} applied to every outgoing event (Knative source contract).',
    SOURCE,
)
K_CA_CERTS = env_var(
    "K_CA_CERTS",
    "PEM CA certificates to trust for an https K_SINK, beside the system's (injected by a "
    "SinkBinding when Eventing's transport-encryption is on).",
    SOURCE,
)
DEAD_LETTER_URL = env_var(
    "DEAD_LETTER_URL", "Where events the sink refuses for good (4xx) are sent.", SOURCE
)


SOURCE_MODE = env_var(
    "SOURCE_MODE",
    "Way in when the command line names none: http (RGW pushes to us) or amqp (we consume "
    "RabbitMQ).",
    SOURCE,
)
SOURCE_LISTEN = env_var(
    "SOURCE_LISTEN",
    "HTTP way: host:port the receive adapter listens on for RGW pushes (default $HOST:$PORT).",
    SOURCE,
)
SOURCE_LISTEN_FD = env_var(
    "SOURCE_LISTEN_FD",
    "HTTP way: serve on this inherited listening socket (file descriptor number) instead of "
    "opening SOURCE_LISTEN, so the port keeps accepting while the source restarts (systemd "
    ".socket unit: 3). See docs/source.md.",
    SOURCE,
)
SOURCE_HEALTH_PORT = env_var(
    "SOURCE_HEALTH_PORT",
    "AMQP way: port of the health/metrics server (default $PORT).",
    SOURCE,
)
SOURCE_PUSH_ENDPOINT = env_var(
    "SOURCE_PUSH_ENDPOINT",
    "Set-up: the endpoint RGW pushes to. HTTP way: default http://<listen address>/ (on "
    "Kubernetes, the source Service's URL). AMQP way: default AMQP_URL (give one without a "
    "password: RGW 16.2 refuses it over amqp://).",
    SOURCE,
)
SOURCE_PUSH_SECRET = env_var(
    "SOURCE_PUSH_SECRET",
    "HTTP way: the secret RGW's pushes must carry as the push endpoint's last path segment; "
    "the set-up (here and `rgw-inference notifications setup`) appends it to the endpoint. "
    "Unset: every push is accepted. 24-256 letters, digits or ._~- (docs/source.md).",
    SOURCE,
    secret=True,
)
SOURCE_PUSH_SECRET_PREVIOUS = env_var(
    "SOURCE_PUSH_SECRET_PREVIOUS",
    "HTTP way: a former SOURCE_PUSH_SECRET still accepted during a rotation (RGW's queued "
    "entries keep the endpoint they were queued with).",
    SOURCE,
    secret=True,
)
SOURCE_OIDC_TOKEN_FILE = env_var(
    "SOURCE_OIDC_TOKEN_FILE",
    "OIDC token sent as `Authorization: Bearer` with every delivery to K_SINK, re-read when "
    "it changes; Knative's SinkBinding mounts it there when authentication-oidc is enabled. "
    "No such file: no header.",
    SOURCE,
    "/oidc/token",
)
SOURCE_REGION = env_var(
    "SOURCE_REGION",
    "Region put into the CloudEvent `source` when a record's awsRegion is empty (RGW's default "
    "zonegroup leaves it empty).",
    SOURCE,
    "default",
)
SINK_CONCURRENCY = env_var(
    "SINK_CONCURRENCY",
    "Most HTTP requests to the sink (and dead-letter URL) at once.",
    SOURCE,
    "64",
)
SINK_TIMEOUT = env_var("SINK_TIMEOUT", "Seconds per delivery attempt to the sink.", SOURCE, "10")
DELIVERY_DEADLINE = env_var(
    "DELIVERY_DEADLINE",
    "Seconds one event is retried inside the source before it is handed back (HTTP way: error "
    "status, RGW retries; AMQP way: nack with requeue).",
    SOURCE,
    "10",
)
RETRY_BACKOFF = env_var(
    "RETRY_BACKOFF",
    "First retry delay in seconds; doubles per attempt, with jitter.",
    SOURCE,
    "0.1",
)
RETRY_BACKOFF_MAX = env_var(
    "RETRY_BACKOFF_MAX", "Longest delay between two attempts, in seconds.", SOURCE, "5"
)
DRAIN_TIMEOUT = env_var(
    "DRAIN_TIMEOUT",
    "Seconds SIGTERM waits for in-flight deliveries to finish before the process exits.",
    SOURCE,
    "30",
)
AMQP_URL = env_var(
    "AMQP_URL", "AMQP way: broker URL, e.g. amqp://127.0.0.1:5672 (guest on loopback).", SOURCE
)
AMQP_QUEUE = env_var(
    "AMQP_QUEUE", "AMQP way: durable queue to consume (declared if missing).", SOURCE
)
AMQP_EXCHANGE = env_var(
    "AMQP_EXCHANGE",
    "AMQP way: topic exchange RGW publishes to; the queue is bound to it with the topic name "
    "as routing key (declared if missing).",
    SOURCE,
    "rgw",
)
AMQP_PREFETCH = env_var(
    "AMQP_PREFETCH",
    "AMQP way: most unacknowledged messages in flight (bounds concurrency).",
    SOURCE,
    "64",
)
SETUP_BUCKET = env_var(
    "SETUP_BUCKET",
    "On start, create the RGW topic and this bucket's notification pointing at the source "
    "(idempotent). Empty: no set-up.",
    SOURCE,
)
SETUP_TOPIC = env_var(
    "SETUP_TOPIC",
    "Topic name for the set-up (also the AMQP routing key). Default: the queue name (AMQP) or "
    "knative-source-<bucket> (HTTP).",
    SOURCE,
)
SETUP_EVENTS = env_var(
    "SETUP_EVENTS",
    "Comma-separated S3 events for the set-up; 'created' and 'removed' are short for "
    "s3:ObjectCreated:* and s3:ObjectRemoved:*.",
    SOURCE,
    "s3:ObjectCreated:*",
)
SETUP_PREFIX = env_var("SETUP_PREFIX", "Set-up: only keys starting with this.", SOURCE)
SETUP_SUFFIX = env_var(
    "SETUP_SUFFIX", "Set-up: only keys ending with one of these (comma-separated).", SOURCE
)
SETUP_NOTIFICATION_ID = env_var(
    "SETUP_NOTIFICATION_ID",
    "Set-up: the notification's Id on the bucket (default: the topic name).",
    SOURCE,
)
SETUP_AMQP_PERSISTENT = env_var(
    "SETUP_AMQP_PERSISTENT",
    "Set-up, AMQP way: make the RGW topic persistent (queued in RADOS while the broker is down). "
    "Off by default: radosgw 16.2.15 was seen to segfault with persistent AMQP topics; without "
    "it RGW publishes inside the PUT and waits for the broker's ack, and an event is lost only "
    "while the broker itself is down.",
    SOURCE,
    "false",
)

# Attribute names the overrides may not touch: they are the event's identity and its data.
_CORE_ATTRIBUTES = frozenset(
    {"id", "source", "type", "specversion", "time", "subject", "datacontenttype", "dataschema"}
)
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
EVENT_SHORTHANDS = {"created": "s3:ObjectCreated:*", "removed": "s3:ObjectRemoved:*"}


def parse_sink_url(value: str, name: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name}: expected an http(s) URL, got {value!r}")
    return value


def parse_overrides(value: str | None) -> dict[str, str]:
    """K_CE_OVERRIDES: `{"extensions": {"name": "value"}}` -> extension attributes."""
    if not value:
        return {}
    try:
        parsed: Any = json.loads(value)
    except ValueError:
        raise ConfigError(
            f'{K_CE_OVERRIDES.name}: expected JSON {{"extensions": {{...}}}}'
        ) from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("extensions", {}), dict):
        raise ConfigError(f'{K_CE_OVERRIDES.name}: expected JSON {{"extensions": {{...}}}}')
    extensions: dict[str, str] = {}
    for name, raw in parsed.get("extensions", {}).items():
        if name in _CORE_ATTRIBUTES or not _EXTENSION_NAME.match(name):
            raise ConfigError(
                f"{K_CE_OVERRIDES.name}: extension name {name!r} must be 1-20 lower-case letters "
                "or digits and not a core attribute"
            )
        if isinstance(raw, bool):
            raw = "true" if raw else "false"
        if not isinstance(raw, str | int | float):
            raise ConfigError(f"{K_CE_OVERRIDES.name}: extension {name!r} must be a scalar")
        extensions[name] = str(raw)
    return extensions


def parse_ca_certs(value: str | None) -> str | None:
    """K_CA_CERTS: PEM certificates, checked now rather than at the first delivery."""
    if not value:
        return None
    try:
        ssl.create_default_context().load_verify_locations(cadata=value)
    except (ssl.SSLError, ValueError):
        raise ConfigError(f"{K_CA_CERTS.name}: expected PEM CA certificates") from None
    return value


def parse_events(value: str) -> tuple[str, ...]:
    events = [EVENT_SHORTHANDS.get(item.strip(), item.strip()) for item in value.split(",")]
    return tuple(dict.fromkeys(event for event in events if event))


@dataclass(frozen=True)
class DeliverySettings:
    """How events reach the sink: where, how hard to try, what to do with refused ones."""

    sink: str
    dead_letter_url: str | None = None
    overrides: Mapping[str, str] | None = None
    concurrency: int = 64
    attempt_timeout: float = 10.0
    deadline: float = 10.0
    backoff: float = 0.1
    backoff_max: float = 5.0
    drain_timeout: float = 30.0
    region: str = "default"
    oidc_token_file: str | None = None
    ca_certs: str | None = None

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, sink: str | None = None
    ) -> DeliverySettings:
        env = Env(environ)
        sink = sink or env.string(K_SINK)
        if not sink:
            raise ConfigError(f"no sink: set {K_SINK.name} (Knative injects it) or pass --sink URL")
        dead_letter = env.string(DEAD_LETTER_URL)
        return cls(
            sink=parse_sink_url(sink, f"{K_SINK.name} / --sink"),
            dead_letter_url=parse_sink_url(dead_letter, DEAD_LETTER_URL.name)
            if dead_letter
            else None,
            overrides=parse_overrides(env.string(K_CE_OVERRIDES)),
            concurrency=env.integer(SINK_CONCURRENCY, 1, 10_000),
            attempt_timeout=env.number(SINK_TIMEOUT, 0.01),
            deadline=env.number(DELIVERY_DEADLINE, 0.01),
            backoff=env.number(RETRY_BACKOFF, 0.001),
            backoff_max=env.number(RETRY_BACKOFF_MAX, 0.001),
            drain_timeout=env.number(DRAIN_TIMEOUT, 0),
            region=env.required_str(SOURCE_REGION),
            oidc_token_file=env.string(SOURCE_OIDC_TOKEN_FILE),
            ca_certs=parse_ca_certs(env.string(K_CA_CERTS)),
        )
