"""Scenario 1 (load) and 6 (duplicates) on the real stack: nothing lost, nothing twice."""

from __future__ import annotations

import pytest

from localknative.demo import BUCKET
from testkit.live_stack import LiveStack
from testkit.samples import photo
from testkit.scenarios import duplicate_delivery, load

LOAD_OBJECTS = 100


def test_load_every_upload_classified_once(stack_intact: LiveStack) -> None:
    result = load(stack_intact, LOAD_OBJECTS, writers=8)
    assert result.uploaded == LOAD_OBJECTS, result
    assert result.lost == 0, f"lost: {result.lost_keys[:10]}"
    assert result.classified == LOAD_OBJECTS, result
    assert result.duplicates == 0, result
    assert result.dead_lettered == 0, result
    assert len(result.latencies) == LOAD_OBJECTS
    # Both halves of the 50/50 Route served.
    functions = {
        f
        for o in stack_intact.outcomes(
            [f"load/{i:05d}-{photo(i).name}" for i in range(LOAD_OBJECTS)]
        ).values()
        for _, f in o.results
    }
    assert functions == {"resnet", "vision"}


@pytest.mark.parametrize("function", ["resnet", "vision"])
def test_same_cloudevent_twice_gives_one_reply_one_tag_write(
    stack_intact: LiveStack, function: str
) -> None:
    key = f"duplicates/{function}/chelsea.jpg"
    stack_intact.s3.put_object(Bucket=BUCKET, Key=key, Body=photo(2).body)
    # The upload's own notification goes through the pipeline too: let it settle first, so the
    # function's counters below only count the two copies this test sends.
    stack_intact.wait_settled([key], 120)
    check = duplicate_delivery(stack_intact, function, key)
    assert check.channel_answers == [202, 202]
    assert check.replies == 1, check
    first, second = check.result_log_lines
    assert first >= 1 and second == first, check
    assert check.handled == 1, check
    assert check.duplicates_counted == 1, check
    assert check.tags.get("classified-by"), check
