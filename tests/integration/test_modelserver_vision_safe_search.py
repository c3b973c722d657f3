"""SAFE_SEARCH_DETECTION on the model server's Vision stand-in: Google's documented answer shape
(`safeSearchAnnotation`, Likelihood names, proto3 JSON leaving UNKNOWN out), backed by the real
open_nsfw model, read back by the project's Vision client."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.env import Secret
from common.vision import VisionClient, VisionSettings
from common.vision_messages import LIKELIHOODS, SAFE_SEARCH_CATEGORIES, SafeSearch
from localknative.photos import CATALOGUE, load_photos
from modelserver.open_nsfw import NSFW_INDEX
from modelserver.registry import pixels_from_bytes
from modelserver.safe_search import likelihood
from testkit.services import running_modelserver
from tests.fixtures.modelserver import OPEN_NSFW_MODEL, ModelServer

ANNOTATE = "/v1/images:annotate"
PHOTOS = load_photos(len(CATALOGUE))


def annotate(server: ModelServer, features: list[dict[str, Any]], images: list[bytes]) -> Any:
    body = {
        "requests": [
            {"image": {"content": base64.b64encode(image).decode()}, "features": features}
            for image in images
        ]
    }
    response = httpx.post(
        server.rest_url + ANNOTATE,
        headers={"x-goog-api-key": server.vision_api_key},
        json=body,
        timeout=60,
    )
    return response


def nsfw_scores(server: ModelServer, images: list[bytes]) -> list[float]:
    """open_nsfw's own answer over REST Predict for the stand-in's pixels (EXIF applied)."""
    pixels = [pixels_from_bytes(image, upright=True).tolist() for image in images]
    response = httpx.post(
        f"{server.rest_url}/v1/models/{OPEN_NSFW_MODEL}:predict",
        json={"instances": pixels},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return [p["probabilities"][NSFW_INDEX] for p in response.json()["predictions"]]


def test_labels_and_safe_search_for_real_photos(modelserver: ModelServer) -> None:
    images = [photo.jpeg for photo in PHOTOS[:6]]
    features: list[dict[str, Any]] = [
        {"type": "LABEL_DETECTION", "maxResults": 2},
        {"type": "SAFE_SEARCH_DETECTION"},
    ]
    response = annotate(modelserver, features, images)
    assert response.status_code == 200, response.text
    slots = response.json()["responses"]
    for slot, score in zip(slots, nsfw_scores(modelserver, images), strict=True):
        assert len(slot["labelAnnotations"]) == 2
        annotation = slot["safeSearchAnnotation"]
        # adult and racy come from open_nsfw; spoof, medical and violence are UNKNOWN, which
        # proto3 JSON leaves out.
        assert set(annotation) == {"adult", "racy"}
        assert set(annotation.values()) <= set(LIKELIHOODS)
        assert annotation["adult"] == annotation["racy"] == likelihood(score)
        # None of the demo's photos is unsafe.
        assert annotation["adult"] == "VERY_UNLIKELY", (score, annotation)


def test_safe_search_alone_has_no_labels(modelserver: ModelServer) -> None:
    response = annotate(modelserver, [{"type": "SAFE_SEARCH_DETECTION"}], [PHOTOS[0].jpeg])
    assert response.status_code == 200, response.text
    [slot] = response.json()["responses"]
    assert set(slot) == {"safeSearchAnnotation"}


def test_an_unsupported_feature_is_a_per_image_error(modelserver: ModelServer) -> None:
    features = [{"type": "FACE_DETECTION"}]
    response = annotate(modelserver, features, [PHOTOS[0].jpeg])
    assert response.status_code == 200
    [slot] = response.json()["responses"]
    assert slot["error"]["code"] == 3
    assert "LABEL_DETECTION and SAFE_SEARCH_DETECTION" in slot["error"]["message"]


def test_the_vision_client_reads_the_stand_in(modelserver: ModelServer) -> None:
    settings = VisionSettings(
        api_key=Secret(modelserver.vision_api_key),
        endpoint=modelserver.rest_url,
        max_results=3,
        features=("LABEL_DETECTION", "SAFE_SEARCH_DETECTION"),
    )
    client = VisionClient(settings)
    try:
        annotation = client.annotate(PHOTOS[0].jpeg)  # the tabby cat
    finally:
        client.close()
    assert len(annotation.labels) == 3
    assert annotation.safe_search == SafeSearch(
        adult="VERY_UNLIKELY", spoof="UNKNOWN", medical="UNKNOWN", violence="UNKNOWN",
        racy="VERY_UNLIKELY",
    )  # fmt: skip
    assert list(annotation.safe_search.as_dict()) == list(SAFE_SEARCH_CATEGORIES)


@pytest.fixture(scope="module")
def labels_only_server(
    log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelServer]:
    """A model server that serves the label model but no open_nsfw."""
    config = tmp_path_factory.mktemp("labels-only") / "models.json"
    entry = {"name": "efficientnet_lite0", "model_kind": "efficientnet_lite0"}
    config.write_text(json.dumps({"model_config_list": {"config": [entry]}}))
    with running_modelserver(log_dir, config, "labels-only-key") as server:
        yield server


def test_without_open_nsfw_safe_search_is_unavailable_and_labels_still_work(
    labels_only_server: ModelServer,
) -> None:
    image = [PHOTOS[1].jpeg]
    safe = annotate(labels_only_server, [{"type": "SAFE_SEARCH_DETECTION"}], image)
    assert safe.status_code == 503
    assert safe.json()["error"]["status"] == "UNAVAILABLE"
    assert "open_nsfw" in safe.json()["error"]["message"]
    labels = annotate(labels_only_server, [{"type": "LABEL_DETECTION"}], image)
    assert labels.status_code == 200 and labels.json()["responses"][0]["labelAnnotations"]
