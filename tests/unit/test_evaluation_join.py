"""The evaluation's logic without a process: label matching, the bounded join, the tally and its
Prometheus counters, and the agreement table `demo --compare` prints."""

from __future__ import annotations

import math
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from common.classifier import RESULT_EVENT_TYPE
from common.errors import UnsupportedPayload
from common.labels import imagenet_name
from common.result_records import Label
from functions.evaluation.app import RESULT_EVENT_TYPE as EVALUATION_TAKES
from functions.evaluation.join import CAPACITY, EXPIRED, Half, Joiner, Version, halves_of
from functions.evaluation.matching import agree, classes_of, normalize, overlap, synonym_index
from functions.evaluation.tally import Tally, compare
from localknative.compare import AgreementRow, Totals, agreement_rows, agreement_table

# --- matching -----------------------------------------------------------------------------------


def test_the_function_takes_the_type_the_classifiers_reply_with() -> None:
    assert EVALUATION_TAKES == RESULT_EVENT_TYPE


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("Egyptian cat", "egyptian cat"),
        ("  EGYPTIAN-cat ", "egyptian cat"),
        ("jack-o'-lantern", "jack o lantern"),
        ("Tabby_Cat", "tabby cat"),
    ],
)
def test_normalize(text: str, normalized: str) -> None:
    assert normalize(text) == normalized


def test_every_imagenet_name_matches_its_own_class() -> None:
    """The Vision stand-in labels with ImageNet's first synonyms: each must find its class."""
    for class_id in range(1000):
        assert class_id in classes_of(Label(imagenet_name(class_id), 0.5)), class_id


def test_free_text_labels_match_by_any_synonym_and_shared_names_stand_for_every_class() -> None:
    assert classes_of(Label("Tabby Cat", 0.9)) == {281}  # "tabby, tabby cat"
    assert classes_of(Label("espresso", 0.9)) == {967}
    assert classes_of(Label("crane", 0.9)) == {134, 517}  # the bird and the machine
    # Google-style Knowledge Graph labels name no ImageNet class: unmatched, never agreement.
    assert classes_of(Label("Cat", 0.9)) == frozenset()
    assert classes_of(Label("Whiskers", 0.9)) == frozenset()
    assert len(synonym_index()) > 1000


def test_a_class_id_wins_over_the_name() -> None:
    assert classes_of(Label("whatever the model calls it", 0.9, 285)) == {285}


def test_agreement_and_overlap() -> None:
    mobilenet = [Label(imagenet_name(i), 0.1, i) for i in (281, 282, 285, 287, 728)]
    effnet = [Label(imagenet_name(i), 0.1, i) for i in (282, 281, 285, 900, 901)]
    assert not agree(mobilenet[0], effnet[0])
    assert overlap(mobilenet, effnet) == 3
    vision = [Label("Tabby", 0.8), Label("tiger cat", 0.1), Label("Cat", 0.05)]
    assert agree(mobilenet[0], vision[0])
    assert overlap(mobilenet, vision) == 2  # "Cat" matches nothing
    assert not agree(None, vision[0])
    # One name for two classes counts once, from the side that finds fewer.
    assert overlap([Label("crane", 0.5)], [Label("x", 0.1, 134), Label("y", 0.1, 517)]) == 1


# --- the join -----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def half(key: str, model: str, *labels: Label, at: float = 0.0, function: str = "") -> Half:
    return Half(Version("photos", key, "e:etag-" + key), function or model, model, labels, at)


def test_two_models_pair_and_a_third_result_is_a_duplicate() -> None:
    joiner = Joiner(10, 60, Clock())
    assert joiner.add(half("a.jpg", "vision")).pair is None
    assert len(joiner) == 1
    assert joiner.add(half("a.jpg", "vision")).duplicate  # the same model again: waiting
    outcome = joiner.add(half("a.jpg", "mobilenet_v2@1", function="resnet"))
    assert outcome.pair is not None
    assert [h.function for h in outcome.pair] == ["resnet", "vision"]  # by function name
    assert len(joiner) == 0
    assert joiner.add(half("a.jpg", "vision")).duplicate  # after pairing: not a new half
    assert len(joiner) == 0


