"""The one HTTP sink: the local Broker (results), the dead-letter sink, and the tests' recorder.

    python -m localknative.collector --port 8105 --out results.jsonl --role results
    python -m localknative.collector --port 8099 --out requests.jsonl --requests [--status 503]

It keeps what arrives in one of two ways, and writes each line to `--out` and flushes it
*before* the answer goes out, so whoever got an answer can rely on the line being there.

- Events (the default). Every valid CloudEvent POSTed to any path becomes one JSON line
  `{"time", "path", "attributes", "data"}` and is answered 202; anything else gets 400 and is not
  written. On Kubernetes the Broker and the `dead-letters` Service do this job. With
  `--reply-type TYPE` it plays a function that replies: the 200 carries a CloudEvent of that type
  (binary mode) whose data names the event it answers (`{"in_reply_to": id}`).
- Requests (`--requests`). Every request, any method and any path but the control paths, becomes
  one JSON line and is answered with the current status (`--status`, default 200) and no body:

      {"seq": 1, "time": 1764480000.123, "method": "POST", "path": "/events", "query": "a=1",
       "headers": [["host", "127.0.0.1:8099"], ["content-type", "application/json"]],
       "body": "{...}", "body_base64": null, "status": 200}

  `body` is the body as text when it is valid UTF-8 (else null, and `body_base64` holds it);
  `headers` keeps order and repeats (names in lower case, as the server reads them). This is
  what tests point RGW, the source or the dispatcher at to see exactly what they send, and to
  make them retry (testkit.sink reads the file).

With `--forward URL` each event it kept is also delivered on to URL, as it came (same headers
and body), after the answer: what the Broker does for its Trigger's subscriber (the results
service, for the results; its dead-letter endpoint, for the dead letters). A failed delivery
is retried (5 times, 0.2 s doubling, as the manifests' delivery policy says) and then logged.
With `--forward-type TYPE` only events of that type go on (the Trigger's `filter.attributes.type`:
Trigger `results` takes the classification results, not the compliance verdicts).

Without `--out` nothing is written: a bare sink that reads the body and answers (the ceiling in
benchmarks/bench_receiver.py, served as `localknative.collector:bare_sink`).

Control endpoints, never recorded: `GET /healthz` (events) and `GET /_control/health` answer 200;
with `--requests`, `PUT /_control/status` with body "503" answers 503 to every request from now
on and `PUT /_control/delay` with body "0.5" waits that long before each answer.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from common.cloudevents_http import new_event, parse_request, to_binary_headers
from common.errors import InvalidCloudEvent
from common.logs import configure_logging

if TYPE_CHECKING:
    import httpx  # imported when forwarding is used: the plain sink does without

log = logging.getLogger("collector")

CONTROL_PREFIX = "/_control/"
FORWARD_RETRIES = 5
FORWARD_BACKOFF_S = 0.2
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def event_entry(path: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """The JSON line for one CloudEvent request; raises InvalidCloudEvent for anything else."""
    event = parse_request(headers, body)
    attributes = {
        name: (value.isoformat() if hasattr(value, "isoformat") else value)
        for name, value in event.get_attributes().items()
    }
    data = event.get_data()
    if isinstance(data, bytes):
        try:
            data = json.loads(data)
        except ValueError:
            data = data.decode("utf-8", errors="replace")
    return {"time": time.time(), "path": path, "attributes": attributes, "data": data}


def request_entry(
    method: str, path: str, query: str, headers: list[list[str]], body: bytes, status: int
) -> dict[str, Any]:
    """The JSON line for one request as it arrived (`--requests`)."""
    try:
        text: str | None = body.decode("utf-8")
        raw: str | None = None
    except UnicodeDecodeError:
        text, raw = None, base64.b64encode(body).decode("ascii")
    return {
        "time": time.time(),
        "method": method,
        "path": path,
        "query": query,
        "headers": headers,
        "body": text,
        "body_base64": raw,
        "status": status,
    }


def parse_status(text: str) -> int:
    code = int(text.strip())
    if not 100 <= code <= 599:
        raise ValueError(f"status must be 100..599, got {code}")
    return code


def parse_delay(text: str) -> float:
    delay = float(text.strip())
    if not 0 <= delay <= 300:
        raise ValueError(f"delay must be 0..300 seconds, got {delay}")
    return delay


@dataclass
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] | None = None


class Sink:
    """The ASGI app. `out` None keeps nothing; `requests` records every request as it came,
    else only valid CloudEvents. `status` and `delay` are what the control endpoints change."""

    def __init__(
        self,
        out: IO[str] | None = None,
        role: str = "collector",
        reply_type: str | None = None,
        requests: bool = False,
        status: int = 200,
        delay: float = 0.0,
        forward: str | None = None,
        forward_type: str | None = None,
    ) -> None:
        self.out = out
        self.forward = forward
        self.forward_type = forward_type
        self._forwarding: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None  # made in the serving loop, on first use
        self.role = role
        self.reply_type = reply_type
        self.requests = requests
        self.status = parse_status(str(status))
        self.delay = parse_delay(str(delay))
        self.seq = 0
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        method, path = str(scope["method"]), str(scope["path"])
        headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        if path.startswith(CONTROL_PREFIX):
            answer = self._control(method, path[len(CONTROL_PREFIX) :], body)
        elif self.requests:
            answer = Answer(self.status)
            if self.out is not None:
                query = bytes(scope.get("query_string", b"")).decode("latin-1")
                self._write(request_entry(method, path, query, headers, body, answer.status))
            if self.delay:
                await asyncio.sleep(self.delay)
        elif path == "/healthz" and method == "GET":
            answer = Answer(200, b'{"ready":true}', {"content-type": "application/json"})
        elif method != "POST":
            answer = Answer(405)
        else:
            first: dict[str, str] = {}
            for name, value in headers:
                first.setdefault(name, value)
            answer, event_type = self._event(path, first, body)
            wanted = self.forward_type is None or event_type == self.forward_type
            if self.forward is not None and answer.status < 300 and wanted:
                task = asyncio.get_running_loop().create_task(self._deliver(first, body))
                self._forwarding.add(task)
                task.add_done_callback(self._forwarding.discard)
        await _respond(send, answer)

    async def _deliver(self, headers: dict[str, str], body: bytes) -> None:
        """POST the event on to `forward`, retrying connection errors and 5xx answers."""
        import httpx

        assert self.forward is not None
        wanted = {k: v for k, v in headers.items() if k.startswith("ce-") or k == "content-type"}
        # One pooled client for the process: a client per event built a new TLS context each
        # time, which was 90 % of this process's CPU in `bench_pipeline --profile`.
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=30.0)
        client = self._client
        for attempt in range(FORWARD_RETRIES + 1):
            try:
                answer = await client.post(self.forward, headers=wanted, content=body)
                if answer.status_code < 500:
                    if answer.status_code >= 300:
                        log.warning(
                            f"{self.role}: {self.forward} refused an event",
                            extra={"status": answer.status_code, "answer": answer.text[:300]},
                        )
                    return
                why = f"HTTP {answer.status_code}"
            except httpx.HTTPError as exc:
                why = f"{type(exc).__name__}: {exc}"
            if attempt < FORWARD_RETRIES:
                await asyncio.sleep(FORWARD_BACKOFF_S * 2**attempt)
        log.error(f"{self.role}: could not deliver an event to {self.forward}: {why}")

    def _write(self, entry: dict[str, Any]) -> None:
        assert self.out is not None
        with self._lock:
            if self.requests:
                self.seq += 1
                entry = {"seq": self.seq, **entry}
            self.out.write(json.dumps(entry, default=str) + "\n")
            self.out.flush()

    def _event(self, path: str, headers: dict[str, str], body: bytes) -> tuple[Answer, str | None]:
        """The answer to one event, and its type (None if it is not a CloudEvent)."""
        try:
            entry = event_entry(path, headers, body)
        except InvalidCloudEvent as exc:
            payload = {"error": "invalid-cloudevent", "message": str(exc)}
            answer = Answer(400, json.dumps(payload).encode(), {"content-type": "application/json"})
            return answer, None
        if self.out is not None:
            self._write(entry)
        attributes = entry["attributes"]
        log.info(
            f"{self.role}: {attributes.get('type')} {attributes.get('subject') or ''}".rstrip(),
            extra={"event_id": attributes.get("id"), "source": attributes.get("source")},
        )
        event_type = attributes.get("type")
        if self.reply_type is None:
            return Answer(202), event_type
        reply = new_event(
            self.reply_type,
            f"/local/{self.role}",
            {"in_reply_to": attributes.get("id")},
            subject=attributes.get("subject"),
        )
        reply_headers, reply_body = to_binary_headers(reply)
        return Answer(200, reply_body, reply_headers), event_type

    def _control(self, method: str, name: str, body: bytes) -> Answer:
        try:
            if name == "health" and method == "GET":
                return Answer(200, b"ok")
            if name == "status" and method == "PUT":
                self.status = parse_status(body.decode())
                return Answer(200, str(self.status).encode())
            if name == "delay" and method == "PUT":
                self.delay = parse_delay(body.decode())
                return Answer(200, str(self.delay).encode())
        except ValueError as exc:
            return Answer(400, str(exc).encode())
        return Answer(404, f"unknown control {method} {name}".encode())


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _respond(send: Send, answer: Answer) -> None:
    headers = {"content-type": "text/plain", **(answer.headers or {})}
    headers["content-length"] = str(len(answer.body))
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": answer.status, "headers": raw})
    await send({"type": "http.response.body", "body": answer.body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# Reads the body and answers 200, keeping nothing: the least any HTTP server on uvicorn does.
bare_sink = Sink(requests=True)


def read_entries(path: Path) -> list[dict[str, Any]]:
    """Every complete line written so far."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(
        prog="python -m localknative.collector", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--out", type=Path, help="JSON-lines file to append to (else keep none)")
    parser.add_argument("--role", default="collector", help="name used in log lines")
    parser.add_argument("--reply-type", help="answer each event with a reply of this type")
    parser.add_argument(
        "--requests", action="store_true", help="record every request as it came, not events"
    )
    parser.add_argument("--status", type=int, default=200, help="with --requests: the answer")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait to answer")
    parser.add_argument("--forward", metavar="URL", help="deliver each kept event on to URL")
    parser.add_argument("--forward-type", metavar="TYPE", help="forward only events of this type")
    args = parser.parse_args(argv)
    configure_logging("INFO", {"service": args.role})
    with contextlib.ExitStack() as files:
        out = files.enter_context(args.out.open("a", encoding="utf-8")) if args.out else None
        app = Sink(
            out,
            args.role,
            args.reply_type,
            args.requests,
            args.status,
            args.delay,
            args.forward,
            args.forward_type,
        )
        uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
