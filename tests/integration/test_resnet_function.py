"""The resnet function as a process: real photos in a real RGW bucket, real CloudEvents over HTTP,
real gRPC to the real model server, for each kind of model signature it supports."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from common.classifier import RESULT_EVENT_TYPE
from tests.fixtures.processes import free_port
from tests.fixtures.resnet import (
    FunctionFactory,
    RunningFunction,
    photo_array,
    photo_jpeg,
    png_bomb,
    rotated_jpeg,
    truncated_jpeg,
)
from tests.fixtures.rgw import RgwGateway

pytestmark = pytest.mark.rgw

CAT_IDS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
CUP_IDS = {504, 968}  # coffee mug, cup


def upload(rgw: RgwGateway, bucket: str, key: str, body: bytes) -> int:
    rgw.s3_client().put_object(Bucket=bucket, Key=key, Body=body, ContentType="image/jpeg")
    return len(body)


def classify(
    function: RunningFunction, rgw: RgwGateway, bucket: str, key: str, body: bytes
) -> httpx.Response:
    size = upload(rgw, bucket, key, body)
    return function.post_object_event(bucket, key, size=size)


def reply_labels(response: httpx.Response, key: str) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["ce-type"] == RESULT_EVENT_TYPE
    assert response.headers["ce-subject"] == key
    data = response.json()
    assert data["key"] == key
    labels: list[dict[str, Any]] = data["labels"]
    return labels


def result_lines(function: RunningFunction, key: str) -> list[dict[str, Any]]:
    return [
        line
        for line in function.log_lines()
        if line.get("logger") == "resnet" and line.get("key") == key
    ]


def error_lines(function: RunningFunction, status: int) -> list[dict[str, Any]]:
    return [line for line in function.log_lines() if line.get("status") == status]


@pytest.mark.parametrize("model", ["mobilenet_v2", "efficientnet_lite0", "resnet"])
def test_cat_and_cup_are_recognised(
    rgw: RgwGateway, bucket: str, resnet_function: FunctionFactory, model: str
) -> None:
    function = resnet_function(model)

    cat = reply_labels(
        classify(function, rgw, bucket, "photos/cat.jpg", photo_jpeg("chelsea")), "photos/cat.jpg"
    )
    cup = reply_labels(classify(function, rgw, bucket, "cup.jpg", photo_jpeg("coffee")), "cup.jpg")

    assert len(cat) == 5 and len(cup) == 5
    # The cat's best class is a cat class whatever the signature: for the seed's 1001-wide
    # `resnet` model this fails if the background column is not taken off (off by one).
    assert cat[0]["class_id"] in CAT_IDS, cat
    assert {label["class_id"] for label in cat[:3]} <= CAT_IDS | {287}, cat  # 287: lynx
    assert CUP_IDS & {label["class_id"] for label in cup}, cup
    for labels in (cat, cup):
        scores = [label["score"] for label in labels]
        assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1.0
    names = {label["class_id"]: label["name"] for label in cat + cup}
    assert names.get(285, "Egyptian cat") == "Egyptian cat"

    [line] = result_lines(function, "photos/cat.jpg")
    top = cat[0]
    assert line["message"] == f"classes: [{top['class_id']}] {top['name']} {top['score']:.2f}"
    assert line["model"] == model and line["bucket"] == bucket
    assert [label["class_id"] for label in line["labels"]] == [label["class_id"] for label in cat]


def test_a_phone_photo_is_classified_upright(
    rgw: RgwGateway, bucket: str, resnet_function: FunctionFactory
) -> None:
    function = resnet_function("mobilenet_v2")
    cat = Image.fromarray(photo_array("chelsea"))
    labels = reply_labels(
        classify(function, rgw, bucket, "portrait.jpg", rotated_jpeg(cat, orientation=6)),
        "portrait.jpg",
    )
    upright = reply_labels(
        classify(function, rgw, bucket, "upright.jpg", photo_jpeg("chelsea", quality=92)),
        "upright.jpg",
    )
    assert labels[0]["class_id"] == upright[0]["class_id"] == 285
    assert abs(labels[0]["score"] - upright[0]["score"]) < 0.05


@pytest.mark.parametrize("model", ["mobilenet_v2", "resnet"])
def test_bad_objects_get_permanent_statuses_and_the_function_carries_on(
    rgw: RgwGateway, bucket: str, resnet_function: FunctionFactory, model: str
) -> None:
    function = resnet_function(model, S3_MAX_OBJECT_BYTES="300000")
    cases = [
        ("notes.jpg", b"this is a text file, not a JPEG\n" * 20, 415),
        ("truncated.jpg", truncated_jpeg(), 415),
        ("bomb.png", png_bomb(28000), 413),
        ("huge.jpg", np.random.default_rng(0).bytes(300_001), 413),
    ]
    for key, body, status in cases:
        response = classify(function, rgw, bucket, key, body)
        assert response.status_code == status, (key, response.text)
        assert response.json()["event_id"]
    missing = function.post_object_event(bucket, "never-uploaded.jpg", size=1234)
    assert missing.status_code == 410, missing.text

    logged = {line["status"] for line in function.log_lines() if "status" in line}
    assert {410, 413, 415} <= logged
    bomb_lines = [
        line for line in error_lines(function, 413) if "784000000 pixels" in line["message"]
    ]
    assert bomb_lines, "the bomb's refusal should name its pixel count"
    # Still healthy and still classifying.
    assert function.readiness().status_code == 200
    good = classify(function, rgw, bucket, "after.jpg", photo_jpeg("chelsea"))
    assert reply_labels(good, "after.jpg")[0]["class_id"] in CAT_IDS


def test_removal_events_are_acknowledged_and_ignored(
    rgw: RgwGateway, bucket: str, resnet_function: FunctionFactory
) -> None:
    function = resnet_function("mobilenet_v2")
    response = function.post_object_event(bucket, "gone.jpg", event_name="ObjectRemoved:Delete")
    assert response.status_code == 200
    assert response.content == b""
    assert result_lines(function, "gone.jpg") == []


def test_model_server_down_means_not_ready_and_503(
    rgw: RgwGateway, bucket: str, resnet_function: FunctionFactory
) -> None:
    nothing_listens = f"127.0.0.1:{free_port()}"
    function = resnet_function(
        "mobilenet_v2", serving_endpoint=nothing_listens, wait_ready=False, MODEL_TIMEOUT="2"
    )
    assert function.readiness().status_code == 503
    response = classify(function, rgw, bucket, "cat.jpg", photo_jpeg("chelsea"))
    assert response.status_code == 503, response.text
    assert nothing_listens in response.json()["message"]
    assert error_lines(function, 503)
    assert function.readiness().status_code == 503


def test_tags_are_written_back_when_asked(
    rgw: RgwGateway, bucket: str, resnet_function: FunctionFactory
) -> None:
    function = resnet_function("mobilenet_v2", TAG_OBJECTS="true")
    labels = reply_labels(
        classify(function, rgw, bucket, "cat.jpg", photo_jpeg("chelsea")), "cat.jpg"
    )
    tag_set = rgw.s3_client().get_object_tagging(Bucket=bucket, Key="cat.jpg")["TagSet"]
    tags = {tag["Key"]: tag["Value"] for tag in tag_set}
    assert tags["classified-by"] == "mobilenet_v2"
    assert tags["label"] == labels[0]["name"] == "Egyptian cat"
    assert abs(float(tags["score"]) - labels[0]["score"]) < 1e-3


def test_no_reply_event_when_replies_are_off(
    rgw: RgwGateway, bucket: str, resnet_function: FunctionFactory
) -> None:
    function = resnet_function("mobilenet_v2", REPLY_EVENTS="false", TOP_K="2")
    response = classify(function, rgw, bucket, "cat.jpg", photo_jpeg("chelsea"))
    assert response.status_code == 200 and response.content == b""
    [line] = result_lines(function, "cat.jpg")
    assert len(line["labels"]) == 2
    assert json.dumps(line["labels"])  # plain JSON fields, ready for a log pipeline