def test_different_versions_of_one_key_do_not_pair() -> None:
    joiner = Joiner(10, 60, Clock())
    joiner.add(Half(Version("photos", "a.jpg", "v:1"), "resnet", "m", ()))
    assert joiner.add(Half(Version("photos", "a.jpg", "v:2"), "vision", "v", ())).pair is None
    assert len(joiner) == 2


def test_pending_halves_are_bounded_by_count_and_by_age() -> None:
    clock = Clock()
    joiner = Joiner(2, 30, clock)
    joiner.add(half("a", "m", at=0))
    joiner.add(half("b", "m", at=1))
    outcome = joiner.add(half("c", "m", at=2))
    assert [(lost.half.version.key, lost.reason) for lost in outcome.dropped] == [("a", CAPACITY)]
    assert len(joiner) == 2
    clock.now = 31.5  # b (1) waited past 30 s, c (2) not yet
    assert [(lost.half.version.key, lost.reason) for lost in joiner.expire()] == [("b", EXPIRED)]
    assert len(joiner) == 1
    # A half whose pair was dropped waits anew for it: it is not matched with a lost half.
    assert joiner.add(half("a", "other", at=31.5)).pair is None


def test_joiner_refuses_nonsense_bounds() -> None:
    with pytest.raises(ValueError):
        Joiner(0, 1)


def result(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "bucket": "photos",
        "key": "chelsea.jpg",
        "version_id": None,
        "etag": "abc",
        "model": "mobilenet_v2",
        "model_id": "mobilenet_v2@1",
        "labels": [{"name": "tabby", "score": 0.6, "class_id": 281}],
    }
    return {**data, **overrides}


def test_halves_of_a_result_event() -> None:
    (one,) = halves_of("/functions/resnet", result(), 5.0)
    assert one.version == Version("photos", "chelsea.jpg", "e:abc")
    assert (one.function, one.model, one.received) == ("resnet", "mobilenet_v2@1", 5.0)
    assert one.labels == (Label("tabby", 0.6, 281),)
    (versioned,) = halves_of("/functions/vision", result(version_id="v7"), 0)
    assert versioned.version.marker == "v:v7"
    many = halves_of("/x", {"results": [result(key="a"), result(key="b")]}, 0)
    assert [h.version.key for h in many] == ["a", "b"]
    (no_score,) = halves_of("/x", result(labels=[{"name": "x", "score": None}]), 0)
    assert math.isnan(no_score.labels[0].score)


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"results": []},
        result(etag=None),  # no version at all: nothing to join by
        result(bucket=None),
        result(labels="tabby"),
        result(labels=[{"score": 1}]),
        result(labels=[{"name": "x", "class_id": "281"}]),
        result(labels=[{"name": "x", "score": True}]),
    ],
)
def test_malformed_results_are_refused(data: Any) -> None:
    with pytest.raises(UnsupportedPayload):
        halves_of("/functions/resnet", data, 0)


