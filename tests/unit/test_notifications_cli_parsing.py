"""The notifications CLI rejects bad input before it needs any RGW."""

from __future__ import annotations

import pytest

from cli.main import build_parser, main


def test_help_lists_every_setup_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["notifications", "setup", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--bucket", "--topic", "--endpoint", "--id", "--persistent", "--events", "--prefix",
        "--suffix", "--amqp-exchange", "--amqp-ack-level", "--opaque-data", "--cloudevents",
        "--no-verify-ssl",
    ):  # fmt: skip
        assert flag in text


def test_suffix_flag_collects_several_values() -> None:
    args = build_parser().parse_args(
        ["notifications", "setup", "--bucket", "b", "--topic", "t", "--endpoint", "http://h/",
         "--suffix", ".jpg", ".png", "--suffix", ".gif"]
    )  # fmt: skip
    assert args.suffix == [".jpg", ".png", ".gif"]
    assert args.events == ["s3:ObjectCreated:*"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--endpoint", "amqp://u:p@h:5672", "--amqp-exchange", "x"], "unencrypted"),
        (["--endpoint", "http://h/", "--events", "s3:Nope"], "unknown event"),
        (["--endpoint", "mqtt://h/"], "expected http"),
    ],
)
def test_invalid_setup_exits_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["notifications", "setup", "--bucket", "b", "--topic", "t", *argv])
    assert code == 2
    assert message in capsys.readouterr().err


def test_missing_endpoint_setting_is_explained(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "S3_HOSTNAME"):
        monkeypatch.delenv(name, raising=False)
    assert main(["notifications", "show", "--bucket", "b"]) == 2
    assert "AWS_ENDPOINT_URL_S3" in capsys.readouterr().err
