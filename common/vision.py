"""Google Cloud Vision REST client: LABEL_DETECTION over `POST {endpoint}/v1/images:annotate`.

One `VisionClient` per process holds one `httpx.Client` (HTTP/1.1 keep-alive). A call:

    image bytes -> size checks -> JSON body (base64) -> POST, retried within VISION_DEADLINE
    -> per-image result -> `Label`s, best first

Errors are mapped to the runtime's errors, so the function answers the status Knative acts on:

    per-image INVALID_ARGUMENT (bad image data)   NotAnImage 415       permanent
    HTTP 400 API_KEY_INVALID, 401, 403             Forbidden 403        permanent: fix the key,
                                                                        then replay the dead letters
    other HTTP 4xx (a request Google refuses)      PermanentError 422   permanent
    HTTP 408/429/5xx, connection errors, timeouts  retried with exponential backoff and full
                                                   jitter (Retry-After honoured), then
                                                   TransientError 503 so the channel retries later
    image over 20 MiB, request over 10 MiB         TooLarge 413, before any call is made

The API key travels in the `x-goog-api-key` header (query strings end up in access logs). It is
held as a `Secret`, and every message built from a response passes through `_redact`, so the key
never reaches a log line, an exception message or a repr.
"""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from common.classifier import Label
from common.config import Secret, VisionSettings
from common.errors import (
    EventError,
    Forbidden,
    NotAnImage,
    PermanentError,
    TooLarge,
    TransientError,
)

log = logging.getLogger("vision")

ANNOTATE_PATH = "/v1/images:annotate"
API_KEY_HEADER = "x-goog-api-key"

# Google's published content limits for images:annotate.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_REQUEST_BYTES = 10 * 1024 * 1024
MAX_IMAGES_PER_REQUEST = 16

# google.rpc.Code numbers that a per-image `error` carries.
RPC_INVALID_ARGUMENT = 3
RPC_DEADLINE_EXCEEDED = 4
RPC_PERMISSION_DENIED = 7
RPC_RESOURCE_EXHAUSTED = 8
RPC_ABORTED = 10
RPC_INTERNAL = 13
RPC_UNAVAILABLE = 14
RPC_UNAUTHENTICATED = 16
_RETRYABLE_RPC_CODES = frozenset(
    {RPC_DEADLINE_EXCEEDED, RPC_RESOURCE_EXHAUSTED, RPC_ABORTED, RPC_INTERNAL, RPC_UNAVAILABLE}
)
_RETRYABLE_HTTP_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt n sleeps uniform(0, min(cap, base * 2**n)).

    `max_attempts` bounds the attempts even when jitter draws tiny delays, so a dead endpoint is
    never hammered in a tight loop whatever the deadline.
    """

    base_delay: float = 0.25
    max_delay: float = 8.0
    max_attempts: int = 8

    def backoff(self, attempt: int, draw: Callable[[], float] = random.random) -> float:
        ceiling = min(self.max_delay, self.base_delay * 2.0**attempt)
        return draw() * ceiling


class RetryableCallError(Exception):
    """One attempt failed in a way another attempt may fix (internal to the retry loop)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True)
class ImageFailure:
    """A per-image error from the API (google.rpc.Status), already mapped to an EventError."""

    code: int
    message: str
    error: EventError

    @property
    def retryable(self) -> bool:
        return self.code in _RETRYABLE_RPC_CODES


ImageResult = list[Label] | ImageFailure


# --- request and response, as pure functions ----------------------------------------------------


def check_image_size(image: bytes, limit: int = MAX_IMAGE_BYTES) -> None:
    if len(image) > limit:
        raise TooLarge(
            f"image is {len(image)} bytes; the Vision API accepts at most {limit} bytes per image"
        )


def build_request_body(images: Sequence[bytes], max_results: int) -> bytes:
    """The JSON body of images:annotate for LABEL_DETECTION; refuses what Google would refuse."""
    if not 1 <= len(images) <= MAX_IMAGES_PER_REQUEST:
        raise ValueError(f"1 to {MAX_IMAGES_PER_REQUEST} images per request, got {len(images)}")
    for image in images:
        check_image_size(image)
    feature = {"type": "LABEL_DETECTION", "maxResults": max_results}
    requests = [
        {"image": {"content": base64.b64encode(image).decode("ascii")}, "features": [feature]}
        for image in images
    ]
    body = json.dumps({"requests": requests}, separators=(",", ":")).encode("ascii")
    if len(body) > MAX_REQUEST_BYTES:
        # base64 makes an image ~37 % larger, so images over ~7.5 MiB already hit this limit.
        raise TooLarge(
            f"the Vision request would be {len(body)} bytes (base64 adds ~37 %); the API accepts "
            f"at most {MAX_REQUEST_BYTES} bytes of JSON per request"
        )
    return body


