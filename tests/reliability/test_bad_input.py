"""Scenarios 7 and 8: bad objects through the whole pipeline, hostile events straight at the
functions. Each gets its outcome (classified, or a 4xx and a dead letter), no process dies,
memory stays bounded, and nothing is fetched from anywhere but the configured RGW."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from localknative.demo import BUCKET
from testkit import samples
from testkit.live_stack import LiveStack
from testkit.records import records, s3_record
from testkit.scenarios import bad_input, hostile_events, memory_under_bad_events
from testkit.sink import start_recorder

BAD_EVENTS = 1000
# Python keeps freed memory in its arenas and Pillow/boto3 caches warm up: what matters is that
# 1,000 refused events do not grow a function by their own size (a leak of ~2 KiB each).
RSS_GROWTH_LIMIT_KIB = 16 * 1024


def test_bad_objects_get_their_outcome_through_the_pipeline(stack_intact: LiveStack) -> None:
    found = bad_input(stack_intact)
    wrong = [
        (o.case.key[:60], o.case.expect, o.got, o.upload_error)
        for o in found
        if (not o.uploaded and not o.case.refusal_ok) or (o.uploaded and o.got != o.case.expect)
    ]
    assert wrong == []
    # Each refused event is parked once (per subscriber that refused it: a classifier and the
    # compliance function each refuse a non-image). (An unusable notification answered 4xx to RGW
    # stays in its persistent queue and is pushed again forever, dragging the entries behind it.)
    time.sleep(3)
    parked = Counter(
        (d["attributes"]["id"], d["attributes"].get("knativeerrordest"))
        for d in stack_intact.recordings().dead_letters
        if str(d["attributes"].get("subject", "")).startswith("bad/")
    )
    assert parked and max(parked.values()) == 1, parked.most_common(3)


@pytest.mark.parametrize("function", ["resnet", "vision"])
def test_exif_rotated_photo_is_classified_upright(stack_intact: LiveStack, function: str) -> None:
    objects = {
        "upright": samples.upright_jpeg(),
        "exif-6": samples.exif_rotated_jpeg(6),
        "exif-8": samples.exif_rotated_jpeg(8),
        "exif-3": samples.exif_rotated_jpeg(3),
        "sideways": samples.sideways_jpeg(),
    }
    labels = {}
    for name, body in objects.items():
        key = f"orientation/{function}/{name}.jpg"
        stack_intact.s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        # The upload's own notification tags the object at the same time; RGW refuses the
        # second tag write with 409, the function says 503, and (like the channel) we retry.
        for _ in range(10):
            answer = stack_intact.post_event(
                stack_intact.url(function), records(s3_record(BUCKET, key))
            )
            if answer.status_code != 503:
                break
            time.sleep(0.5)
        assert answer.status_code == 200, answer.text
        labels[name] = json.loads(answer.content)["labels"]
    upright = labels["upright"][0]
    for name in ("exif-6", "exif-8", "exif-3"):
        top = labels[name][0]
        assert top["name"] == upright["name"], (name, labels[name][:2], upright)
        assert abs(top["score"] - upright["score"]) < 0.05, (name, top, upright)
    # The check can fail: the same pixels without the tag are not seen the same way.
    assert labels["sideways"][:3] != labels["upright"][:3]


@pytest.mark.parametrize("function", ["resnet", "vision", "receiver"])
def test_bad_events_do_not_leak_memory(stack_intact: LiveStack, function: str) -> None:
    check = memory_under_bad_events(stack_intact, function, BAD_EVENTS)
    assert sum(check.statuses.values()) == BAD_EVENTS
    assert all(400 <= status < 500 for status in check.statuses if function != "receiver"), check
    assert 500 not in check.statuses and 503 not in check.statuses, check
    assert check.growth_kib < RSS_GROWTH_LIMIT_KIB, check


def test_hostile_events_get_a_4xx_and_fetch_nothing_elsewhere(stack_intact: LiveStack) -> None:
    # The object a ../ key would reach if anything normalized the path on the way to RGW.
    stack_intact.s3.create_bucket(Bucket="private-bucket")
    stack_intact.s3.put_object(
        Bucket="private-bucket", Key="chelsea.jpg", Body=samples.upright_jpeg()
    )
    with start_recorder(stack_intact.stack.log_dir, "elsewhere") as elsewhere:
        answers = hostile_events(stack_intact, elsewhere.address)
        assert elsewhere.requests() == [], "a function fetched from a URL named in an event"
    by_case = {(a.case, a.target): a.status for a in answers}
    for function in ("resnet", "vision"):
        assert by_case[("bucket outside ALLOWED_BUCKETS", function)] == 403
        assert by_case[("../ in the key", function)] in (403, 410), "path traversal in the key"
        for case in ("endpoint URL as the key", "endpoint URL in extra record fields"):
            assert by_case[(case, function)] == 410, case  # looked up on RGW, not found there
    for function in ("resnet", "vision", "receiver"):
        assert by_case[("endpoint URL as the bucket", function)] == 422
        assert by_case[("10,000 records in one event", function)] == 413
        assert by_case[("10 MB body", function)] == 413
        assert by_case[("invalid UTF-8 data", function)] in (400, 422)
        assert by_case[("invalid UTF-8 structured event", function)] == 400
