"""VISION_FEATURES and SafeSearch in the Vision client's pure parts: the request body, the
`safeSearchAnnotation` of a response (v1 SafeSearchAnnotation, Likelihood enum), and refusals."""

from __future__ import annotations

import base64
import json

import pytest

from common.classifier import Label
from common.env import ConfigError
from common.vision import VisionSettings
from common.vision_messages import (
    LIKELIHOODS,
    SAFE_SEARCH_CATEGORIES,
    Annotation,
    ImageFailure,
    RetryableCallError,
    SafeSearch,
    build_request_body,
    parse_annotations,
    parse_response,
)


def no_redaction(text: str) -> str:
    return text


def test_the_documented_enum_and_categories() -> None:
    # google.cloud.vision.v1.Likelihood numbers 0..5, and SafeSearchAnnotation's five fields.
    assert LIKELIHOODS == (
        "UNKNOWN",
        "VERY_UNLIKELY",
        "UNLIKELY",
        "POSSIBLE",
        "LIKELY",
        "VERY_LIKELY",
    )
    assert SAFE_SEARCH_CATEGORIES == ("adult", "spoof", "medical", "violence", "racy")


def test_features_default_to_labels_and_parse_leniently() -> None:
    assert VisionSettings.from_env({}).features == ("LABEL_DETECTION",)
    env = {"VISION_FEATURES": " label_detection, SAFE_SEARCH_DETECTION ,LABEL_DETECTION"}
    assert VisionSettings.from_env(env).features == ("LABEL_DETECTION", "SAFE_SEARCH_DETECTION")
    only = VisionSettings.from_env({"VISION_FEATURES": "SAFE_SEARCH_DETECTION"})
    assert only.features == ("SAFE_SEARCH_DETECTION",)


@pytest.mark.parametrize("value", ["FACE_DETECTION", "LABEL_DETECTION,SAFE_SEARCH", ",,"])
def test_unknown_features_are_refused_by_name(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^VISION_FEATURES: expected a comma-separated list"):
        VisionSettings.from_env({"VISION_FEATURES": value})


def test_the_request_asks_for_each_feature_with_max_results_for_labels_only() -> None:
    body = json.loads(
        build_request_body([b"\xff\xd8\xffjpeg"], 3, ("LABEL_DETECTION", "SAFE_SEARCH_DETECTION"))
    )
    [request] = body["requests"]
    assert base64.b64decode(request["image"]["content"]) == b"\xff\xd8\xffjpeg"
    assert request["features"] == [
        {"type": "LABEL_DETECTION", "maxResults": 3},
        {"type": "SAFE_SEARCH_DETECTION"},
    ]
    with pytest.raises(ValueError, match="features must be some of"):
        build_request_body([b"x"], 1, ("TEXT_DETECTION",))


def test_a_safe_search_answer_as_google_writes_it() -> None:
    payload = {
        "responses": [
            {
                "labelAnnotations": [{"description": "Cat", "score": 0.97}],
                "safeSearchAnnotation": {
                    "adult": "VERY_UNLIKELY",
                    "spoof": "UNLIKELY",
                    "medical": "POSSIBLE",
                    "violence": "LIKELY",
                    "racy": "VERY_LIKELY",
                },
            }
        ]
    }
    [annotation] = parse_annotations(payload, 1, no_redaction)
    assert annotation == Annotation(
        [Label("Cat", 0.97)],
        SafeSearch("VERY_UNLIKELY", "UNLIKELY", "POSSIBLE", "LIKELY", "VERY_LIKELY"),
    )
    # The labels-only view of the same answer is unchanged.
    assert parse_response(payload, 1, no_redaction) == [[Label("Cat", 0.97)]]


def test_omitted_categories_are_unknown_numbers_are_read_and_no_annotation_is_none() -> None:
    payload = {
        "responses": [
            {"safeSearchAnnotation": {"adult": 5, "racy": "LIKELY"}},
            {"safeSearchAnnotation": {}},
            {"labelAnnotations": [{"description": "Cup", "score": 0.5}]},
            {"error": {"code": 3, "message": "Bad image data."}},
        ]
    }
    first, empty, labels_only, failure = parse_annotations(payload, 4, no_redaction)
    assert isinstance(first, Annotation) and first.safe_search is not None
    assert first.safe_search.as_dict() == {
        "adult": "VERY_LIKELY",
        "spoof": "UNKNOWN",
        "medical": "UNKNOWN",
        "violence": "UNKNOWN",
        "racy": "LIKELY",
    }
    assert isinstance(empty, Annotation) and empty.safe_search == SafeSearch()
    assert isinstance(labels_only, Annotation) and labels_only.safe_search is None
    assert isinstance(failure, ImageFailure)


@pytest.mark.parametrize(
    ("annotation", "named"),
    [
        ({"adult": "MAYBE"}, "safeSearchAnnotation.adult is 'MAYBE'"),
        ({"racy": 6}, "safeSearchAnnotation.racy is 6"),
        ({"violence": True}, "safeSearchAnnotation.violence is True"),
        ({"medical": "very_likely"}, "safeSearchAnnotation.medical is 'very_likely'"),
        ("VERY_LIKELY", "safeSearchAnnotation is 'VERY_LIKELY', not an object"),
    ],
)
def test_a_value_off_the_enum_is_a_malformed_answer(annotation: object, named: str) -> None:
    payload = {"responses": [{"safeSearchAnnotation": annotation}]}
    with pytest.raises(RetryableCallError) as raised:
        parse_annotations(payload, 1, no_redaction)
    assert named in raised.value.reason
    assert "responses[0]" in raised.value.reason
