"""A contract-test stand-in for Google Cloud Vision's `images:annotate`, run as its own process.

    python -m testkit.fake_vision --port 8098 [--api-key KEY]

Google cannot be reached from the tests, so this small server answers with the documented shapes
(https://cloud.google.com/vision/docs/reference/rest/v1/images/annotate and google.rpc.Status),
and can be told to fail the way Google fails. It is the only fake in the test suite; the labels it
returns are whatever the test asked for, so it proves the client's wire handling, not a model.

`POST /v1/images:annotate` checks, like Google:
  - the API key (`x-goog-api-key` header or `?key=`) when --api-key is set: missing -> 403
    PERMISSION_DENIED, wrong -> 400 INVALID_ARGUMENT with ErrorInfo reason API_KEY_INVALID;
  - the body: JSON with 1..16 `requests`, each with `image.content` (base64) and `features`;
    a malformed body -> 400 INVALID_ARGUMENT; a body over 10 MiB -> 400 INVALID_ARGUMENT;
  - the features: LABEL_DETECTION and/or SAFE_SEARCH_DETECTION (others -> 400 here);
  - per image: content that is no JPEG/PNG/GIF/BMP/WEBP -> a per-image `error` with code 3
    INVALID_ARGUMENT "Bad image data."; otherwise, for LABEL_DETECTION, the configured labels,
    capped at maxResults (no labels configured -> no `labelAnnotations`, as Google sends when it
    finds none), and for SAFE_SEARCH_DETECTION the configured `safeSearchAnnotation` (default:
    every category VERY_UNLIKELY, the answer Google gives an ordinary photo).

Control endpoints (not counted):

    GET  /_control/health      200 "ok"
    GET  /_control/stats       {"requests": n, "log": [{"time", "path", "query", "key_header",
                                "images", "max_results", "features", "answer"}]}
    POST /_control/reset       clear the count, the log and the script
    PUT  /_control/labels      [{"mid", "description", "score", "topicality"}]: labels to answer
    PUT  /_control/safe_search {"adult": "VERY_UNLIKELY", ...}: the safeSearchAnnotation to
                               answer, sent as given (so a test can send values off the enum)
    PUT  /_control/script      {"steps": [step, ...], "default": step | null}
        A step is {"kind": K, ...}; each annotate request consumes the next step, and once the
        steps run out `default` applies (null: the normal answer). Kinds:
          ok                       the normal answer
          quota    retry_after=S   429 RESOURCE_EXHAUSTED (+ Retry-After: S if given)
          internal                 500 INTERNAL
          unavailable retry_after  503 UNAVAILABLE (+ Retry-After)
          denied                   403 PERMISSION_DENIED (API not enabled in the project)
          image_error code, message   a per-image error in every slot
          slow     seconds=S       wait S seconds, then the normal answer
          garbage                  200 with a body that is not JSON
          echo_key                 400 INVALID_ARGUMENT whose message repeats the key sent
                                   (Google does not; a proxy might: proves the client redacts)
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

CONTROL_PREFIX = "/_control/"
ANNOTATE_PATH = "/v1/images:annotate"
MAX_REQUEST_BYTES = 10 * 1024 * 1024
MAX_IMAGES = 16
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"RIFF")
FEATURES = ("LABEL_DETECTION", "SAFE_SEARCH_DETECTION")
SAFE_SEARCH_CATEGORIES = ("adult", "spoof", "medical", "violence", "racy")
DEFAULT_SAFE_SEARCH = {category: "VERY_UNLIKELY" for category in SAFE_SEARCH_CATEGORIES}

HTTP_ERRORS: dict[str, tuple[int, str, str]] = {
    "quota": (
        429,
        "RESOURCE_EXHAUSTED",
        "Quota exceeded for quota metric 'Requests' and limit 'Requests per minute'.",
    ),
    "internal": (500, "INTERNAL", "Internal error encountered."),
    "unavailable": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "denied": (
        403,
        "PERMISSION_DENIED",
        "Cloud Vision API has not been used in project 0 before or it is disabled.",
    ),
}


def status_body(code: int, status: str, message: str, reason: str | None = None) -> bytes:
    """A call-level error body: {"error": {"code", "message", "status"[, "details"]}}."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if reason is not None:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": {"service": "vision.googleapis.com"},
            }
        ]
    return json.dumps({"error": error}).encode()


