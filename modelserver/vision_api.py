"""A stand-in for Google Cloud Vision's `images:annotate` (LABEL_DETECTION and
SAFE_SEARCH_DETECTION), for offline runs.

It is NOT Google's service: labels are the ImageNet-1k classes of a local EfficientNet-Lite0, the
score is its softmax probability (also used as topicality), and `mid` is "/imagenet/<wnid>"
rather than a Knowledge Graph id. SafeSearch comes from open_nsfw's nsfw score, as the
Likelihood enum (`modelserver.safe_search` has the bands). The request/response shapes and error
conventions follow Google's documented REST contract (v1 `images:annotate`):

- API key as `?key=` or `x-goog-api-key`, checked only when the server was given a key; a wrong
  or missing key is HTTP 400 "API key not valid. Please pass a valid API key." INVALID_ARGUMENT.
- At most 16 requests per call and 10 MB per body: beyond that, HTTP 400 INVALID_ARGUMENT.
- Per-image problems (unsupported feature, undecodable image, no image) fill that slot of
  `responses` with `{"error": {"code": 3, "message": ...}}` and the rest still succeed.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from common.errors import NotAnImage, TooLarge
from common.labels import imagenet_names, imagenet_wnids
from common.vision_messages import FEATURES, LABEL_DETECTION, SAFE_SEARCH_DETECTION
from modelserver import graphs
from modelserver.open_nsfw import NSFW_INDEX
from modelserver.registry import ModelNotFoundError, ModelRegistry, pixels_from_bytes
from modelserver.safe_search import safe_search_annotation

MAX_REQUESTS_PER_CALL = 16
MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_RESULTS = 10
INVALID_ARGUMENT_CODE = 3  # google.rpc.Code.INVALID_ARGUMENT, used in per-image errors
BAD_KEY_MESSAGE = "API key not valid. Please pass a valid API key."


@dataclass(frozen=True)
class VisionStandinSettings:
    """The stand-in's own settings (flags of `python -m modelserver`), not the Vision client's."""

    model_name: str = "efficientnet_lite0"
    api_key: str | None = None
    safe_search_model: str = "open_nsfw"


def google_error(http_status: int, message: str, status: str = "INVALID_ARGUMENT") -> JSONResponse:
    return JSONResponse(
        {"error": {"code": http_status, "message": message, "status": status}},
        status_code=http_status,
    )


def _image_error(message: str) -> dict[str, Any]:
    return {"error": {"code": INVALID_ARGUMENT_CODE, "message": message}}


@dataclass
class _Slot:
    """One entry of `requests`: either an error already (`response`), or decoded pixels, the
    features asked for and maxResults, whose annotations `answer` collects."""

    response: dict[str, Any] | None = None
    pixels: npt.NDArray[np.uint8] | None = None
    max_results: int = DEFAULT_MAX_RESULTS
    features: frozenset[str] = frozenset()
    answer: dict[str, Any] = field(default_factory=dict)


class BadRequest(ValueError):
    """The whole call is invalid (HTTP 400), as opposed to one image in it."""


def _parse_slot(index: int, entry: Any) -> _Slot:
    if not isinstance(entry, dict):
        raise BadRequest(f"Invalid value at 'requests[{index}]': expected an object")
    features = entry.get("features") or []
    if not isinstance(features, list) or not features:
        return _Slot(_image_error('No feature specified: add {"type": "LABEL_DETECTION"}.'))
    max_results = DEFAULT_MAX_RESULTS
    wanted = set()
    for feature in features:
        feature_type = feature.get("type") if isinstance(feature, dict) else None
        if feature_type not in FEATURES:
            return _Slot(
                _image_error(
                    f"Feature type {feature_type} is not supported by this Vision stand-in; "
                    f"only {' and '.join(FEATURES)} are."
                )
            )
        wanted.add(str(feature_type))
        if feature_type != LABEL_DETECTION:
            continue
        raw_max = feature.get("maxResults", DEFAULT_MAX_RESULTS)
        try:
            max_results = int(raw_max) if int(raw_max) > 0 else DEFAULT_MAX_RESULTS
        except (TypeError, ValueError):
            raise BadRequest(
                f"Invalid value at 'requests[{index}].features.max_results' (TYPE_INT32), "
                f"{raw_max!r}"
            ) from None
    image = entry.get("image")
    if not isinstance(image, dict) or "content" not in image:
        if isinstance(image, dict) and "source" in image:
            return _Slot(_image_error("image.source is not supported offline; send image.content."))
        return _Slot(_image_error("No image present."))
    try:
        data = base64.b64decode(str(image["content"]), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(
            f"Invalid value at 'requests[{index}].image.content' (TYPE_BYTES), "
            "Base64 decoding failed"
        ) from None
    try:
        pixels = pixels_from_bytes(data, upright=True)
    except (NotAnImage, TooLarge):
        return _Slot(_image_error("Bad image data."))
    return _Slot(pixels=pixels, max_results=min(max_results, 1000), features=frozenset(wanted))


def annotate(registry: ModelRegistry, settings: VisionStandinSettings, body: Any) -> dict[str, Any]:
    """The `images:annotate` response for a parsed request body (raises BadRequest)."""
    if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
        raise BadRequest('Invalid JSON payload: expected {"requests": [...]}')
    entries = body["requests"]
    if len(entries) > MAX_REQUESTS_PER_CALL:
        raise BadRequest(
            f"Too many images in one request: {len(entries)} > {MAX_REQUESTS_PER_CALL}."
        )
    slots = [_parse_slot(i, entry) for i, entry in enumerate(entries)]
    todo = [slot for slot in slots if slot.response is None and slot.pixels is not None]
    labelled = [slot for slot in todo if LABEL_DETECTION in slot.features]
    if labelled:
        probabilities = _probabilities(registry, settings.model_name, labelled)
        names, wnids = imagenet_names(), imagenet_wnids()
        for slot, row in zip(labelled, probabilities, strict=True):
            top = np.argsort(-row)[: slot.max_results]
            slot.answer["labelAnnotations"] = [
                {
                    "mid": f"/imagenet/{wnids[i]}",
                    "description": names[i],
                    "score": float(row[i]),
                    "topicality": float(row[i]),
                }
                for i in top
            ]
    screened = [slot for slot in todo if SAFE_SEARCH_DETECTION in slot.features]
    if screened:
        probabilities = _probabilities(registry, settings.safe_search_model, screened)
        for slot, row in zip(screened, probabilities, strict=True):
            slot.answer["safeSearchAnnotation"] = safe_search_annotation(float(row[NSFW_INDEX]))
    return {
        "responses": [slot.answer if slot.response is None else slot.response for slot in slots]
    }


def _probabilities(
    registry: ModelRegistry, model_name: str, slots: list[_Slot]
) -> npt.NDArray[np.float32]:
    """One Predict of `model_name` over the slots' pixels (raises ModelNotFoundError)."""
    model = registry.get(model_name)
    batch = np.stack([slot.pixels for slot in slots if slot.pixels is not None])
    probabilities: npt.NDArray[np.float32] = model.predict(
        {graphs.INPUT_NAME: batch}, output_filter=[graphs.PROBABILITIES]
    )[graphs.PROBABILITIES]
    return probabilities


