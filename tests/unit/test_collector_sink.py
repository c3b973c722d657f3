"""The one HTTP sink (localknative.collector) in-process: both ways of keeping what arrives, the
control endpoints, and the bare sink, over httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import httpx

from localknative.collector import Sink, bare_sink
from testkit.records import binary_event
from testkit.sink import RecordedRequest


def call(app: Sink, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sink") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_events_are_kept_and_anything_else_is_refused() -> None:
    out = io.StringIO()
    sink = Sink(out, role="results")
    headers, body = binary_event("photos", "cat.jpg", event_id="e-1")
    assert call(sink, "POST", "/any/path", headers=headers, content=body).status_code == 202
    refused = call(sink, "POST", "/", headers={"content-type": "text/plain"}, content=b"hi")
    assert refused.status_code == 400 and refused.json()["error"] == "invalid-cloudevent"
    assert call(sink, "GET", "/healthz").json() == {"ready": True}
    assert call(sink, "GET", "/other").status_code == 405
    [entry] = lines(out)
    assert entry["path"] == "/any/path"
    assert entry["attributes"]["id"] == "e-1" and entry["attributes"]["subject"] == "cat.jpg"
    assert entry["data"]["Records"][0]["s3"]["object"]["key"] == "cat.jpg"


def test_a_reply_names_the_event_it_answers() -> None:
    sink = Sink(io.StringIO(), role="resnet", reply_type="classification.result")
    headers, body = binary_event("photos", "cat.jpg", event_id="e-2")
    answer = call(sink, "POST", "/", headers=headers, content=body)
    assert answer.status_code == 200
    assert answer.headers["ce-type"] == "classification.result"
    assert answer.json() == {"in_reply_to": "e-2"}


def test_requests_are_recorded_as_they_came_and_answered_as_told() -> None:
    out = io.StringIO()
    sink = Sink(out, requests=True)
    assert call(sink, "POST", "/events?a=1", content=b"\xff\x00").status_code == 200
    assert call(sink, "PUT", "/_control/status", content=b"503").status_code == 200
    assert call(sink, "GET", "/x", headers={"X-Tag": "t"}).status_code == 503
    assert call(sink, "PUT", "/_control/status", content=b"999").status_code == 400
    assert call(sink, "PUT", "/_control/delay", content=b"0.01").text == "0.01"
    assert call(sink, "GET", "/_control/health").text == "ok"
    first, second = (RecordedRequest.from_line(line) for line in out.getvalue().splitlines())
    assert (first.seq, first.method, first.path, first.query) == (1, "POST", "/events", "a=1")
    assert first.body == b"\xff\x00" and first.status == 200
    assert (second.seq, second.status, second.header("x-tag")) == (2, 503, "t")


def test_the_bare_sink_keeps_nothing_and_answers_200() -> None:
    assert call(bare_sink, "POST", "/", content=b"x" * 100_000).status_code == 200
    assert call(bare_sink, "GET", "/").status_code == 200
