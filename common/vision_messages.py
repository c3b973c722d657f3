"""The Vision API's `images:annotate` messages for LABEL_DETECTION and SAFE_SEARCH_DETECTION, as
pure functions: the request body within Google's limits, the per-image results, and each failure
mapped to the runtime's errors (the table in `common.vision`). The client that sends them is
`common.vision`.

SafeSearch (v1 `SafeSearchAnnotation`): five categories, `adult`, `spoof`, `medical`, `violence`
and `racy`, each a `Likelihood` enum value: UNKNOWN (0), VERY_UNLIKELY, UNLIKELY, POSSIBLE, LIKELY,
VERY_LIKELY (5). The REST API writes them as proto3 JSON: enum names as strings (numbers are
accepted too), and a field at its default, UNKNOWN, is left out. A value outside the enum is a
malformed answer.
"""

from __future__ import annotations

import base64
import email.utils
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from common.errors import (
    EventError,
    Forbidden,
    NotAnImage,
    PermanentError,
    TooLarge,
    TransientError,
)
from common.result_records import Label

ANNOTATE_PATH = "/v1/images:annotate"
API_KEY_HEADER = "x-goog-api-key"

LABEL_DETECTION = "LABEL_DETECTION"
SAFE_SEARCH_DETECTION = "SAFE_SEARCH_DETECTION"
FEATURES = (LABEL_DETECTION, SAFE_SEARCH_DETECTION)  # the feature types this client asks for
# google.cloud.vision.v1.Likelihood, in enum order (index = number).
LIKELIHOODS = ("UNKNOWN", "VERY_UNLIKELY", "UNLIKELY", "POSSIBLE", "LIKELY", "VERY_LIKELY")
SAFE_SEARCH_CATEGORIES = ("adult", "spoof", "medical", "violence", "racy")

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


@dataclass(frozen=True)
class SafeSearch:
    """One image's `safeSearchAnnotation`: a Likelihood name per category."""

    adult: str = "UNKNOWN"
    spoof: str = "UNKNOWN"
    medical: str = "UNKNOWN"
    violence: str = "UNKNOWN"
    racy: str = "UNKNOWN"

    def as_dict(self) -> dict[str, str]:
        return {category: getattr(self, category) for category in SAFE_SEARCH_CATEGORIES}


@dataclass(frozen=True)
class Annotation:
    """What one image got: its labels (best first) and, when asked for, its SafeSearch."""

    labels: list[Label]
    safe_search: SafeSearch | None = None


ImageResult = list[Label] | ImageFailure
AnnotationResult = Annotation | ImageFailure


class MalformedAnswer(ValueError):
    """A 200 answer whose content does not follow the API's documented shape."""


def check_image_size(image: bytes, limit: int = MAX_IMAGE_BYTES) -> None:
    if len(image) > limit:
        raise TooLarge(
            f"image is {len(image)} bytes; the Vision API accepts at most {limit} bytes per image"
        )


def build_request_body(
    images: Sequence[bytes], max_results: int, features: Sequence[str] = (LABEL_DETECTION,)
) -> bytes:
    """The JSON body of images:annotate for `features`; refuses what Google would refuse."""
    if not 1 <= len(images) <= MAX_IMAGES_PER_REQUEST:
        raise ValueError(f"1 to {MAX_IMAGES_PER_REQUEST} images per request, got {len(images)}")
    unknown = [f for f in features if f not in FEATURES]
    if unknown or not features:
        raise ValueError(f"features must be some of {list(FEATURES)}, got {list(features)}")
    for image in images:
        check_image_size(image)
    # maxResults only means something to LABEL_DETECTION (SafeSearch has one answer per image).
    wanted = [
        {"type": f, "maxResults": max_results} if f == LABEL_DETECTION else {"type": f}
        for f in features
    ]
    requests = [
        {"image": {"content": base64.b64encode(image).decode("ascii")}, "features": wanted}
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


def parse_likelihood(value: Any, where: str) -> str:
    """A Likelihood from proto3 JSON: its name, or its number; anything else is refused."""
    if isinstance(value, str) and value in LIKELIHOODS:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(LIKELIHOODS):
        return LIKELIHOODS[value]
    raise MalformedAnswer(
        f"{where} is {value!r}, not a Likelihood (one of {', '.join(LIKELIHOODS)})"
    )


def parse_safe_search(slot: Mapping[str, Any]) -> SafeSearch | None:
    """`safeSearchAnnotation` of one response slot; None when the slot has none. A category
    left out is UNKNOWN (proto3 JSON omits default values)."""
    annotation = slot.get("safeSearchAnnotation")
    if annotation is None:
        return None
    if not isinstance(annotation, Mapping):
        raise MalformedAnswer(f"safeSearchAnnotation is {annotation!r}, not an object")
    return SafeSearch(
        **{
            category: parse_likelihood(
                annotation.get(category, "UNKNOWN"), f"safeSearchAnnotation.{category}"
            )
            for category in SAFE_SEARCH_CATEGORIES
        }
    )


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
    """The labels per image (or its failure), in request order; a malformed answer is retryable."""
    return [
        result.labels if isinstance(result, Annotation) else result
        for result in parse_annotations(payload, expected, redact)
    ]


def parse_annotations(
    payload: Any, expected: int, redact: Callable[[str], str]
) -> list[AnnotationResult]:
    """One result per image, in request order; a malformed answer is retryable."""
    slots = payload.get("responses") if isinstance(payload, Mapping) else None
    if not isinstance(slots, list) or len(slots) != expected:
        raise RetryableCallError(
            f"Vision API answered 200 without {expected} entries in 'responses'"
        )
    results: list[AnnotationResult] = []
    for index, slot in enumerate(slots):
        if not isinstance(slot, Mapping):
            raise RetryableCallError("Vision API answered 200 with a malformed 'responses' entry")
        error = slot.get("error")
        if isinstance(error, Mapping) and _int(error.get("code")) != 0:
            results.append(image_failure(error, redact))
            continue
        try:
            safe_search = parse_safe_search(slot)
        except MalformedAnswer as exc:
            raise RetryableCallError(
                f"Vision API answered 200 with a malformed responses[{index}]: {exc}"
            ) from None
        results.append(Annotation(parse_labels(slot), safe_search))
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
