"""The dispatcher's HTTP client against a tiny real server on a loopback socket.

What the Channel promises about the wire: the event's headers and body go out as they came
(no invented Content-Type), one keep-alive connection carries consecutive deliveries, and "no
answer" (refused, timed out) is told apart from an answer, whatever its status.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from localknative.poster import Answer, Poster, Unanswered, reply_in


@dataclass
class Seen:
    """What the server read: one (connection number, head lines, body) per request."""

    requests: list[tuple[int, list[str], bytes]] = field(default_factory=list)
    connections: int = 0


async def serve(seen: Seen, answer: bytes | None) -> tuple[asyncio.Server, str]:
    """An HTTP/1.1 server that records requests and sends `answer` (None: never answers)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        number = seen.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")[:-2]
                length = next(
                    (int(line.split(":", 1)[1]) for line in lines
                     if line.lower().startswith("content-length:")),
                    0,
                )  # fmt: skip
                body = await reader.readexactly(length)
                seen.requests.append((number, lines, body))
                if answer is None:
                    await asyncio.sleep(3600)
                    return
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/"


def run(test: Callable[[Poster], Awaitable[None]]) -> None:
    async def main() -> None:
        poster = Poster()
        try:
            await test(poster)
        finally:
            await poster.close()

    asyncio.run(main())


ACCEPTED = b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n"


def header_names(lines: list[str]) -> set[str]:
    return {line.split(":", 1)[0].lower() for line in lines[1:]}


def test_headers_and_body_go_out_as_they_came_on_one_connection() -> None:
    seen = Seen()

    async def test(poster: Poster) -> None:
        server, url = await serve(seen, ACCEPTED)
        async with server:
            for number in range(3):
                headers = {"ce-id": str(number), "ce-specversion": "1.0"}
                answer = await poster.post(url, headers, b"\x00raw bytes", 5.0)
                assert answer == Answer(202, answer.headers, b"")

    run(test)
    assert [body for _, _, body in seen.requests] == [b"\x00raw bytes"] * 3
    assert [number for number, _, _ in seen.requests] == [1, 1, 1]  # kept alive
    for _, lines, _ in seen.requests:
        assert lines[0].startswith("POST / HTTP/1.1")
        assert "content-type" not in header_names(lines)
        assert {"ce-id", "ce-specversion"} <= header_names(lines)


def test_a_silent_subscriber_is_no_answer_after_the_timeout() -> None:
    seen = Seen()

    async def test(poster: Poster) -> None:
        server, url = await serve(seen, None)
        async with server:
            with pytest.raises(Unanswered, match="TimeoutError"):
                await poster.post(url, {"ce-id": "1"}, b"{}", 0.3)

    run(test)
    assert len(seen.requests) == 1


def test_a_refused_connection_is_no_answer() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused

        async def test(poster: Poster) -> None:
            with pytest.raises(Unanswered, match="Connect"):
                await poster.post(f"http://127.0.0.1:{port}/", {"ce-id": "1"}, b"{}", 5.0)

        run(test)


def test_an_error_status_is_an_answer_with_its_body() -> None:
    seen = Seen()
    refusal = b"HTTP/1.1 422 Unprocessable\r\ncontent-length: 7\r\n\r\nnot jpg"

    async def test(poster: Poster) -> None:
        server, url = await serve(seen, refusal)
        async with server:
            answer = await poster.post(url, {"ce-id": "1"}, b"{}", 5.0)
            assert (answer.status, answer.body) == (422, b"not jpg")

    run(test)


def test_only_a_2xx_carrying_a_valid_cloudevent_is_a_reply() -> None:
    binary = {
        "ce-id": "r1",
        "ce-specversion": "1.0",
        "ce-type": "dev.rgwinference.classification.result",
        "ce-source": "/resnet",
        "Content-Type": "application/json",
        "Content-Length": "8",
    }
    reply = reply_in(Answer(200, binary, b'{"k": 1}'))
    assert reply is not None
    assert reply.headers["ce-id"] == "r1"
    assert "content-length" not in reply.headers
    assert reply.body == b'{"k": 1}'
    assert reply_in(Answer(500, binary, b'{"k": 1}')) is None
    assert reply_in(Answer(202, {}, b"")) is None
    assert reply_in(Answer(200, {"content-type": "text/plain"}, b"ok")) is None
    missing_type = {k: v for k, v in binary.items() if k != "ce-type"}
    assert reply_in(Answer(200, missing_type, b'{"k": 1}')) is None
