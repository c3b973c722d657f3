"""Google Cloud Vision REST client: LABEL_DETECTION and SAFE_SEARCH_DETECTION over
`POST {endpoint}/v1/images:annotate` (VISION_FEATURES says which).

One `VisionClient` per process holds one `httpx.Client` (HTTP/1.1 keep-alive). A call:

    image bytes -> size checks -> JSON body (base64) -> POST, retried within VISION_DEADLINE
    -> per-image result -> `Annotation`: `Label`s, best first, and the SafeSearch likelihoods

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

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from common.classifier import Label
from common.env import ConfigError, Env, Secret, env_var, parse_endpoint_url
from common.errors import TransientError
from common.vision_messages import (
    ANNOTATE_PATH,
    API_KEY_HEADER,
    FEATURES,
    LABEL_DETECTION,
    Annotation,
    AnnotationResult,
    ImageFailure,
    ImageResult,
    RetryableCallError,
    build_request_body,
    call_error,
    parse_annotations,
    parse_retry_after,
)

log = logging.getLogger("vision")

VISION = "Google Cloud Vision client (vision)"
VISION_API_KEY = env_var(
    "GOOGLE_VISION_API_KEY", "API key (the seed's name). Never logged.", VISION, secret=True
)
VISION_ENDPOINT = env_var(
    "VISION_ENDPOINT",
    "Base URL of the Vision API; point it at the model server's stand-in for offline runs.",
    VISION,
    "https://vision.googleapis.com",
)
VISION_MAX_RESULTS = env_var(
    "VISION_MAX_RESULTS", "Labels asked for per image (the seed's --num-annotations).", VISION, "1"
)
VISION_TIMEOUT = env_var("VISION_TIMEOUT", "Seconds per HTTP attempt.", VISION, "10")
VISION_DEADLINE = env_var(
    "VISION_DEADLINE", "Seconds for all attempts of one call, retries included.", VISION, "30"
)
VISION_FEATURES = env_var(
    "VISION_FEATURES",
    "Comma-separated features asked for per image: LABEL_DETECTION, SAFE_SEARCH_DETECTION.",
    VISION,
    LABEL_DETECTION,
)


def parse_features(names: Sequence[str]) -> tuple[str, ...]:
    """VISION_FEATURES' names, upper-cased, in order, once each; anything unknown is refused."""
    features = tuple(dict.fromkeys(name.strip().upper() for name in names if name.strip()))
    unknown = [name for name in features if name not in FEATURES]
    if unknown or not features:
        raise ConfigError(
            f"{VISION_FEATURES.name}: expected a comma-separated list of {', '.join(FEATURES)}; "
            f"got {', '.join(repr(n) for n in (unknown or names)) or 'nothing'}"
        )
    return features


@dataclass(frozen=True)
class VisionSettings:
    api_key: Secret | None = None
    endpoint: str = "https://vision.googleapis.com"
    max_results: int = 1
    timeout: float = 10.0
    deadline: float = 30.0
    features: tuple[str, ...] = (LABEL_DETECTION,)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> VisionSettings:
        env = Env(environ)
        endpoint = env.required_str(VISION_ENDPOINT)
        try:
            endpoint = parse_endpoint_url(endpoint) if "://" in endpoint else ""
        except ValueError:
            endpoint = ""
        if not endpoint:
            raise ConfigError(f"{VISION_ENDPOINT.name}: expected an http(s) URL")
        return cls(
            api_key=env.secret(VISION_API_KEY),
            endpoint=endpoint,
            max_results=env.integer(VISION_MAX_RESULTS, 1, 1000),
            timeout=env.number(VISION_TIMEOUT, 0.01),
            deadline=env.number(VISION_DEADLINE, 0.01),
            features=parse_features(env.csv(VISION_FEATURES)),
        )


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


# --- the client ---------------------------------------------------------------------------------


class VisionClient:
    """images:annotate calls with retries inside a deadline. Thread-safe; `close()` once."""

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
        return self.annotate(image, max_results, (LABEL_DETECTION,)).labels

    def detect_labels_batch(
        self, images: Sequence[bytes], max_results: int | None = None
    ) -> list[ImageResult]:
        """One result per image (labels or an ImageFailure), in order (LABEL_DETECTION only)."""
        return [
            result.labels if isinstance(result, Annotation) else result
            for result in self.annotate_batch(images, max_results, (LABEL_DETECTION,))
        ]

    def annotate(
        self,
        image: bytes,
        max_results: int | None = None,
        features: Sequence[str] | None = None,
    ) -> Annotation:
        """One image's annotation for `features` (default: VISION_FEATURES); raises the mapped
        EventError on failure."""
        [result] = self.annotate_batch([image], max_results, features)
        if isinstance(result, ImageFailure):
            raise result.error
        return result

    def annotate_batch(
        self,
        images: Sequence[bytes],
        max_results: int | None = None,
        features: Sequence[str] | None = None,
    ) -> list[AnnotationResult]:
        """One result per image (an Annotation or an ImageFailure), in order.

        A call-level failure raises; images with a retryable per-image error are sent again
        (only those) while the deadline allows.
        """
        wanted_features = tuple(features or self._settings.features)
        wanted = max_results or self._settings.max_results
        results: list[AnnotationResult | None] = [None] * len(images)
        # Built before the first attempt: a size violation fails before anything is sent.
        first_body = build_request_body(images, wanted, wanted_features)
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
                    else build_request_body([images[i] for i in pending], wanted, wanted_features)
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

    def _failure_reason(
        self, results: Sequence[AnnotationResult | None], pending: list[int]
    ) -> str:
        first = results[pending[0]]
        return first.message if isinstance(first, ImageFailure) else "unknown"

    def _post(self, body: bytes, expected: int, deadline: float) -> list[AnnotationResult]:
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
        payload = json_or_none(response)
        if response.status_code != 200:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            mapped = call_error(response.status_code, payload, retry_after, self._redact)
            raise mapped
        return parse_annotations(payload, expected, self._redact)

    def _redact(self, text: str) -> str:
        key = self._key.reveal() if self._key else ""
        return text.replace(key, "***") if key else text


def json_or_none(response: httpx.Response) -> Any:
    """The answer's JSON, or None when it is not JSON (a proxy's HTML error page)."""
    try:
        return response.json()
    except ValueError:
        return None