def _key_ok(request: Request, expected: str | None) -> bool:
    if expected is None:
        return True
    given = request.query_params.get("key") or request.headers.get("x-goog-api-key") or ""
    return hmac.compare_digest(given.encode(), expected.encode())


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None when it exceeds `limit` (stops reading as soon as it does)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def add_vision_routes(
    app: FastAPI, registry: ModelRegistry, settings: VisionStandinSettings
) -> None:
    @app.post("/v1/images:annotate")
    async def images_annotate(request: Request) -> JSONResponse:
        if not _key_ok(request, settings.api_key):
            return google_error(400, BAD_KEY_MESSAGE)
        raw = await _read_limited(request, MAX_BODY_BYTES)
        if raw is None:
            return google_error(
                400, f"Request payload size exceeds the limit: {MAX_BODY_BYTES} bytes."
            )
        try:
            body = json.loads(raw)
        except ValueError as exc:
            return google_error(400, f"Invalid JSON payload received. {exc}")
        try:
            result = await run_in_threadpool(annotate, registry, settings, body)
        except BadRequest as exc:
            return google_error(400, str(exc))
        except ModelNotFoundError as exc:
            return google_error(
                503, f"a model of the Vision stand-in is not served: {exc}", "UNAVAILABLE"
            )
        return JSONResponse(result)
