"""Scenarios 2-5: a function, the model server, RGW and the source fail while events flow.
Each passes only with zero lost: every upload RGW acknowledged ends classified, or recorded at
the dead-letter sink (and the scenario's replay of those classifies them)."""

from __future__ import annotations

import shutil

import pytest

from testkit.live_stack import LiveStack
from testkit.scenarios import (
    ScenarioResult,
    function_killed,
    modelserver_down,
    rgw_restart,
    source_killed,
)

OBJECTS = 30


def assert_nothing_lost(result: ScenarioResult) -> None:
    assert result.lost == 0, f"{result.name}: lost {result.lost_keys}"
    assert result.uploaded > 0, result
    # After the replay every acknowledged upload is classified: dead letters were replayable.
    assert result.classified == result.uploaded, result
    assert result.duplicates == 0, result


def test_resnet_killed_mid_stream_loses_nothing(stack_intact: LiveStack) -> None:
    result = function_killed(stack_intact, OBJECTS, victim="resnet", down=3.0)
    assert_nothing_lost(result)


def test_model_server_down_10s_retries_are_bounded_and_nothing_is_lost(
    stack_intact: LiveStack,
) -> None:
    result, account = modelserver_down(stack_intact, 20, down=10.0)
    assert_nothing_lost(result)
    # No busy loop: each delivery stopped at the policy's retry + 1 attempts, and the
    # classifiers saw no more requests than that allows (plus the replays).
    assert account.max_attempts <= account.allowed_attempts, account
    assert account.function_requests <= account.deliveries * account.allowed_attempts + (
        result.replayed
    ), account
    # The outage was real: something had to be retried.
    assert account.attempts > account.deliveries, account


def test_rgw_restart_refuses_uploads_meanwhile_and_classifies_the_acknowledged(
    stack_intact: LiveStack,
) -> None:
    result = rgw_restart(stack_intact, OBJECTS, down=3.0)
    assert result.refused > 0, "no upload fell into the gap: the fault did not happen"
    assert_nothing_lost(result)


def test_http_source_killed_loses_nothing(stack_intact: LiveStack) -> None:
    result = source_killed(stack_intact, OBJECTS, way="http")
    assert_nothing_lost(result)


@pytest.mark.rabbitmq
@pytest.mark.skipif(shutil.which("rabbitmq-server") is None, reason="RabbitMQ is not installed")
def test_amqp_source_killed_loses_nothing(stack_intact: LiveStack) -> None:
    if stack_intact.amqp_url is None:
        stack_intact.add_amqp_way()
    result = source_killed(stack_intact, OBJECTS, way="amqp")
    assert_nothing_lost(result)
