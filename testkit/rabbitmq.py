"""RabbitMQ as a plain process: scripts/rabbitmq-up.sh and rabbitmq-down.sh, wrapped once.

    broker = start_rabbitmq(data_dir)          # a free loopback port
    broker.declare_exchange("rgw")
    with broker.bound_queue("rgw", routing_key="my-topic") as queue:
        ...  # make RGW publish
        [body] = queue.wait_for(1)
    stop_rabbitmq(data_dir)

Its processes (epmd, the server script, the Erlang VM) are recorded in `testkit.registry` as soon
as their pid files exist, also when the start fails.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testkit.processes import StartError, free_port, parse_settings, run_script
from testkit.registry import REGISTRY, deferred_signals

START_TIMEOUT = 90.0


class RabbitMQStartError(StartError):
    """rabbitmq-up.sh failed; the message carries its output and the broker log tail."""


def _log_tail(data_dir: Path, lines: int = 30) -> str:
    parts = []
    for path in sorted((data_dir / "log").glob("*")):
        if path.is_file():
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(text))
    return "\n".join(parts) or "(no logs)"


class BoundQueue:
    """An exclusive, auto-deleted queue bound to an exchange; reads with basic_get."""

    def __init__(self, channel: Any, name: str) -> None:
        self.channel = channel
        self.name = name

    def wait_for(self, count: int, timeout: float = 15.0) -> list[bytes]:
        """Wait until `count` messages arrived; returns (and acknowledges) them."""
        bodies: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(bodies) < count:
            _method, _properties, body = self.channel.basic_get(self.name, auto_ack=True)
            if body is not None:
                bodies.append(body)
                continue
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"queue {self.name}: got {len(bodies)} message(s), wanted {count} "
                    f"within {timeout}s"
                )
            self.channel.connection.sleep(0.02)
        return bodies


@dataclass(frozen=True)
class RabbitMQBroker:
    url: str
    port: int
    data_dir: Path

    def connection(self) -> Any:
        import pika

        return pika.BlockingConnection(pika.URLParameters(self.url))

    def declare_exchange(self, name: str) -> None:
        """A durable topic exchange, as RGW expects (it only publishes to existing ones)."""
        with contextlib.closing(self.connection()) as connection:
            connection.channel().exchange_declare(name, exchange_type="topic", durable=True)

    @contextlib.contextmanager
    def bound_queue(self, exchange: str, routing_key: str) -> Iterator[BoundQueue]:
        with contextlib.closing(self.connection()) as connection:
            channel = connection.channel()
            name = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
            channel.queue_bind(name, exchange, routing_key=routing_key)
            yield BoundQueue(channel, name)

    def log_tail(self) -> str:
        return _log_tail(self.data_dir)


def _record_processes(data_dir: Path) -> None:
    for name in ("epmd", "server", "beam"):
        with contextlib.suppress(ValueError, FileNotFoundError):
            pid = int((data_dir / "run" / f"{name}.pid").read_text().strip())
            REGISTRY.record(pid, f"rabbitmq {name}")


def start_rabbitmq(
    data_dir: Path, port: int | None = None, timeout: float = START_TIMEOUT
) -> RabbitMQBroker:
    """The broker on `port` (a free one by default); stopped again if the start fails."""
    port = port or free_port()
    try:
        done = run_script("rabbitmq-up.sh", [str(data_dir), str(port)], timeout)
    except subprocess.TimeoutExpired as exc:
        stop_rabbitmq(data_dir, purge=False)
        raise RabbitMQStartError(
            f"rabbitmq-up.sh did not finish in {timeout:.0f} s\n{_log_tail(data_dir)}"
        ) from exc
    finally:
        _record_processes(data_dir)
    if done.returncode != 0:
        stop_rabbitmq(data_dir, purge=False)
        raise RabbitMQStartError(
            f"could not start RabbitMQ (rabbitmq-up.sh exited with {done.returncode}):\n"
            f"{done.stderr.strip()}\n{_log_tail(data_dir)}"
        )
    return RabbitMQBroker(parse_settings(done.stdout)["AMQP_URL"], port, data_dir)


def stop_rabbitmq(data_dir: Path, purge: bool = True) -> None:
    """Stop the broker and its epmd by their pid files; `purge` also deletes the data dir."""
    with deferred_signals():
        if data_dir.exists():
            run_script("rabbitmq-down.sh", [str(data_dir), *(["--purge"] if purge else [])], 60)
