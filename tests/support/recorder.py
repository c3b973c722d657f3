"""A tiny HTTP server that records every request it receives, for tests that need a real sink.

Run it as its own process:

    python -m tests.support.recorder --port 8099 --out requests.jsonl [--status 200]

Every request (any method, any path except the control paths below) is appended to ``--out`` as
one JSON line and answered with the current status code and an empty body::

    {"seq": 1, "time": 1764480000.123, "method": "POST", "path": "/events", "query": "a=1",
     "headers": [["Host", "127.0.0.1:8099"], ["Content-Type", "application/json"]],
     "body": "{...}", "body_base64": null, "status": 200}

``body`` holds the body as text when it is valid UTF-8 (else null, and ``body_base64`` holds it).
``headers`` keeps order, case and repeats. ``status`` is what the recorder answered.

Control endpoints (never recorded):

    GET /_control/health          200 "ok" — readiness probe
    PUT /_control/status          body "503": answer 503 to every recorded request from now on
    PUT /_control/delay           body "0.5": wait 0.5 s before answering recorded requests

The line is written and flushed *before* the answer is sent, so a client that got its answer
can rely on the request being in the file.
"""

from __future__ import annotations

import argparse
import base64
import json
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO

CONTROL_PREFIX = "/_control/"


class RecorderState:
    """What the control endpoints change, shared by the handler threads."""

    def __init__(self, out: IO[str], status: int, delay: float) -> None:
        self.out = out
        self.status = status
        self.delay = delay
        self.seq = 0
        self.lock = threading.Lock()

    def record(self, entry: dict[str, object]) -> None:
        with self.lock:
            self.seq += 1
            entry["seq"] = self.seq
            self.out.write(json.dumps(entry) + "\n")
            self.out.flush()


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


class RecordingHandler(BaseHTTPRequestHandler):
    server: RecorderServer
    protocol_version = "HTTP/1.1"  # keep-alive, as RGW and Knative senders expect

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _answer(self, status: int, text: str = "") -> None:
        payload = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _control(self, body: bytes) -> None:
        state = self.server.state
        name = self.path[len(CONTROL_PREFIX) :].split("?", 1)[0]
        try:
            if name == "health" and self.command == "GET":
                self._answer(HTTPStatus.OK, "ok")
            elif name == "status" and self.command == "PUT":
                state.status = parse_status(body.decode())
                self._answer(HTTPStatus.OK, str(state.status))
            elif name == "delay" and self.command == "PUT":
                state.delay = parse_delay(body.decode())
                self._answer(HTTPStatus.OK, str(state.delay))
            else:
                self._answer(HTTPStatus.NOT_FOUND, f"unknown control {self.command} {name}")
        except ValueError as exc:
            self._answer(HTTPStatus.BAD_REQUEST, str(exc))

    def _handle(self) -> None:
        body = self._body()
        if self.path.startswith(CONTROL_PREFIX):
            self._control(body)
            return
        state = self.server.state
        status = state.status
        path, _, query = self.path.partition("?")
        try:
            text: str | None = body.decode("utf-8")
            raw: str | None = None
        except UnicodeDecodeError:
            text, raw = None, base64.b64encode(body).decode("ascii")
        state.record(
            {
                "time": time.time(),
                "method": self.command,
                "path": path,
                "query": query,
                "headers": [[name, value] for name, value in self.headers.items()],
                "body": text,
                "body_base64": raw,
                "status": status,
            }
        )
        if state.delay:
            time.sleep(state.delay)
        self._answer(status)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

    def log_message(self, format: str, *args: object) -> None:
        pass  # the JSON lines are the log


class RecorderServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, state: RecorderState) -> None:
        super().__init__(("127.0.0.1", port), RecordingHandler)
        self.state = state


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument("--out", type=Path, required=True, help="JSON-lines file to append to")
    parser.add_argument("--status", type=int, default=200, help="status to answer (default 200)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before answering")
    args = parser.parse_args(argv)
    with args.out.open("a", encoding="utf-8") as out:
        state = RecorderState(out, parse_status(str(args.status)), parse_delay(str(args.delay)))
        with RecorderServer(args.port, state) as server:
            server.serve_forever()


if __name__ == "__main__":
    main()
