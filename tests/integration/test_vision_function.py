"""The vision function as a process: real RGW, real photos, and a Vision endpoint over HTTP.

With the model server's Vision stand-in (EfficientNet-Lite0 behind Google's contract) the labels
must be right for a cat and a coffee cup; with the contract stand-in the function must answer
the status Knative acts on for each failure, and never log the API key.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.modelserver import ModelServer, photo_jpeg
from tests.fixtures.rgw import RgwGateway
from tests.fixtures.vision import VISION_KEY, FakeVision, VisionFactory, VisionProcess, s3_event

pytestmark = pytest.mark.rgw

CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"}
CUP_CLASSES = {"coffee mug", "cup"}
# EfficientNet-Lite0 sees the coffee in skimage's cup first: "espresso", then "cup".
CUP_TOP_CLASSES = CUP_CLASSES | {"espresso"}


def upload(rgw: RgwGateway, bucket: str, key: str, body: bytes) -> None:
    rgw.s3_client().put_object(Bucket=bucket, Key=key, Body=body, ContentType="image/jpeg")


def label_lines(function: VisionProcess, key: str) -> list[str]:
    return [
        line["message"]
        for line in function.log_lines()
        if line.get("logger") == "vision" and line.get("key") == key and "label" in line
    ]


@pytest.fixture
def vision_on_modelserver(
    modelserver: ModelServer, vision_function: VisionFactory
) -> VisionProcess:
    return vision_function(
        modelserver.rest_url,
        api_key=modelserver.vision_api_key,
        env={"VISION_MAX_RESULTS": "3", "TOP_K": "3"},
    )


@pytest.mark.parametrize(
    ("photo", "top", "among_top_3"),
    [("chelsea", CAT_CLASSES, CAT_CLASSES), ("coffee", CUP_TOP_CLASSES, CUP_CLASSES)],
    ids=["cat", "cup"],
)
def test_a_photo_is_labelled_and_answered_with_a_result_event(
    rgw: RgwGateway,
    bucket: str,
    vision_on_modelserver: VisionProcess,
    photo: str,
    top: set[str],
    among_top_3: set[str],
) -> None:
    key = f"photos/{photo}.jpg"
    upload(rgw, bucket, key, photo_jpeg(photo))
    headers, body = s3_event(bucket, key)

    response = vision_on_modelserver.post_event(headers, body)

    assert response.status_code == 200, response.text
    assert response.headers["ce-type"] == "dev.rgwinference.classification.result"
    assert response.headers["ce-subject"] == key
    data = json.loads(response.content)
    assert (data["bucket"], data["key"], data["model"]) == (bucket, key, "google-cloud-vision")
    assert data["event_id"] == headers["ce-id"]
    names = [label["name"] for label in data["labels"]]
    scores = [label["score"] for label in data["labels"]]
    assert len(names) == 3
    assert names[0] in top, names
    assert among_top_3 & set(names), names
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
    # One seed-style line per label, in order: "label: tabby, Score: 0.993347".
    assert label_lines(vision_on_modelserver, key) == [
        f"label: {label['name']}, Score: {label['score']:.6f}" for label in data["labels"]
    ]


def test_a_removal_event_is_acknowledged_without_a_call(
    bucket: str, vision_function: VisionFactory, fake_vision: FakeVision
) -> None:
    function = vision_function(fake_vision.url)
    headers, body = s3_event(bucket, "gone.jpg", event_name="ObjectRemoved:Delete")

    response = function.post_event(headers, body)

    assert response.status_code == 200
    assert response.content == b""
    assert fake_vision.request_count() == 0


def test_a_text_file_is_not_an_image(
    rgw: RgwGateway, bucket: str, vision_function: VisionFactory, fake_vision: FakeVision
) -> None:
    upload(rgw, bucket, "notes.jpg", b"a text file with a .jpg name")
    function = vision_function(fake_vision.url)

    response = function.post_event(*s3_event(bucket, "notes.jpg"))

    assert response.status_code == 415
    assert response.json()["error"] == "not-an-image"


def test_an_image_too_large_for_a_request_is_refused_without_a_call(
    rgw: RgwGateway, bucket: str, vision_function: VisionFactory, fake_vision: FakeVision
) -> None:
    # Under S3_MAX_OBJECT_BYTES (20 MiB) but ~12 MiB of JSON once base64-encoded.
    upload(rgw, bucket, "huge.jpg", b"\xff\xd8\xff" + b"\x00" * (9 * 1024 * 1024))
    function = vision_function(fake_vision.url)

    response = function.post_event(*s3_event(bucket, "huge.jpg"))

    assert response.status_code == 413
    assert fake_vision.request_count() == 0


def test_an_outage_answers_503_so_the_channel_retries(
    rgw: RgwGateway, bucket: str, vision_function: VisionFactory, fake_vision: FakeVision
) -> None:
    upload(rgw, bucket, "cat.jpg", photo_jpeg("chelsea"))
    fake_vision.script([], default={"kind": "unavailable", "retry_after": 0})
    function = vision_function(fake_vision.url, env={"VISION_DEADLINE": "1"})

    response = function.post_event(*s3_event(bucket, "cat.jpg"))

    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"
    assert fake_vision.request_count() >= 2


def test_a_wrong_key_from_a_file_dead_letters_and_is_never_logged(
    rgw: RgwGateway,
    bucket: str,
    vision_function: VisionFactory,
    fake_vision: FakeVision,
    tmp_path: Path,
) -> None:
    wrong_key = "AIzaWrongKeyFromFile-" + VISION_KEY[-12:]
    key_file = tmp_path / "api-key"
    key_file.write_text(wrong_key + "\n")
    upload(rgw, bucket, "cat.jpg", photo_jpeg("chelsea"))
    # The right key in the file on a second function, with a proxy that echoes it back.
    right_file = tmp_path / "right-key"
    right_file.write_text(VISION_KEY)
    wrong = vision_function(fake_vision.url, api_key=None, api_key_file=key_file)
    echoed = vision_function(fake_vision.url, api_key=None, api_key_file=right_file)

    refused = wrong.post_event(*s3_event(bucket, "cat.jpg"))
    fake_vision.script([{"kind": "unavailable"}, {"kind": "echo_key"}])
    echo_answer = echoed.post_event(*s3_event(bucket, "cat.jpg"))

    # 403 is outside Knative's retried statuses: the event goes to the dead-letter sink.
    assert refused.status_code == 403
    assert "GOOGLE_VISION_API_KEY" in refused.json()["message"]
    assert echo_answer.status_code == 422
    assert [r["key_header"] for r in fake_vision.requests()] == [wrong_key, VISION_KEY, VISION_KEY]
    for function, secret in ((wrong, wrong_key), (echoed, VISION_KEY)):
        assert secret not in function.process.log_text()
    assert wrong_key not in refused.text and VISION_KEY not in echo_answer.text