# --- the tally and its counters -----------------------------------------------------------------


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_tally_counts_pairs_agreement_overlap_and_losses() -> None:
    registry = CollectorRegistry()
    tally = Tally(registry, 5, keep=1)
    tabby, tiger = Label("tabby", 0.6, 281), Label("tiger cat", 0.2, 282)
    pairs = [
        (half("a", "m1", tabby, tiger, function="resnet"), half("a", "v", Label("Tabby", 0.9))),
        (half("b", "m1", tiger, tabby, function="resnet"), half("b", "v", Label("Cat", 0.9))),
    ]
    for first, second in pairs:
        tally.received(first)
        tally.received(second)
        tally.add(first, second)
    labels = {"first": "m1", "second": "v"}
    assert sample(registry, "evaluation_pairs_total", **labels) == 2
    assert sample(registry, "evaluation_top1_agree_total", **labels) == 1
    assert sample(registry, "evaluation_top5_overlap_total", **labels, overlap="1") == 1
    assert sample(registry, "evaluation_top5_overlap_total", **labels, overlap="0") == 1
    assert sample(registry, "evaluation_top5_shared_labels_total", **labels) == 1
    assert sample(registry, "evaluation_results_total", function="resnet", model="m1") == 2
    assert sample(registry, "evaluation_top1_unmatched_total", function="v", model="v") == 1
    tally.duplicate()
    assert sample(registry, "evaluation_duplicates_total") == 1
    report = tally.report(pending=3)
    assert report["pairs"] == 2 and report["top1_agree"] == 1
    assert report["top1_agreement"] == 0.5 and report["mean_top_k_overlap"] == 0.5
    assert report["pending"] == 3 and report["kept"] == 1  # keep=1: the last comparison only
    (row,) = report["comparisons"]
    assert row["key"] == "b" and row["first"]["label"] == "tiger cat"
    assert row["second"]["imagenet_classes"] == []
    assert report["disagreements"] == [row]


def test_compare_takes_the_top_k_only() -> None:
    many = [Label(imagenet_name(i), 0.1, i) for i in range(8)]
    reverse = list(reversed(many))
    assert compare(half("a", "x", *many), half("a", "y", *reverse), top_k=5).overlap == 2


# --- the agreement table ------------------------------------------------------------------------


def side(function: str, label: str, score: float | None) -> dict[str, Any]:
    return {"function": function, "model": function + "-model", "label": label, "score": score}


def report_of(*rows: tuple[str, str, str, bool, int]) -> dict[str, Any]:
    return {
        "comparisons": [
            {
                "bucket": "photos",
                "key": key,
                "top1_agree": agree_,
                "top_k_overlap": overlap_,
                "first": side("resnet", a, 0.5),
                "second": side("vision", b, None),
            }
            for key, a, b, agree_, overlap_ in rows
        ]
    }


def test_agreement_rows_follow_the_keys_and_the_latest_comparison() -> None:
    report = report_of(
        ("b.jpg", "x", "y", False, 1), ("a.jpg", "t", "t", True, 5), ("b.jpg", "x", "x", True, 4)
    )
    report["comparisons"].append({**report["comparisons"][0], "bucket": "other", "key": "c.jpg"})
    rows = agreement_rows(report, "photos", ["a.jpg", "b.jpg", "c.jpg"])
    assert [(r.key, r.top1_agree, r.overlap) for r in rows] == [
        ("a.jpg", True, 5),
        ("b.jpg", True, 4),
    ]


def test_agreement_table_totals_are_those_of_its_rows() -> None:
    rows = agreement_rows(
        report_of(("a.jpg", "tabby", "tabby", True, 4), ("b.jpg", "cup", "espresso", False, 1)),
        "photos",
        ["a.jpg", "b.jpg"],
    )
    table = agreement_table(rows)
    lines = table.splitlines()
    header = "| object | resnet (resnet-model) | score | vision (vision-model) | score | top-1 |"
    assert lines[0].startswith(header)
    assert lines[2] == "| a.jpg | tabby | 0.5000 | tabby | - | agree | 4 |"
    assert lines[3] == "| b.jpg | cup | 0.5000 | espresso | - | differ | 1 |"
    assert lines[-1] == "top-1 agreement: 1/2 (50%); mean top-5 overlap: 2.50 of 5"
    assert Totals.of(rows) == Totals(2, 1, 2.5)
    assert agreement_table([]).startswith("(no object")


def test_totals_of_no_rows() -> None:
    assert Totals.of([]) == Totals(0, 0, None)
    row = AgreementRow("k", {}, {}, True, 3)
    assert Totals.of([row]) == Totals(1, 1, 3.0)
