"""Server-sent events: every open page hears about each object version that got a new result.

Each subscriber has a small queue; one that stops reading (a stalled tab) is dropped when its
queue is full rather than holding the others back, and its EventSource reconnects by itself.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

HEARTBEAT_S = 15.0
QUEUE_SIZE = 256


class Hub:
    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[str | None]] = set()

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    def publish(self, event: str, data: dict[str, Any]) -> None:
        """Called on the event loop; never waits."""
        message = f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
        for queue in list(self._queues):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                # Too far behind: its stream ends instead, and the page's EventSource
                # reconnects and reloads the list.
                self._end(queue)

    def close(self) -> None:
        """End every stream (at shutdown, so the server need not wait for them)."""
        for queue in list(self._queues):
            self._end(queue)

    def _end(self, queue: asyncio.Queue[str | None]) -> None:
        self._queues.discard(queue)
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(None)

    async def stream(self, heartbeat: float = HEARTBEAT_S) -> AsyncIterator[str]:
        queue: asyncio.Queue[str | None] = asyncio.Queue(QUEUE_SIZE)
        self._queues.add(queue)
        try:
            # Tells the browser how long to wait before reconnecting, and opens the stream at
            # once (some proxies hold a response back until its first bytes).
            yield "retry: 2000\n: connected\n\n"
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), heartbeat)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if message is None:
                    return
                yield message
        finally:
            self._queues.discard(queue)
