"""Retry classification, backoff, settings and the CLI's one-line errors."""

from __future__ import annotations

import random

import httpx
import pytest

from common.env import ConfigError
from source.__main__ import main
from source.delivery import (
    Outcome,
    Verdict,
    backoff_delay,
    classify_error,
    classify_status,
    retry_after_seconds,
)
from source.forwarder import PushResult
from source.settings import DeliverySettings


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_accepted(status: int) -> None:
    assert classify_status(status) is Verdict.ACCEPTED


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(status: int) -> None:
    assert classify_status(status) is Verdict.RETRY


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 413, 415, 422, 301, 304])
def test_other_statuses_are_permanent(status: int) -> None:
    assert classify_status(status) is Verdict.PERMANENT


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.ConnectTimeout("slow"),
        httpx.RemoteProtocolError("closed"),
        httpx.ReadError("reset"),
    ],
)
def test_transport_errors_are_retried(error: Exception) -> None:
    assert classify_error(error) is Verdict.RETRY


def test_bugs_are_not_retried() -> None:
    with pytest.raises(KeyError):
        classify_error(KeyError("bug"))


def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(n, 0.1, 2.0, rng) for n in range(12)]
    for attempt, delay in enumerate(delays):
        ceiling = min(2.0, 0.1 * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d, 6) for d in delays}) == len(delays)  # jitter: no two alike
    assert backoff_delay(10_000, 0.1, 2.0, rng) <= 2.0


def test_retry_after() -> None:
    assert retry_after_seconds(httpx.Headers({"Retry-After": "3"}), 5.0) == 3.0
    assert retry_after_seconds(httpx.Headers({"Retry-After": "3600"}), 5.0) == 5.0
    assert retry_after_seconds(httpx.Headers({}), 5.0) is None
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert retry_after_seconds(httpx.Headers({"Retry-After": date}), 5.0) is None


def test_push_result() -> None:
    assert PushResult([Outcome.DELIVERED, Outcome.DEAD_LETTERED, Outcome.DROPPED]).settled
    assert not PushResult([Outcome.DELIVERED, Outcome.RETRY_LATER]).settled
    assert PushResult([Outcome.DROPPED], invalid="bad").rejected
    assert not PushResult([Outcome.DEAD_LETTERED], invalid="bad").rejected


def test_settings_from_env() -> None:
    settings = DeliverySettings.from_env(
        {
            "K_SINK": "http://127.0.0.1:1/",
            "DEAD_LETTER_URL": "http://127.0.0.1:2/dlq",
            "K_CE_OVERRIDES": '{"extensions": {"a": "b"}}',
            "SINK_CONCURRENCY": "8",
        }
    )
    assert settings.sink == "http://127.0.0.1:1/"
    assert settings.dead_letter_url == "http://127.0.0.1:2/dlq"
    assert settings.overrides == {"a": "b"}
    assert settings.concurrency == 8
    assert DeliverySettings.from_env({}, sink="http://x/").sink == "http://x/"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "no sink"),
        ({"K_SINK": "ftp://x"}, "K_SINK"),
        ({"K_SINK": "http://x", "DEAD_LETTER_URL": "nope"}, "DEAD_LETTER_URL"),
        ({"K_SINK": "http://x", "SINK_CONCURRENCY": "0"}, "SINK_CONCURRENCY"),
    ],
)
def test_bad_settings_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DeliverySettings.from_env(environ)


def test_cli_without_sink_exits_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["http", "--listen", "127.0.0.1:1"], environ={}) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "K_SINK" in err and "--sink" in err


def test_cli_without_a_way_in(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([], environ={"K_SINK": "http://127.0.0.1:1/"}) == 2
    assert "http|amqp" in capsys.readouterr().err


def test_cli_help_names_every_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # one flag per line, unwrapped
    for way, names in (
        ("http", ["SOURCE_LISTEN", "K_SINK", "DEAD_LETTER_URL", "SETUP_BUCKET"]),
        ("amqp", ["AMQP_URL", "AMQP_QUEUE", "AMQP_EXCHANGE", "AMQP_PREFETCH"]),
    ):
        with pytest.raises(SystemExit):
            main([way, "--help"], environ={})
        out = capsys.readouterr().out
        for name in names:
            assert f"env {name}" in out
