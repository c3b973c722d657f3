"""`python -m source {http,amqp}`: RGW bucket notifications -> CloudEvents -> a Knative sink.

Every flag falls back to an environment variable (named in --help), so a Knative ContainerSource
or SinkBinding configures the source with `env:` alone (K_SINK, K_CE_OVERRIDES are injected).
A bad or missing setting ends the process with one line naming it, and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from collections.abc import Mapping, Sequence

from botocore.exceptions import BotoCoreError

from common.env import ConfigError, Env, EnvVar
from common.logs import configure_logging
from common.runtime import HOST, LOG_LEVEL, PORT
from common.s3 import S3Settings
from source import settings as s
from source.amqp_consumer import AmqpSettings, BrokerUnavailable, declare_topology
from source.listener import inherited_listener, listen_address
from source.notification_specs import SpecError
from source.notifications import NotificationError
from source.push_auth import PushAuth, applies_to
from source.rgw_setup import SetupRequest, run_setup
from source.service import run_amqp, run_http
from source.settings import DEAD_LETTER_URL, K_SINK, DeliverySettings, parse_events

log = logging.getLogger("source")
WAYS = ("http", "amqp")


def _flag(
    parser: argparse._ActionsContainer, flag: str, var: EnvVar, help: str, **kwargs: object
) -> None:
    default = f", default {var.default}" if var.default is not None else ""
    parser.add_argument(flag, dest=var.name, help=f"{help} [env {var.name}{default}]", **kwargs)  # type: ignore[arg-type]


# (flag, the variable it overrides, what it means), by group: the flags of `--help`.
Flags = tuple[tuple[str, EnvVar, str], ...]
DELIVERY_FLAGS: Flags = (
    ("--sink", K_SINK, "URL CloudEvents are POSTed to (binary mode)"),
    ("--dead-letter-url", DEAD_LETTER_URL, "where refused (4xx) events go"),
    ("--concurrency", s.SINK_CONCURRENCY, "most requests to the sink at once"),
    ("--timeout", s.SINK_TIMEOUT, "seconds per delivery attempt"),
    ("--deadline", s.DELIVERY_DEADLINE, "seconds of retries before handing back"),
    ("--backoff", s.RETRY_BACKOFF, "first retry delay, seconds (doubles)"),
    ("--backoff-max", s.RETRY_BACKOFF_MAX, "longest retry delay, seconds"),
    ("--drain-timeout", s.DRAIN_TIMEOUT, "seconds SIGTERM waits for deliveries"),
    ("--region", s.SOURCE_REGION, "region for `source` if a record has none"),
    ("--log-level", LOG_LEVEL, "DEBUG, INFO, WARNING or ERROR"),
)
SETUP_FLAGS: Flags = (
    ("--setup-bucket", s.SETUP_BUCKET, "bucket whose events to subscribe to"),
    ("--topic", s.SETUP_TOPIC, "RGW topic name (the AMQP routing key)"),
    ("--events", s.SETUP_EVENTS, "comma-separated S3 events, or created,removed"),
    ("--prefix", s.SETUP_PREFIX, "only keys starting with this"),
    ("--suffix", s.SETUP_SUFFIX, "only keys ending with one of these (comma-sep.)"),
    ("--notification-id", s.SETUP_NOTIFICATION_ID, "the notification's Id"),
    ("--amqp-persistent", s.SETUP_AMQP_PERSISTENT, "AMQP way: persistent RGW topic (true/false)"),
)
HTTP_FLAGS: Flags = (
    ("--listen", s.SOURCE_LISTEN, "host:port to listen on (default $HOST:$PORT)"),
    ("--listen-fd", s.SOURCE_LISTEN_FD, "serve on this inherited listening socket"),
    ("--push-endpoint", s.SOURCE_PUSH_ENDPOINT, "URL RGW pushes to (set-up only)"),
)
AMQP_FLAGS: Flags = (
    ("--url", s.AMQP_URL, "broker URL, amqp://host:port[/vhost]"),
    ("--queue", s.AMQP_QUEUE, "durable queue to consume (declared)"),
    ("--exchange", s.AMQP_EXCHANGE, "topic exchange RGW publishes to (declared)"),
    ("--prefetch", s.AMQP_PREFETCH, "most unacked messages in flight"),
    ("--health-port", s.SOURCE_HEALTH_PORT, "health/metrics port (default $PORT)"),
    ("--push-endpoint", s.SOURCE_PUSH_ENDPOINT, "broker URL RGW uses (set-up only)"),
)


def _flags(parser: argparse._ActionsContainer, flags: Flags) -> None:
    for flag, var, help in flags:
        _flag(parser, flag, var, help)


def _way(
    ways: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str, flags: Flags
) -> None:
    parser = ways.add_parser(name, help=help)
    _flags(parser, flags)
    _flags(parser.add_argument_group("delivery"), DELIVERY_FLAGS)
    _flags(
        parser.add_argument_group("set-up on start (idempotent; needs AWS_* for RGW)"), SETUP_FLAGS
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m source",
        description="Forward Ceph RGW bucket notifications to a Knative sink as CloudEvents "
        "1.0, at least once. The way in is the sub-command, or $SOURCE_MODE.",
    )
    ways = parser.add_subparsers(dest="way", metavar="{http,amqp}")
    _way(ways, "http", "receive RGW's HTTP pushes (persistent topic)", HTTP_FLAGS)
    _way(ways, "amqp", "consume RGW's events from a RabbitMQ queue", AMQP_FLAGS)
    return parser


def _environ(args: argparse.Namespace, base: Mapping[str, str]) -> dict[str, str]:
    """The environment with every given flag written over its variable: one place validates
    both."""
    environ = dict(base)
    for name, value in vars(args).items():
        if name != "way" and value is not None:
            environ[name] = str(value)
    return environ


def _host_port(value: str, what: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what}: expected host:port, got {value!r}")
    return host, int(port)


def _setup_request(
    env: Env,
    way: str,
    endpoint: str,
    exchange: str | None,
    push_auth: PushAuth | None = None,
) -> SetupRequest | None:
    bucket = env.string(s.SETUP_BUCKET)
    if not bucket:
        return None
    # One secret, both ends: RGW is given the endpoint with it, the adapter checks for it.
    secret_in_path = push_auth is not None and applies_to(endpoint)
    if push_auth is not None and secret_in_path:
        endpoint = push_auth.endpoint(endpoint)
    topic = env.string(s.SETUP_TOPIC)
    if topic is None:
        topic = env.string(s.AMQP_QUEUE) if way == "amqp" else f"knative-source-{bucket}"
    suffixes = env.csv(s.SETUP_SUFFIX)
    return SetupRequest(
        bucket=bucket,
        topic=topic or f"knative-source-{bucket}",
        endpoint=endpoint,
        events=parse_events(env.required_str(s.SETUP_EVENTS)),
        prefix=env.string(s.SETUP_PREFIX),
        suffixes=suffixes,
        notification_id=env.string(s.SETUP_NOTIFICATION_ID),
        amqp_exchange=exchange,
        persistent=way != "amqp" or env.flag(s.SETUP_AMQP_PERSISTENT),
        secret_in_path=secret_in_path,
    )


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    merged = _environ(args, os.environ if environ is None else environ)
    env = Env(merged)
    way = args.way or (env.string(s.SOURCE_MODE) or "").lower()
    try:
        if way not in WAYS:
            raise ConfigError("name the way in: `python -m source http|amqp` (or SOURCE_MODE)")
        delivery = DeliverySettings.from_env(merged)
        host = env.required_str(HOST)
        level = (env.string(LOG_LEVEL) or "INFO").upper()
        configure_logging(level, {"component": "source"})
        if level != "DEBUG":
            # One line per HTTP request or AMQP frame would drown the source's own lines.
            for noisy in ("httpx", "httpcore", "pika"):
                logging.getLogger(noisy).setLevel(logging.WARNING)
        if way == "http":
            listener: socket.socket | None = None
            if env.string(s.SOURCE_LISTEN_FD):
                fd = env.integer(s.SOURCE_LISTEN_FD, 0, 65535)
                listener = inherited_listener(fd, s.SOURCE_LISTEN_FD.name)
                listen = listen_address(listener)
            else:
                listen = env.string(s.SOURCE_LISTEN) or f"{host}:{env.integer(PORT, 1, 65535)}"
            listen_host, listen_port = _host_port(listen, s.SOURCE_LISTEN.name)
            endpoint = env.string(s.SOURCE_PUSH_ENDPOINT) or f"http://{listen}/"
            push_auth = PushAuth.from_env(env)
            request = _setup_request(env, way, endpoint, None, push_auth)
            if request is not None:
                run_setup(request, S3Settings.from_env(merged))
            asyncio.run(run_http(delivery, listen_host, listen_port, listener, push_auth))
        else:
            amqp = AmqpSettings(
                url=env.required_str(s.AMQP_URL),
                queue=env.required_str(s.AMQP_QUEUE),
                exchange=env.required_str(s.AMQP_EXCHANGE),
                routing_key=env.string(s.SETUP_TOPIC) or env.required_str(s.AMQP_QUEUE),
                prefetch=env.integer(s.AMQP_PREFETCH, 1, 65535),
                drain_timeout=delivery.drain_timeout,
            )
            health_port = (
                env.integer(s.SOURCE_HEALTH_PORT, 1, 65535)
                if env.string(s.SOURCE_HEALTH_PORT)
                else env.integer(PORT, 1, 65535)
            )
            # RGW 16.2 refuses a password in an amqp:// endpoint: the consumer's URL may carry
            # one, so RGW's can be set apart.
            endpoint = env.string(s.SOURCE_PUSH_ENDPOINT) or amqp.url
            request = _setup_request(env, way, endpoint, amqp.exchange)
            if request is not None:
                # RGW publishes to the exchange: it must exist before the first event.
                declare_topology(amqp)
                run_setup(request, S3Settings.from_env(merged))
            asyncio.run(run_amqp(delivery, amqp, host, health_port))
    except (ConfigError, SpecError, NotificationError, BrokerUnavailable) as exc:
        sys.stderr.write(f"source: {exc}\n")
        return 2
    except BotoCoreError as exc:  # RGW unreachable during the set-up
        sys.stderr.write(f"source: set-up failed, RGW unreachable: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
