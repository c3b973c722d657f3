"""The AMQP way: RGW publishes to a RabbitMQ exchange; we consume a durable queue bound to it.

pika's BlockingConnection runs in one thread of its own (pika is not thread-safe, so every call on
the connection happens there); each message is handed to the asyncio loop, which maps and
delivers it, and the ack or nack travels back with `add_callback_threadsafe`.

- The exchange (topic, durable), the queue (durable) and the binding (routing key = the RGW topic
  name) are declared on every connect; declaring what exists is a no-op, so this is idempotent.
- A message is acked only after every event in it is settled (sink 2xx, dead-lettered, or
  refused with no dead-letter URL). A transient failure has already been retried with backoff
  for DELIVERY_DEADLINE seconds when it is nacked with requeue, so a dead sink cannot make it spin.
- `basic_qos(prefetch_count)` bounds the messages in flight, hence the concurrency.
- Broker gone: reconnect with backoff. Unacked messages go back to the queue by themselves.
- `stop()`: cancel the consumer, wait (up to the drain timeout) for in-flight messages and
  ack/nack them, then close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from source.delivery import backoff_delay
from source.forwarder import Forwarder, PushResult

log = logging.getLogger("source.amqp")

_POLL_SECONDS = 0.1
_RECONNECT_BASE = 0.5
_RECONNECT_MAX = 10.0


@dataclass(frozen=True)
class AmqpSettings:
    url: str
    queue: str
    exchange: str
    routing_key: str
    prefetch: int = 64
    drain_timeout: float = 30.0


class BrokerUnavailable(RuntimeError):
    """The broker could not be reached or refused the declarations at start-up."""


def _declare(channel: BlockingChannel, settings: AmqpSettings) -> None:
    channel.exchange_declare(settings.exchange, exchange_type="topic", durable=True)
    channel.queue_declare(settings.queue, durable=True)
    channel.queue_bind(settings.queue, settings.exchange, routing_key=settings.routing_key)
    channel.basic_qos(prefetch_count=settings.prefetch)


def declare_topology(settings: AmqpSettings) -> None:
    """Exchange, queue and binding, before RGW is told to publish (it needs the exchange)."""
    try:
        connection = BlockingConnection(pika.URLParameters(settings.url))
        try:
            _declare(connection.channel(), settings)
        finally:
            connection.close()
    except (pika.exceptions.AMQPError, OSError) as exc:
        raise BrokerUnavailable(
            f"AMQP broker {settings.url.split('@')[-1]}: {type(exc).__name__} {exc}".strip()
        ) from exc


class AmqpConsumer:
    def __init__(
        self, settings: AmqpSettings, forwarder: Forwarder, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.settings = settings
        self.forwarder = forwarder
        self.loop = loop
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._in_flight = 0
        self._rng = random.Random()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="amqp-consumer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._consume_once()
                failures = 0
            except (pika.exceptions.AMQPError, OSError) as exc:
                self._connected.clear()
                delay = backoff_delay(failures, _RECONNECT_BASE, _RECONNECT_MAX, self._rng)
                failures += 1
                log.warning(
                    "AMQP connection failed; reconnecting",
                    extra={"error": f"{type(exc).__name__}: {exc}", "delay_s": round(delay, 2)},
                )
                self._stop.wait(delay)
        self._connected.clear()

    def _consume_once(self) -> None:
        parameters = pika.URLParameters(self.settings.url)
        connection = BlockingConnection(parameters)
        try:
            channel = connection.channel()
            _declare(channel, self.settings)
            self._in_flight = 0
            tag = channel.basic_consume(
                self.settings.queue, self._on_message_handler(connection, channel)
            )
            self._connected.set()
            log.info(
                "consuming",
                extra={"queue": self.settings.queue, "exchange": self.settings.exchange},
            )
            while not self._stop.is_set():
                connection.process_data_events(time_limit=_POLL_SECONDS)
            self._drain(connection, channel, tag)
        finally:
            self._connected.clear()
            if connection.is_open:
                with contextlib.suppress(pika.exceptions.AMQPError):
                    connection.close()

    def _drain(self, connection: BlockingConnection, channel: BlockingChannel, tag: str) -> None:
        """No new messages; let the ones in flight finish so their acks reach the broker."""
        channel.basic_cancel(tag)
        deadline = time.monotonic() + self.settings.drain_timeout
        while self._in_flight and time.monotonic() < deadline:
            connection.process_data_events(time_limit=_POLL_SECONDS)
        if self._in_flight:
            log.warning(
                "drain timeout; unacked messages return to the queue",
                extra={"in_flight": self._in_flight},
            )

    def _on_message_handler(
        self, connection: BlockingConnection, channel: BlockingChannel
    ) -> Callable[..., None]:
        def on_message(_: BlockingChannel, method: Any, properties: Any, body: bytes) -> None:
            headers = {"content-type": properties.content_type or "application/json"}
            future = asyncio.run_coroutine_threadsafe(
                self.forwarder.handle(headers, body), self.loop
            )
            self._in_flight += 1
            tag = method.delivery_tag

            def done(finished: Future[PushResult]) -> None:
                # Connection gone: the broker requeues the message by itself.
                with contextlib.suppress(pika.exceptions.AMQPError):
                    connection.add_callback_threadsafe(lambda: self._settle(channel, tag, finished))

            future.add_done_callback(done)

        return on_message

    def _settle(self, channel: BlockingChannel, tag: int, finished: Future[PushResult]) -> None:
        self._in_flight -= 1
        if not channel.is_open:
            return
        error = finished.exception()
        if error is None and finished.result().settled:
            channel.basic_ack(tag)
            return
        if error is not None:
            log.error("delivery crashed; message requeued", exc_info=error)
        channel.basic_nack(tag, requeue=True)