def parse_labels(slot: Mapping[str, Any]) -> list[Label]:
    """`labelAnnotations` of one response slot, best first; `{}` means no labels were found."""
    annotations = slot.get("labelAnnotations") or []
    labels = [
        # proto3 JSON omits zero values, so a missing score is 0.0.
        Label(name=str(item.get("description", "")), score=float(item.get("score", 0.0)))
        for item in annotations
        if isinstance(item, Mapping)
    ]
    return sorted(labels, key=lambda label: label.score, reverse=True)


def image_failure(status: Mapping[str, Any], redact: Callable[[str], str]) -> ImageFailure:
    """Map a per-image google.rpc.Status to the error the event should end with."""
    code = _int(status.get("code"))
    message = redact(str(status.get("message") or "no message"))
    text = f"Vision API could not annotate the image: {message} (rpc code {code})"
    error: EventError
    if code == RPC_INVALID_ARGUMENT:
        error = NotAnImage(text)
    elif code in (RPC_PERMISSION_DENIED, RPC_UNAUTHENTICATED):
        error = Forbidden(text)
    elif code in _RETRYABLE_RPC_CODES:
        error = TransientError(text)
    else:
        error = PermanentError(text)
    return ImageFailure(code, message, error)


def parse_response(payload: Any, expected: int, redact: Callable[[str], str]) -> list[ImageResult]:
    """One result per image, in request order; a malformed answer is retryable."""
    slots = payload.get("responses") if isinstance(payload, Mapping) else None
    if not isinstance(slots, list) or len(slots) != expected:
        raise RetryableCallError(
            f"Vision API answered 200 without {expected} entries in 'responses'"
        )
    results: list[ImageResult] = []
    for slot in slots:
        if not isinstance(slot, Mapping):
            raise RetryableCallError("Vision API answered 200 with a malformed 'responses' entry")
        error = slot.get("error")
        if isinstance(error, Mapping) and _int(error.get("code")) != 0:
            results.append(image_failure(error, redact))
        else:
            results.append(parse_labels(slot))
    return results


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP-date), None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def call_error(
    status: int, payload: Any, retry_after: float | None, redact: Callable[[str], str]
) -> EventError | RetryableCallError:
    """Map a non-2xx answer (`{"error": {"code", "message", "status"}}`) to what we do next."""
    error = payload.get("error") if isinstance(payload, Mapping) else None
    error = error if isinstance(error, Mapping) else {}
    rpc_status = str(error.get("status") or "")
    message = redact(str(error.get("message") or "no message"))
    described = f"HTTP {status} {rpc_status}".rstrip() + f": {message}"
    if status in _RETRYABLE_HTTP_STATUSES or status >= 500:
        return RetryableCallError(described, retry_after)
    if _is_key_rejection(status, error):
        return Forbidden(
            f"Vision API rejected the API key ({described}); set a valid GOOGLE_VISION_API_KEY "
            "(or GOOGLE_VISION_API_KEY_FILE), then replay the dead-lettered events"
        )
    if status == 403:
        return Forbidden(
            f"Vision API denied the call ({described}); check that the key's project has the "
            "Cloud Vision API enabled and the key is allowed to call it"
        )
    if status == 413:
        return TooLarge(f"Vision API refused the request as too large ({described})")
    if status == 404:
        return PermanentError(f"Vision API not found at VISION_ENDPOINT ({described})")
    return PermanentError(f"Vision API refused the request ({described})")


def _is_key_rejection(status: int, error: Mapping[str, Any]) -> bool:
    if status == 401:
        return True
    if status != 400:
        return False
    details = error.get("details")
    reasons = {
        str(item.get("reason"))
        for item in (details if isinstance(details, list) else [])
        if isinstance(item, Mapping)
    }
    return "API_KEY_INVALID" in reasons or "API key" in str(error.get("message") or "")


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


# --- the client ---------------------------------------------------------------------------------


