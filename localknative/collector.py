"""A CloudEvents sink that keeps what it gets: the local Broker (results) and dead-letter sink.

    python -m localknative.collector --port 8105 --out results.jsonl --role results

Every valid CloudEvent POSTed to any path is appended to `--out` as one JSON line
(`{"time", "path", "attributes", "data"}`) and flushed *before* the 202 goes out, so whoever
got the 202 can rely on the line being there. Anything else gets 400 and is not written.
`GET /healthz` answers 200. On Kubernetes the Broker and the `dead-letters` Service do this job.

With `--reply-type TYPE` it plays a function that replies: the 200 carries a CloudEvent of that
type (binary mode) whose data names the event it answers (`{"in_reply_to": id}`); the dispatcher
tests use it to see replies forwarded.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from common.cloudevents_http import new_event, parse_request, to_binary_headers
from common.errors import InvalidCloudEvent
from common.logs import configure_logging

log = logging.getLogger("collector")


def event_entry(path: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """The JSON line for one request; raises InvalidCloudEvent for anything else."""
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


def create_app(out: IO[str], role: str, reply_type: str | None = None) -> Starlette:
    lock = threading.Lock()

    async def receive(request: Request) -> Response:
        body = await request.body()
        try:
            entry = event_entry(request.url.path, dict(request.headers), body)
        except InvalidCloudEvent as exc:
            return JSONResponse({"error": "invalid-cloudevent", "message": str(exc)}, 400)
        with lock:
            out.write(json.dumps(entry, default=str) + "\n")
            out.flush()
        attributes = entry["attributes"]
        log.info(
            f"{role}: {attributes.get('type')} {attributes.get('subject') or ''}".rstrip(),
            extra={"event_id": attributes.get("id"), "source": attributes.get("source")},
        )
        if reply_type is None:
            return Response(status_code=202)
        reply = new_event(
            reply_type,
            f"/local/{role}",
            {"in_reply_to": attributes.get("id")},
            subject=attributes.get("subject"),
        )
        headers, payload = to_binary_headers(reply)
        return Response(content=payload, status_code=200, headers=headers)

    async def health(_: Request) -> Response:
        return JSONResponse({"ready": True})

    return Starlette(
        routes=[
            Route("/healthz", health, methods=["GET"]),
            Route("/{path:path}", receive, methods=["POST"]),
        ]
    )


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
    parser.add_argument("--out", type=Path, required=True, help="JSON-lines file to append to")
    parser.add_argument("--role", default="collector", help="name used in log lines")
    parser.add_argument("--reply-type", help="answer each event with a reply of this type")
    args = parser.parse_args(argv)
    configure_logging("INFO", {"service": args.role})
    with args.out.open("a", encoding="utf-8") as out:
        app = create_app(out, args.role, args.reply_type)
        uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
