"""The Google Cloud Vision `images:annotate` stand-in: Google's contract, a real model behind it."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from tests.fixtures.modelserver import ModelServer, photo_jpeg

ANNOTATE = "/v1/images:annotate"
BAD_KEY = {
    "error": {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
    }
}


def annotate(modelserver: ModelServer, body: object) -> httpx.Response:
    """POST images:annotate with the stand-in's key, as Google's clients do."""
    return httpx.post(
        modelserver.rest_url + ANNOTATE,
        params={"key": modelserver.vision_api_key},
        json=body,
        timeout=30,
    )


def _label_request(content: bytes, max_results: int = 5) -> dict[str, Any]:
    return {
        "image": {"content": base64.b64encode(content).decode()},
        "features": [{"type": "LABEL_DETECTION", "maxResults": max_results}],
    }


def test_labels_for_real_photos(modelserver: ModelServer) -> None:
    body = {
        "requests": [_label_request(photo_jpeg("chelsea")), _label_request(photo_jpeg("coffee"), 3)]
    }
    response = annotate(modelserver, body)
    assert response.status_code == 200, response.text
    cat, cup = response.json()["responses"]
    assert len(cat["labelAnnotations"]) == 5 and len(cup["labelAnnotations"]) == 3
    first = cat["labelAnnotations"][0]
    assert set(first) == {"mid", "description", "score", "topicality"}
    assert first["mid"].startswith("/imagenet/n")
    assert first["score"] == first["topicality"]
    scores = [a["score"] for a in cat["labelAnnotations"]]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
    cat_words = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
    assert {a["description"] for a in cat["labelAnnotations"]} & cat_words
    assert {a["description"] for a in cup["labelAnnotations"]} & {"coffee mug", "cup", "espresso"}


def test_key_in_header_works(modelserver: ModelServer) -> None:
    response = httpx.post(
        modelserver.rest_url + ANNOTATE,
        headers={"x-goog-api-key": modelserver.vision_api_key},
        json={"requests": [_label_request(photo_jpeg("coffee"), 1)]},
        timeout=30,
    )
    assert response.status_code == 200
    assert len(response.json()["responses"][0]["labelAnnotations"]) == 1


@pytest.mark.parametrize("params", [{}, {"key": "wrong"}], ids=["missing", "wrong"])
def test_missing_or_wrong_key_is_googles_400(
    modelserver: ModelServer, params: dict[str, str]
) -> None:
    response = httpx.post(
        modelserver.rest_url + ANNOTATE,
        params=params,
        json={"requests": [_label_request(photo_jpeg("coffee"))]},
    )
    assert response.status_code == 400
    assert response.json() == BAD_KEY


def test_per_image_errors_leave_other_slots_intact(modelserver: ModelServer) -> None:
    unsupported = _label_request(photo_jpeg("coffee"))
    unsupported["features"] = [{"type": "FACE_DETECTION"}]
    body = {
        "requests": [
            _label_request(b"definitely not an image"),
            unsupported,
            _label_request(photo_jpeg("chelsea")),
        ]
    }
    response = annotate(modelserver, body)
    assert response.status_code == 200
    bad_image, bad_feature, good = response.json()["responses"]
    assert bad_image == {"error": {"code": 3, "message": "Bad image data."}}
    assert bad_feature["error"]["code"] == 3 and "FACE_DETECTION" in bad_feature["error"]["message"]
    assert len(good["labelAnnotations"]) == 5


def test_more_than_16_requests_is_400(modelserver: ModelServer) -> None:
    item = _label_request(b"x")
    response = annotate(modelserver, {"requests": [item] * 17})
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_body_over_10_mb_is_400(modelserver: ModelServer) -> None:
    content = base64.b64encode(b"\0" * (8 * 1024 * 1024)).decode()  # ~10.7 MB once base64
    body = {
        "requests": [{"image": {"content": content}, "features": [{"type": "LABEL_DETECTION"}]}]
    }
    response = annotate(modelserver, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and "size" in error["message"]
