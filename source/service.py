"""Run a way in as a process: the HTTP server, signals, start-up and a draining shutdown.

SIGTERM (Kubernetes' stop): readiness turns 503, no new work is taken (the HTTP listener closes,
the AMQP consumer is cancelled), deliveries in flight finish (up to DRAIN_TIMEOUT) and are
answered or acked, then the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Iterator

import uvicorn
from starlette.applications import Starlette

from source.amqp_consumer import AmqpConsumer, AmqpSettings
from source.delivery import Deliverer
from source.forwarder import Forwarder
from source.http_adapter import create_http_app, operations_routes
from source.metrics import SourceMetrics
from source.push_auth import PushAuth
from source.settings import DeliverySettings

log = logging.getLogger("source")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: `run_*` below owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _uvicorn(app: Starlette, host: str, port: int, drain_timeout: float) -> _Server:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=max(int(drain_timeout), 1),
    )
    return _Server(config)


def _on_stop_signals(callback: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, callback)


async def run_http(
    settings: DeliverySettings,
    host: str,
    port: int,
    listener: socket.socket | None = None,
    push_auth: PushAuth | None = None,
) -> None:
    """Serve RGW's pushes on host:port, or on `listener` (inherited, see source.listener); with
    `push_auth`, only pushes whose path ends in the push secret."""
    metrics = SourceMetrics()
    deliverer = Deliverer(settings, metrics)
    forwarder = Forwarder(settings, deliverer, metrics, way="http")
    stopping = asyncio.Event()
    app = create_http_app(
        forwarder, metrics, ready=lambda: not stopping.is_set(), push_auth=push_auth
    )
    server = _uvicorn(app, host, port, settings.drain_timeout)

    def stop() -> None:
        log.info("stopping: draining in-flight deliveries")
        stopping.set()
        # uvicorn closes the listener, then waits for requests in flight (each one awaits its
        # deliveries) up to timeout_graceful_shutdown.
        server.should_exit = True

    _on_stop_signals(stop)
    log.info(
        "receiving RGW pushes",
        extra={
            "listen": f"{host}:{port}",
            "sink": settings.sink,
            "push_secret": push_auth is not None,
        },
    )
    try:
        await server.serve(sockets=None if listener is None else [listener])
    finally:
        await deliverer.aclose()
    log.info("stopped")


async def run_amqp(
    settings: DeliverySettings, amqp: AmqpSettings, host: str, health_port: int
) -> None:
    metrics = SourceMetrics()
    deliverer = Deliverer(settings, metrics)
    forwarder = Forwarder(settings, deliverer, metrics, way="amqp")
    consumer = AmqpConsumer(amqp, forwarder, asyncio.get_running_loop())
    stopping = asyncio.Event()
    ready = lambda: consumer.connected and not stopping.is_set()  # noqa: E731
    app = Starlette(routes=operations_routes(metrics, ready))
    server = _uvicorn(app, host, health_port, settings.drain_timeout)
    _on_stop_signals(stopping.set)

    consumer.start()
    serving = asyncio.create_task(server.serve())
    log.info("consuming RabbitMQ", extra={"queue": amqp.queue, "sink": settings.sink})
    try:
        stop_wait = asyncio.create_task(stopping.wait())
        await asyncio.wait({serving, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        log.info("stopping: draining in-flight deliveries")
        consumer.stop()
        # The consumer thread waits for its in-flight messages, whose deliveries run on this
        # loop: keep the loop free while it does.
        await asyncio.to_thread(consumer.join, amqp.drain_timeout + 5)
    finally:
        server.should_exit = True
        await serving
        await deliverer.aclose()
    log.info("stopped")
