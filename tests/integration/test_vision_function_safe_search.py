"""The vision function with VISION_FEATURES=LABEL_DETECTION,SAFE_SEARCH_DETECTION as a process:
real RGW, a real photo, the model server's Vision stand-in (open_nsfw behind SafeSearch); the
likelihoods are logged and carried in the reply event. A feature it does not know stops it at
start with one line."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.fixtures.modelserver import ModelServer, photo_jpeg
from tests.fixtures.processes import python_argv
from tests.fixtures.rgw import RgwGateway
from tests.fixtures.vision import VisionFactory, s3_event

pytestmark = pytest.mark.rgw

FEATURES = "LABEL_DETECTION,SAFE_SEARCH_DETECTION"


def test_a_photo_gets_labels_and_safe_search_logged_and_replied(
    rgw: RgwGateway, bucket: str, modelserver: ModelServer, vision_function: VisionFactory
) -> None:
    function = vision_function(
        modelserver.rest_url,
        api_key=modelserver.vision_api_key,
        env={"VISION_FEATURES": FEATURES, "VISION_MAX_RESULTS": "2", "TOP_K": "2"},
    )
    key = "photos/chelsea.jpg"
    rgw.s3_client().put_object(
        Bucket=bucket, Key=key, Body=photo_jpeg("chelsea"), ContentType="image/jpeg"
    )
    headers, body = s3_event(bucket, key)

    response = function.post_event(headers, body)

    assert response.status_code == 200, response.text
    data = json.loads(response.content)
    assert len(data["labels"]) == 2
    assert data["safe_search"] == {
        "adult": "VERY_UNLIKELY",
        "spoof": "UNKNOWN",
        "medical": "UNKNOWN",
        "violence": "UNKNOWN",
        "racy": "VERY_UNLIKELY",
    }
    [line] = [
        entry
        for entry in function.log_lines()
        if entry.get("logger") == "vision" and entry.get("key") == key and "safe_search" in entry
    ]
    assert line["message"] == (
        "safe search: adult VERY_UNLIKELY, spoof UNKNOWN, medical UNKNOWN, violence UNKNOWN, "
        "racy VERY_UNLIKELY"
    )
    assert line["safe_search"] == data["safe_search"]


def test_labels_only_by_default_has_no_safe_search(
    rgw: RgwGateway, bucket: str, modelserver: ModelServer, vision_function: VisionFactory
) -> None:
    function = vision_function(modelserver.rest_url, api_key=modelserver.vision_api_key)
    key = "photos/coffee.jpg"
    rgw.s3_client().put_object(Bucket=bucket, Key=key, Body=photo_jpeg("coffee"))
    response = function.post_event(*s3_event(bucket, key))
    assert response.status_code == 200, response.text
    assert "safe_search" not in json.loads(response.content)


def test_an_unknown_feature_stops_the_function_with_one_line() -> None:
    result = subprocess.run(
        python_argv("-m", "functions.vision"),
        env={"PATH": "/usr/bin:/bin", "VISION_FEATURES": "LABEL_DETECTION,FACE_DETECTION"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "configuration error: VISION_FEATURES: expected a comma-separated list of "
        "LABEL_DETECTION, SAFE_SEARCH_DETECTION; got 'FACE_DETECTION'"
    )