class VisionClient:
    """LABEL_DETECTION calls with retries inside a deadline. Thread-safe; `close()` once."""

    def __init__(
        self,
        settings: VisionSettings,
        policy: RetryPolicy | None = None,
    ) -> None:
        self._settings = settings
        self._policy = policy or RetryPolicy()
        self._key: Secret | None = settings.api_key
        self._closing = threading.Event()
        self._http = httpx.Client(
            base_url=settings.endpoint,
            timeout=httpx.Timeout(settings.timeout),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=8),
            headers={"content-type": "application/json", "accept": "application/json"},
        )

    def __repr__(self) -> str:
        key = "set" if self._key else "not set"
        return f"VisionClient(endpoint={self._settings.endpoint!r}, api_key={key})"

    @property
    def max_results(self) -> int:
        return self._settings.max_results

    def close(self) -> None:
        """Close the connection pool; a retry loop waiting out a backoff gives up at once."""
        self._closing.set()
        self._http.close()

    def detect_labels(self, image: bytes, max_results: int | None = None) -> list[Label]:
        """Labels for one image, best first; raises the mapped EventError on failure."""
        [result] = self.detect_labels_batch([image], max_results)
        if isinstance(result, ImageFailure):
            raise result.error
        return result

    def detect_labels_batch(
        self, images: Sequence[bytes], max_results: int | None = None
    ) -> list[ImageResult]:
        """One result per image (labels or an ImageFailure), in order.

        A call-level failure raises; images with a retryable per-image error are sent again
        (only those) while the deadline allows.
        """
        wanted = max_results or self._settings.max_results
        results: list[ImageResult | None] = [None] * len(images)
        # Built before the first attempt: a size violation fails before anything is sent.
        first_body = build_request_body(images, wanted)
        pending = list(range(len(images)))
        started = time.monotonic()
        deadline = started + self._settings.deadline
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                body = (
                    first_body
                    if len(pending) == len(images)
                    else build_request_body([images[i] for i in pending], wanted)
                )
                answered = self._post(body, len(pending), deadline)
                still_pending = []
                for index, result in zip(pending, answered, strict=True):
                    results[index] = result
                    if isinstance(result, ImageFailure) and result.retryable:
                        still_pending.append(index)
                pending = still_pending
                if not pending:
                    return [r for r in results if r is not None]
                reason = f"per-image error: {self._failure_reason(results, pending)}"
            except RetryableCallError as exc:
                reason, retry_after = exc.reason, exc.retry_after
            attempt += 1
            delay = self._policy.backoff(attempt - 1)
            if retry_after is not None:
                delay = max(delay, retry_after)
            remaining = deadline - time.monotonic()
            if attempt >= self._policy.max_attempts or delay >= remaining:
                if results and all(r is not None for r in results) and pending:
                    # Give the caller the per-image failures it has (they are TransientError).
                    return [r for r in results if r is not None]
                raise TransientError(
                    f"Vision API unavailable after {attempt} attempt(s) in "
                    f"{time.monotonic() - started:.1f} s (VISION_DEADLINE "
                    f"{self._settings.deadline:g} s): {reason}"
                )
            log.info(
                "Vision call failed; retrying",
                extra={"attempt": attempt, "retry_in_s": round(delay, 3), "reason": reason},
            )
            if self._closing.wait(delay):
                raise TransientError(f"Vision client closed while retrying: {reason}")

    def _failure_reason(self, results: Sequence[ImageResult | None], pending: list[int]) -> str:
        first = results[pending[0]]
        return first.message if isinstance(first, ImageFailure) else "unknown"

    def _post(self, body: bytes, expected: int, deadline: float) -> list[ImageResult]:
        remaining = deadline - time.monotonic()
        timeout = max(0.01, min(self._settings.timeout, remaining))
        headers = {API_KEY_HEADER: self._key.reveal()} if self._key else {}
        try:
            response = self._http.post(
                ANNOTATE_PATH, content=body, headers=headers, timeout=httpx.Timeout(timeout)
            )
        except httpx.TimeoutException as exc:
            raise RetryableCallError(
                f"timed out after {timeout:.2f} s ({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            raise RetryableCallError(
                self._redact(f"cannot reach {self._settings.endpoint}: {type(exc).__name__} {exc}")
            ) from None
        payload = _json_or_none(response)
        if response.status_code != 200:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            mapped = call_error(response.status_code, payload, retry_after, self._redact)
            raise mapped
        return parse_response(payload, expected, self._redact)

    def _redact(self, text: str) -> str:
        key = self._key.reveal() if self._key else ""
        return text.replace(key, "***") if key else text