class FakeState:
    def __init__(self, api_key: str | None) -> None:
        self.api_key = api_key
        self.lock = threading.Lock()
        self.labels: list[dict[str, Any]] = []
        self.safe_search: Any = dict(DEFAULT_SAFE_SEARCH)
        self.steps: list[dict[str, Any]] = []
        self.default: dict[str, Any] | None = None
        self.log: list[dict[str, Any]] = []

    def next_step(self) -> dict[str, Any]:
        with self.lock:
            if self.steps:
                return self.steps.pop(0)
            return self.default or {"kind": "ok"}

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.log.append(entry)


class AnnotateHandler(BaseHTTPRequestHandler):
    server: FakeVisionServer
    protocol_version = "HTTP/1.1"

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def do_GET(self) -> None:
        state = self.server.state
        if self.path == CONTROL_PREFIX + "health":
            self._send(200, b'"ok"')
        elif self.path == CONTROL_PREFIX + "stats":
            with state.lock:
                stats = json.dumps({"requests": len(state.log), "log": state.log}).encode()
            self._send(200, stats)
        else:
            self._send(404, status_body(404, "NOT_FOUND", f"no GET {self.path}"))

    def do_PUT(self) -> None:
        state = self.server.state
        try:
            value = json.loads(self._body() or b"null")
        except ValueError as exc:
            self._send(400, json.dumps({"error": str(exc)}).encode())
            return
        with state.lock:
            if self.path == CONTROL_PREFIX + "labels":
                state.labels = list(value)
            elif self.path == CONTROL_PREFIX + "safe_search":
                state.safe_search = value
            elif self.path == CONTROL_PREFIX + "script":
                state.steps = list(value.get("steps", []))
                state.default = value.get("default")
            else:
                self._send(404, b"{}")
                return
        self._send(200, b"{}")

    def do_POST(self) -> None:
        state = self.server.state
        body = self._body()
        if self.path == CONTROL_PREFIX + "reset":
            with state.lock:
                state.log.clear()
                state.steps.clear()
                state.labels = []
                state.safe_search = dict(DEFAULT_SAFE_SEARCH)
                state.default = None
            self._send(200, b"{}")
            return
        path, _, query = self.path.partition("?")
        if path != ANNOTATE_PATH:
            self._send(404, status_body(404, "NOT_FOUND", f"no method at {path}"))
            return
        entry: dict[str, Any] = {
            "time": time.time(),
            "path": path,
            "query": query,
            "key_header": self.headers.get("x-goog-api-key"),
            "images": None,
            "max_results": None,
            "features": None,
            "answer": None,
        }
        # Counted on arrival, so a slow answer still in progress shows up in the stats.
        state.record(entry)
        status, answer, headers = self._annotate(body, query, entry)
        with state.lock:
            entry["answer"] = status
        self._send(status, answer, headers)

    def _annotate(
        self, body: bytes, query: str, entry: dict[str, Any]
    ) -> tuple[int, bytes, dict[str, str]]:
        state = self.server.state
        if state.api_key is not None:
            given = self.headers.get("x-goog-api-key") or parse_qs(query).get("key", [None])[0]
            if not given:
                return (
                    403,
                    status_body(
                        403,
                        "PERMISSION_DENIED",
                        "Method doesn't allow unregistered callers (callers without established "
                        "identity). Please use API Key or other form of API consumer identity "
                        "to call this API.",
                    ),
                    {},
                )
            if given != state.api_key:
                return (
                    400,
                    status_body(
                        400,
                        "INVALID_ARGUMENT",
                        "API key not valid. Please pass a valid API key.",
                        reason="API_KEY_INVALID",
                    ),
                    {},
                )
        if len(body) > MAX_REQUEST_BYTES:
            message = f"Request payload size exceeds the limit: {MAX_REQUEST_BYTES} bytes."
            return 400, status_body(400, "INVALID_ARGUMENT", message), {}
        try:
            requests = parse_requests(body)
        except ValueError as exc:
            return 400, status_body(400, "INVALID_ARGUMENT", str(exc)), {}
        entry["images"] = len(requests)
        entry["max_results"] = [r["max_results"] for r in requests]
        entry["features"] = [r["features"] for r in requests]
        step = state.next_step()
        kind = step.get("kind", "ok")
        if kind in HTTP_ERRORS:
            code, rpc_status, message = HTTP_ERRORS[kind]
            headers = {}
            if step.get("retry_after") is not None:
                headers["Retry-After"] = str(step["retry_after"])
            return code, status_body(code, rpc_status, message), headers
        if kind == "echo_key":
            sent = self.headers.get("x-goog-api-key") or ""
            return 400, status_body(400, "INVALID_ARGUMENT", f"Bad key {sent} in request."), {}
        if kind == "garbage":
            return 200, b"<html>not json</html>", {}
        if kind == "slow":
            time.sleep(float(step.get("seconds", 1.0)))
        slots: list[dict[str, Any]] = []
        for request in requests:
            if kind == "image_error":
                code = int(step.get("code", 3))
                slots.append({"error": {"code": code, "message": step.get("message", "error")}})
            elif not request["is_image"]:
                slots.append({"error": {"code": 3, "message": "Bad image data."}})
            else:
                slot: dict[str, Any] = {}
                with state.lock:
                    labels = state.labels[: request["max_results"]]
                    safe_search = state.safe_search
                if labels and "LABEL_DETECTION" in request["features"]:
                    slot["labelAnnotations"] = labels
                if "SAFE_SEARCH_DETECTION" in request["features"]:
                    slot["safeSearchAnnotation"] = safe_search
                slots.append(slot)
        return 200, json.dumps({"responses": slots}).encode(), {}

    def log_message(self, format: str, *args: object) -> None:
        pass  # the stats log is the record


