"""How the demo folds its recordings into rows, lines and the summary table; its photos."""

from __future__ import annotations

import io

from PIL import Image

from localknative.photos import CATALOGUE, load_photos
from localknative.report import Tracker, summary_table


def dispatch(
    key: str, subscription: str, target: str, outcome: str = "delivered"
) -> dict[str, object]:
    return {
        "time": 101.0,
        "event_id": "e1",
        "subject": key,
        "subscription": subscription,
        "target": target,
        "outcome": outcome,
        "status": 200,
        "attempts": 1,
    }


def result(
    key: str, function: str, label: str, score: float, class_id: int | None = 285
) -> dict[str, object]:
    return {
        "time": 102.5,
        "attributes": {"source": f"/functions/{function}", "subject": key},
        "data": {
            "key": key,
            "model": "mobilenet_v2",
            "latency_ms": 42.0,
            "labels": [{"name": label, "score": score, "class_id": class_id}],
        },
    }


def test_a_photo_is_routed_then_classified() -> None:
    tracker = Tracker("photos", audit_subscriptions={"receiver"})
    tracker.expect("cat.jpg", 100.0)
    lines = tracker.absorb_dispatch(dispatch("cat.jpg", "receiver", "Service/receiver"))
    # The line says what the record is: the channel's delivery to the receiver.
    assert lines == ["channel   cat.jpg        delivered to receiver"]
    assert tracker.rows["cat.jpg"].receiver_seen
    assert tracker.absorb_dispatch(dispatch("cat.jpg", "classifiers", "Configuration/resnet")) == []
    assert tracker.done(["cat.jpg"]) == 0
    [line] = tracker.absorb_result(result("cat.jpg", "resnet", "Egyptian cat", 0.69))
    assert "classes: [285] Egyptian cat 0.69" in line
    row = tracker.rows["cat.jpg"]
    assert (row.status, row.routed_to, row.function, row.end_to_end_s) == (
        "classified",
        "resnet",
        "resnet",
        2.5,
    )
    assert tracker.done(["cat.jpg"]) == 1
    table = summary_table([row])
    assert "| cat.jpg | resnet | Egyptian cat | 0.6900 | 42 ms | 2.50 s |" in table


def test_a_dead_letter_settles_the_row_with_its_reason() -> None:
    tracker = Tracker("photos")
    tracker.expect("notes.txt", 100.0)
    [line] = tracker.absorb_dead_letter(
        {
            "time": 101.0,
            "attributes": {
                "subject": "notes.txt",
                "knativeerrorcode": "415",
                "knativeerrordest": "http://127.0.0.1:1",
            },
        }
    )
    assert "415" in line
    assert tracker.rows["notes.txt"].status == "dead-lettered"
    assert tracker.done(["notes.txt"]) == 1


def test_vision_lines_look_like_the_seed() -> None:
    tracker = Tracker("photos")
    tracker.expect("coffee.jpg", 100.0)
    [line] = tracker.absorb_result(
        result("coffee.jpg", "vision", "espresso", 0.954062, class_id=None)
    )
    assert "label: espresso, Score: 0.954062" in line


def test_photos_are_real_jpegs_of_the_catalogue() -> None:
    photos = load_photos(3)
    assert [p.key for p in photos] == [key for key, _, _ in CATALOGUE[:3]]
    for photo in photos:
        image = Image.open(io.BytesIO(photo.jpeg))
        assert image.format == "JPEG" and image.mode == "RGB"
        assert min(image.size) >= 200


def test_a_verdict_is_printed_and_kept_beside_the_classification() -> None:
    """The compliance function's reply (a compliance.verdict) never counts as the object's
    classification; once a verdict came, a row is settled only when its verdict is in too."""
    tracker = Tracker("photos", audit_subscriptions={"receiver", "compliance"})
    for key in ("cat.jpg", "cup.jpg"):
        tracker.expect(key, 100.0)
    verdict = {
        "time": 102.0,
        "attributes": {
            "source": "/functions/compliance",
            "subject": "cat.jpg",
            "type": "dev.rgwinference.compliance.verdict",
        },
        "data": {"key": "cat.jpg", "score": 0.0123, "flagged": False, "threshold": 0.8,
                 "model_id": "open_nsfw@1", "latency_ms": 40.0},
    }  # fmt: skip
    [line] = tracker.absorb_result(verdict)
    expected = "compliance cat.jpg not flagged: nsfw 0.0123 < 0.8 [open_nsfw@1, 40 ms]"
    assert " ".join(line.split()) == expected
    assert tracker.absorb_dispatch(dispatch("cat.jpg", "compliance", "Service/compliance"))
    tracker.absorb_dispatch(dispatch("cat.jpg", "classifiers", "Configuration/resnet"))
    tracker.absorb_dispatch(dispatch("cup.jpg", "classifiers", "Configuration/vision"))
    tracker.absorb_result(result("cat.jpg", "resnet", "Egyptian cat", 0.69))
    tracker.absorb_result(result("cup.jpg", "vision", "cup", 0.5, class_id=None))
    cat, cup = tracker.rows["cat.jpg"], tracker.rows["cup.jpg"]
    assert (cat.status, cat.routed_to, cat.function) == ("classified", "resnet", "resnet")
    assert cat.as_json()["verdicts"]["compliance"]["score"] == 0.0123
    # cup.jpg is classified, but its verdict is not in yet.
    assert tracker.done(["cat.jpg", "cup.jpg"]) == 1
    table = summary_table([cat, cup])
    assert table.splitlines()[0].endswith("| compliance |")
    assert "| 2.50 s | ok 0.0123 |" in table and table.splitlines()[-1].endswith("| - |")
