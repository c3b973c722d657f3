"""SAFE_SEARCH_DETECTION in the Vision client against the contract stand-in
(`testkit.fake_vision`) over real HTTP: the request it sends, the documented answer shape
(`safeSearchAnnotation` with Likelihood names), and an answer off the enum refused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from common.classifier import Label
from common.env import Secret
from common.errors import TransientError
from common.vision import RetryPolicy, VisionClient, VisionSettings
from common.vision_messages import SafeSearch
from tests.fixtures.vision import VISION_KEY, FakeVision, set_safe_search

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64
BOTH = ("LABEL_DETECTION", "SAFE_SEARCH_DETECTION")
CAT = [{"mid": "/m/01yrx", "description": "Cat", "score": 0.98, "topicality": 0.98}]


@pytest.fixture
def client(fake_vision: FakeVision) -> Iterator[VisionClient]:
    settings = VisionSettings(
        api_key=Secret(VISION_KEY),
        endpoint=fake_vision.url,
        max_results=3,
        timeout=2.0,
        deadline=1.0,
        features=BOTH,
    )
    client = VisionClient(settings, RetryPolicy(base_delay=0.05, max_delay=0.2))
    yield client
    client.close()


def test_both_features_are_asked_for_and_both_answers_read(
    fake_vision: FakeVision, client: VisionClient
) -> None:
    fake_vision.set_labels(CAT)
    set_safe_search(
        fake_vision,
        {
            "adult": "VERY_UNLIKELY",
            "spoof": "UNLIKELY",
            "medical": "VERY_UNLIKELY",
            "violence": "POSSIBLE",
            "racy": "LIKELY",
        },
    )
    annotation = client.annotate(JPEG)
    assert annotation.labels == [Label("Cat", 0.98)]
    assert annotation.safe_search == SafeSearch(
        "VERY_UNLIKELY", "UNLIKELY", "VERY_UNLIKELY", "POSSIBLE", "LIKELY"
    )
    [request] = fake_vision.requests()
    assert request["features"] == [list(BOTH)]
    assert request["max_results"] == [3]


def test_labels_only_calls_still_ask_for_labels_only(
    fake_vision: FakeVision, client: VisionClient
) -> None:
    fake_vision.set_labels(CAT)
    assert client.detect_labels(JPEG) == [Label("Cat", 0.98)]
    assert fake_vision.requests()[0]["features"] == [["LABEL_DETECTION"]]


def test_safe_search_alone(fake_vision: FakeVision, client: VisionClient) -> None:
    fake_vision.set_labels(CAT)
    annotation = client.annotate(JPEG, features=("SAFE_SEARCH_DETECTION",))
    assert annotation.labels == []  # not asked for, so not answered
    assert annotation.safe_search == SafeSearch(*["VERY_UNLIKELY"] * 5)  # the fake's default


def test_an_answer_off_the_enum_is_retried_then_transient_naming_the_field(
    fake_vision: FakeVision, client: VisionClient
) -> None:
    set_safe_search(fake_vision, {"adult": "SOMEWHAT", "racy": "LIKELY"})
    with pytest.raises(TransientError) as raised:
        client.annotate(JPEG)
    assert "safeSearchAnnotation.adult is 'SOMEWHAT', not a Likelihood" in raised.value.message
    assert fake_vision.request_count() >= 2  # a malformed 200 is retried like any other
