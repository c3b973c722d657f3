"""The dispatcher's wire: an event as it travels, and the HTTP client that POSTs it.

Headers and body go out as they came (no invented Content-Type); one keep-alive pool serves
every target; "no answer" (refused, reset, timed out) is `Unanswered`, told apart from an
answer whatever its status.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from common.cloudevents_http import STRUCTURED_CONTENT_TYPE, parse_request
from common.errors import InvalidCloudEvent

log = logging.getLogger("dispatcher")

# Hop-by-hop and length headers are the HTTP client's business, never forwarded; nor is the
# sender's token, which was for the channel: each delivery carries its own (delivery.Credentials).
_NOT_FORWARDED = frozenset(
    {"host", "content-length", "connection", "transfer-encoding", "keep-alive", "authorization"}
)


@dataclass(frozen=True)
class Message:
    """A CloudEvent as it travels: headers to forward and the body, untouched."""

    headers: dict[str, str]
    body: bytes

    @property
    def structured(self) -> bool:
        media = self.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        return media == STRUCTURED_CONTENT_TYPE

    def with_extensions(self, extensions: Mapping[str, str]) -> Message:
        """The same event with extra attributes, in whichever content mode it came."""
        if self.structured:
            document = json.loads(self.body)
            document.update(extensions)
            return Message(dict(self.headers), json.dumps(document).encode())
        headers = dict(self.headers)
        # As header values as they are: the extensions the dispatcher adds (a loopback URL it
        # built, a status code, base64) hold no character the binding percent-encodes.
        headers.update({f"ce-{name}": value for name, value in extensions.items()})
        return Message(headers, self.body)

    @classmethod
    def from_http(cls, headers: Mapping[str, str], body: bytes) -> Message:
        kept = {k.lower(): v for k, v in headers.items() if k.lower() not in _NOT_FORWARDED}
        return cls(kept, body)


@dataclass(frozen=True)
class Answer:
    """What a subscriber answered to one attempt."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class Unanswered(Exception):
    """No answer at all: refused or reset connection, timeout."""


class Poster:
    """POSTs with one keep-alive connection pool for every target.

    aiohttp rather than httpx: on this hot path (three POSTs per event) httpx's pure-Python
    connection pool and h11 parser cost about 3 ms of CPU per event, aiohttp's C parser a fraction
    of that (benchmarks/bench_pipeline.py, the dispatcher row).
    """

    # Below uvicorn's 5 s keep-alive, so that we never send on a connection the server is
    # closing at that very moment (which would cost a retry and its backoff).
    KEEPALIVE_SECONDS = 4.0

    def __init__(self, max_connections: int = 200) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Created on first use: aiohttp binds the session to the running event loop.
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, limit_per_host=0, keepalive_timeout=self.KEEPALIVE_SECONDS
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            # Forward the event's own headers only: no invented Content-Type for a body
            # that came without one.
            skip_auto_headers=("Content-Type",),
            auto_decompress=False,
        )

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> Answer:
        if self._session is None:
            self._session = self._open()
        try:
            async with self._session.post(
                url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                return Answer(response.status, response.headers, await response.read())
        except TimeoutError:
            raise Unanswered(f"TimeoutError: no answer within {timeout:g} s") from None
        except aiohttp.ClientError as exc:
            text = str(exc)
            raise Unanswered(
                f"{type(exc).__name__}: {text}" if text else type(exc).__name__
            ) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def reply_in(response: Answer) -> Message | None:
    """The CloudEvent a subscriber answered with, if any (binary or structured mode)."""
    if not 200 <= response.status < 300 or not response.body:
        return None
    message = Message.from_http(response.headers, response.body)
    if "ce-id" in message.headers or message.structured:
        try:
            parse_request(message.headers, message.body)
        except InvalidCloudEvent as exc:
            log.warning("subscriber replied with an invalid CloudEvent", extra={"why": str(exc)})
            return None
        return message
    return None