def parse_requests(body: bytes) -> list[dict[str, Any]]:
    """Validate a BatchAnnotateImagesRequest the way the API does; ValueError says what's wrong."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise ValueError("Invalid JSON payload received.") from None
    requests = payload.get("requests") if isinstance(payload, dict) else None
    if not isinstance(requests, list) or not requests:
        raise ValueError("No requests specified.")
    if len(requests) > MAX_IMAGES:
        raise ValueError(f"At most {MAX_IMAGES} images may be sent in one call.")
    parsed = []
    for request in requests:
        image = request.get("image") if isinstance(request, dict) else None
        features = request.get("features") if isinstance(request, dict) else None
        if not isinstance(image, dict) or not isinstance(image.get("content"), str):
            raise ValueError("image.content is required.")
        if not isinstance(features, list) or not features:
            raise ValueError("No features specified.")
        types = [f.get("type") if isinstance(f, dict) else None for f in features]
        if any(t not in FEATURES for t in types):
            raise ValueError(f"Only {' and '.join(FEATURES)} are served here, not {types}.")
        label_features = [f for f in features if f.get("type") == "LABEL_DETECTION"]
        max_results = int(label_features[0].get("maxResults", 10)) if label_features else 0
        try:
            content = base64.b64decode(image["content"], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("Invalid value at 'requests[0].image.content' (TYPE_BYTES)") from None
        parsed.append(
            {
                "is_image": content.startswith(IMAGE_MAGIC),
                "max_results": max_results,
                "features": types,
            }
        )
    return parsed


class FakeVisionServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, state: FakeState) -> None:
        super().__init__(("127.0.0.1", port), AnnotateHandler)
        self.state = state


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument("--api-key", default=None, help="require this API key")
    args = parser.parse_args(argv)
    with FakeVisionServer(args.port, FakeState(args.api_key)) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
