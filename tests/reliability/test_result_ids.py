"""One result per object version on the real stack: RGW's second notification of a PUT (a new
CloudEvent id) reaches a classifier and is answered from the object's record, with the same
result id; the model does not run again."""

from __future__ import annotations

import pytest

from localknative.demo import BUCKET
from testkit.live_stack import LiveStack
from testkit.samples import photo
from testkit.scenarios import second_notification


@pytest.mark.parametrize("function", ["resnet", "vision"])
def test_second_notification_same_result_id(stack_intact: LiveStack, function: str) -> None:
    key = f"result-ids/{function}/chelsea.jpg"
    stack_intact.s3.put_object(Bucket=BUCKET, Key=key, Body=photo(2).body)
    outcome = stack_intact.wait_settled([key], 120)[key]
    assert outcome.classified
    check = second_notification(stack_intact, function, key)
    assert check.channel_answers == [202, 202], check
    first_function = outcome.results[0][1]
    expected = 3 if first_function == function else 2
    assert len(check.result_ids) == expected, check
    assert len(set(check.result_ids)) == 1, check
    assert check.model_runs == 1, check
