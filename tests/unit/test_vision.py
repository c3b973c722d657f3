"""The Vision client's pure parts: request body, response parsing, error mapping, backoff."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from common.classifier import Label
from common.env import ConfigError, Secret
from common.errors import Forbidden, NotAnImage, PermanentError, TooLarge, TransientError
from common.vision import RetryPolicy, VisionClient, VisionSettings
from common.vision_messages import (
    MAX_IMAGE_BYTES,
    MAX_IMAGES_PER_REQUEST,
    MAX_REQUEST_BYTES,
    ImageFailure,
    RetryableCallError,
    build_request_body,
    call_error,
    parse_labels,
    parse_response,
    parse_retry_after,
)

KEY = "AIzaUnitTestKey0123456789"


def no_redaction(text: str) -> str:
    return text


def redact_key(text: str) -> str:
    return text.replace(KEY, "***")


def test_the_body_asks_for_label_detection_with_base64_content() -> None:
    body = json.loads(build_request_body([b"\xff\xd8\xffabc", b"png!"], max_results=3))
    assert body == {
        "requests": [
            {
                "image": {"content": base64.b64encode(b"\xff\xd8\xffabc").decode()},
                "features": [{"type": "LABEL_DETECTION", "maxResults": 3}],
            },
            {
                "image": {"content": base64.b64encode(b"png!").decode()},
                "features": [{"type": "LABEL_DETECTION", "maxResults": 3}],
            },
        ]
    }


def test_the_body_refuses_what_google_would_refuse() -> None:
    with pytest.raises(TooLarge):
        build_request_body([b"x" * (MAX_IMAGE_BYTES + 1)], 1)
    # Under the image limit but over the JSON limit once base64-encoded.
    with pytest.raises(TooLarge):
        build_request_body([b"x" * (MAX_REQUEST_BYTES * 3 // 4 + 1024)], 1)
    with pytest.raises(ValueError):
        build_request_body([b"x"] * (MAX_IMAGES_PER_REQUEST + 1), 1)
    with pytest.raises(ValueError):
        build_request_body([], 1)
    # The largest image that fits: ~7.5 MiB.
    fitting = b"x" * (MAX_REQUEST_BYTES * 3 // 4 - 1024)
    assert len(build_request_body([fitting], 1)) <= MAX_REQUEST_BYTES


def test_labels_are_parsed_best_first_with_missing_scores_as_zero() -> None:
    slot = {
        "labelAnnotations": [
            {"mid": "/m/1", "description": "Mammal", "score": 0.8, "topicality": 0.8},
            {"mid": "/m/2", "description": "Cat", "score": 0.97, "topicality": 0.97},
            {"mid": "/m/3", "description": "Nothing"},
        ]
    }
    assert parse_labels(slot) == [Label("Cat", 0.97), Label("Mammal", 0.8), Label("Nothing", 0.0)]
    assert parse_labels({}) == []


def test_per_image_errors_map_by_rpc_code() -> None:
    payload = {
        "responses": [
            {"error": {"code": 3, "message": "Bad image data."}},
            {"error": {"code": 14, "message": "try later"}},
            {"error": {"code": 7, "message": "denied"}},
            {"error": {"code": 9, "message": "precondition"}},
            {"labelAnnotations": [{"description": "Cup", "score": 0.5}]},
            {},
        ]
    }
    results = parse_response(payload, 6, no_redaction)
    errors = [r.error for r in results if isinstance(r, ImageFailure)]
    assert [type(e) for e in errors] == [NotAnImage, TransientError, Forbidden, PermanentError]
    assert [r.retryable for r in results if isinstance(r, ImageFailure)] == [
        False,
        True,
        False,
        False,
    ]
    assert results[4:] == [[Label("Cup", 0.5)], []]


@pytest.mark.parametrize(
    "payload", [None, {}, {"responses": []}, {"responses": [{}, {}]}, {"responses": ["x"]}]
)
def test_a_malformed_200_is_retryable(payload: object) -> None:
    with pytest.raises(RetryableCallError):
        parse_response(payload, 1, no_redaction)


def _error(code: int, status: str, message: str, reason: str | None = None) -> object:
    error: dict[str, object] = {"code": code, "message": message, "status": status}
    if reason:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}]
    return {"error": error}


@pytest.mark.parametrize(
    ("status", "payload", "expected"),
    [
        (400, _error(400, "INVALID_ARGUMENT", "API key not valid.", "API_KEY_INVALID"), Forbidden),
        (400, _error(400, "INVALID_ARGUMENT", "Invalid JSON payload received."), PermanentError),
        (401, _error(401, "UNAUTHENTICATED", "no"), Forbidden),
        (403, _error(403, "PERMISSION_DENIED", "API disabled"), Forbidden),
        (404, None, PermanentError),
        (413, None, TooLarge),
        (408, None, RetryableCallError),
        (429, _error(429, "RESOURCE_EXHAUSTED", "Quota exceeded"), RetryableCallError),
        (500, _error(500, "INTERNAL", "oops"), RetryableCallError),
        (502, "<html>bad gateway</html>", RetryableCallError),
        (503, _error(503, "UNAVAILABLE", "later"), RetryableCallError),
        (504, None, RetryableCallError),
    ],
)
def test_call_errors_map_to_permanent_or_retryable(
    status: int, payload: object, expected: type[Exception]
) -> None:
    error = call_error(status, payload, None, no_redaction)
    assert type(error) is expected


def test_a_key_rejection_says_what_to_fix() -> None:
    payload = _error(400, "INVALID_ARGUMENT", "API key not valid.", "API_KEY_INVALID")
    error = call_error(400, payload, None, no_redaction)
    assert isinstance(error, Forbidden)
    assert "GOOGLE_VISION_API_KEY" in error.message
    assert "replay" in error.message


def test_messages_from_the_server_are_redacted() -> None:
    error = call_error(400, _error(400, "INVALID_ARGUMENT", f"bad {KEY}"), None, redact_key)
    assert KEY not in str(error)
    [failure] = parse_response(
        {"responses": [{"error": {"code": 3, "message": KEY}}]}, 1, redact_key
    )
    assert isinstance(failure, ImageFailure)
    assert KEY not in str(failure.error)


def test_retry_after_takes_seconds_or_an_http_date() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp()) == pytest.approx(30.0)
    earlier = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(earlier, now=now.timestamp()) == 0.0


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    policy = RetryPolicy(base_delay=0.25, max_delay=2.0)
    assert [policy.backoff(n, draw=lambda: 1.0) for n in range(5)] == [0.25, 0.5, 1.0, 2.0, 2.0]
    assert policy.backoff(3, draw=lambda: 0.0) == 0.0
    assert policy.backoff(1, draw=lambda: 0.5) == 0.25


def test_settings_and_client_never_show_the_key(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    settings = VisionSettings.from_env(
        {"GOOGLE_VISION_API_KEY_FILE": str(key_file), "VISION_ENDPOINT": "http://127.0.0.1:9"}
    )
    assert settings.api_key == Secret(KEY)
    client = VisionClient(settings)
    try:
        for text in (repr(settings), str(settings), repr(client)):
            assert KEY not in text
        assert "api_key=set" in repr(client)
    finally:
        client.close()


def test_settings_defaults_follow_the_seed() -> None:
    settings = VisionSettings.from_env({})
    assert settings.endpoint == "https://vision.googleapis.com"
    assert settings.max_results == 1
    assert settings.api_key is None
    with pytest.raises(ConfigError, match="VISION_ENDPOINT"):
        VisionSettings.from_env({"VISION_ENDPOINT": "vision.googleapis.com"})
