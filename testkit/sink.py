"""The tests' side of the one HTTP sink (`localknative.collector --requests`): start one, read
what it received, make it refuse.

    with start_recorder(log_dir) as recorder:
        ...  # point something at recorder.url("/events")
        [request] = recorder.wait_for(1)
        assert request.json()["Records"][0]["eventName"] == "ObjectCreated:Put"

`recorder_argv(port, out)` is the command line, for a test that runs the process itself (e.g. to
kill it and start it again on the same port).
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from testkit.processes import free_port, python_argv, running


class Watched(Protocol):
    """What the handle needs of the process behind it."""

    def alive(self) -> bool: ...

    def log_tail(self, lines: int = ...) -> str: ...


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the sink saw it."""

    seq: int
    time: float
    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    status: int

    def header(self, name: str) -> str | None:
        """The first header called `name` (case-insensitive), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    def json(self) -> Any:
        return json.loads(self.body)

    @classmethod
    def from_line(cls, line: str) -> RecordedRequest:
        entry = json.loads(line)
        if entry["body"] is not None:
            body = entry["body"].encode("utf-8")
        else:
            body = base64.b64decode(entry["body_base64"])
        return cls(
            seq=entry["seq"],
            time=entry["time"],
            method=entry["method"],
            path=entry["path"],
            query=entry["query"],
            headers=tuple((k, v) for k, v in entry["headers"]),
            body=body,
            status=entry["status"],
        )


RequestFilter = Callable[[RecordedRequest], bool]


class Recorder:
    """Handle on a running sink that records requests (its process, port and file)."""

    def __init__(self, process: Watched, port: int, out: Path) -> None:
        self.process = process
        self.port = port
        self.out = out

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        return f"http://{self.address}{path}"

    def requests(self, where: RequestFilter | None = None) -> list[RecordedRequest]:
        """Everything received so far (complete lines only), oldest first."""
        try:
            text = self.out.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        received = [
            RecordedRequest.from_line(line)
            for line in text.splitlines(keepends=True)
            if line.endswith("\n")
        ]
        return [r for r in received if where is None or where(r)]

    def wait_for(
        self, count: int, where: RequestFilter | None = None, timeout: float = 15.0
    ) -> list[RecordedRequest]:
        """Wait until at least `count` matching requests arrived; returns all matching ones."""
        deadline = time.monotonic() + timeout
        while True:
            matching = self.requests(where)
            if len(matching) >= count:
                return matching
            if not self.process.alive():
                raise AssertionError(f"recorder died; log tail:\n{self.process.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"recorder on port {self.port} got {len(matching)} matching request(s), "
                    f"wanted {count} within {timeout}s; all received: "
                    f"{[(r.method, r.path) for r in self.requests()]}"
                )
            time.sleep(0.02)

    def set_status(self, status: int) -> None:
        """Answer `status` to every request from now on (e.g. 503 to provoke retries)."""
        self._control("status", str(status))

    def set_delay(self, seconds: float) -> None:
        self._control("delay", str(seconds))

    def _control(self, name: str, value: str) -> None:
        response = httpx.put(self.url(f"/_control/{name}"), content=value, timeout=5.0)
        response.raise_for_status()


def body_contains(fragment: str) -> RequestFilter:
    """A filter for `wait_for`: the body contains `fragment` (e.g. an object key)."""
    return lambda request: fragment.encode() in request.body


def recorder_argv(port: int, out: Path, status: int = 200) -> list[str]:
    return python_argv(
        "-m", "localknative.collector", "--requests", "--port", str(port),
        "--out", str(out), "--status", str(status), "--role", "recorder",
    )  # fmt: skip


def recorder_ready_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/_control/health"


@contextlib.contextmanager
def start_recorder(log_dir: Path, name: str = "recorder", status: int = 200) -> Iterator[Recorder]:
    """Run a recording sink on a free port for the duration of the block."""
    port = free_port()
    out = log_dir / f"{name}-{port}.jsonl"
    argv = recorder_argv(port, out, status)
    ready = recorder_ready_url(port)
    with running(f"{name}-{port}", argv, log_dir, ready_url=ready, timeout=15.0) as process:
        yield Recorder(process, port, out)
