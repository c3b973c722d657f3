"""`python -m cli notifications ...` as a user runs it, against the real RGW."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from source.notification_specs import NotificationSpec, TopicSpec
from source.notifications import ensure_notification, ensure_topic
from testkit.sink import Recorder
from tests.fixtures.processes import REPO_ROOT, python_argv
from tests.fixtures.rgw import RgwGateway

pytestmark = pytest.mark.rgw


def cli(rgw: RgwGateway, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
    env.update(rgw.env())
    return subprocess.run(
        python_argv("-m", "cli", "notifications", *args),
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def cli_json(rgw: RgwGateway, *args: str) -> Any:
    done = cli(rgw, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def ids_and_topics(shown: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted(
        (entry["notification"]["Id"], entry["notification"]["TopicArn"])
        for entry in shown["notifications"]
    )


def test_setup_twice_gives_the_same_state_and_keeps_other_notifications(
    rgw: RgwGateway, bucket: str, recorder: Recorder
) -> None:
    # Someone else's notification on the same bucket must survive our set-up and removal.
    other = rgw.unique_name("others")
    other_arn = ensure_topic(rgw.sns_client(), TopicSpec(other, recorder.url("/others")))
    ensure_notification(rgw.s3_client(), bucket, NotificationSpec("theirs", other), other_arn)
    topic = rgw.unique_name("cli")
    setup_args = [
        "setup", "--bucket", bucket, "--topic", topic, "--endpoint", recorder.url("/ours"),
        "--events", "s3:ObjectCreated:*", "s3:ObjectRemoved:*",
        "--prefix", "in/", "--suffix", ".jpg", ".png", "--opaque-data", "cli-test",
    ]  # fmt: skip

    first = cli_json(rgw, *setup_args)
    state_after_first = cli_json(rgw, "show", "--bucket", bucket)
    second = cli_json(rgw, *setup_args)
    state_after_second = cli_json(rgw, "show", "--bucket", bucket)

    assert first["notification_changed"] is True
    assert second["notification_changed"] is False
    assert first["topic_arn"] == second["topic_arn"] == f"arn:aws:sns:default::{topic}"
    assert state_after_first == state_after_second
    assert ids_and_topics(state_after_second) == sorted(
        [(topic, first["topic_arn"]), ("theirs", other_arn)]
    )
    ours = next(e for e in state_after_second["notifications"] if e["notification"]["Id"] == topic)
    assert ours["topic"]["OpaqueData"] == "cli-test"
    assert json.loads(ours["topic"]["EndPoint"])["EndpointAddress"] == recorder.url("/ours")

    # The set-up really works end to end: one object inside the filter, one outside.
    s3 = rgw.s3_client()
    s3.put_object(Bucket=bucket, Key="in/skip.txt", Body=b"x")
    s3.put_object(Bucket=bucket, Key="in/cat.png", Body=b"x")
    ours_only = recorder.wait_for(1, where=lambda r: r.path == "/ours")
    assert [r.json()["Records"][0]["s3"]["object"]["key"] for r in ours_only] == ["in/cat.png"]


def test_setup_with_changed_flags_updates_in_place(
    rgw: RgwGateway, bucket: str, recorder: Recorder
) -> None:
    topic = rgw.unique_name("changing")
    base = ["setup", "--bucket", bucket, "--topic", topic, "--endpoint", recorder.url("/a")]
    cli_json(rgw, *base)
    changed = cli_json(rgw, *base[:-1], recorder.url("/b"), "--events", "s3:ObjectRemoved:*")

    assert changed["notification_changed"] is True
    [entry] = cli_json(rgw, "show", "--bucket", bucket)["notifications"]
    assert entry["notification"]["Events"] == ["s3:ObjectRemoved:*"]
    assert json.loads(entry["topic"]["EndPoint"])["EndpointAddress"] == recorder.url("/b")


def test_remove_by_topic_deletes_the_topic_and_keeps_others(
    rgw: RgwGateway, bucket: str, recorder: Recorder
) -> None:
    mine, theirs = rgw.unique_name("mine"), rgw.unique_name("theirs")
    for topic in (mine, theirs):
        cli_json(rgw, "setup", "--bucket", bucket, "--topic", topic, "--endpoint", recorder.url())

    removed = cli_json(rgw, "remove", "--bucket", bucket, "--topic", mine)
    again = cli_json(rgw, "remove", "--bucket", bucket, "--topic", mine)

    assert removed["removed_ids"] == [mine]
    assert again["removed_ids"] == []
    shown = cli_json(rgw, "show", "--bucket", bucket)
    assert [e["notification"]["Id"] for e in shown["notifications"]] == [theirs]
    topics = {t["TopicArn"] for t in rgw.sns_client().list_topics()["Topics"]}
    assert f"arn:aws:sns:default::{theirs}" in topics


def test_remove_all(rgw: RgwGateway, bucket: str, recorder: Recorder) -> None:
    for topic in (rgw.unique_name("one"), rgw.unique_name("two")):
        cli_json(rgw, "setup", "--bucket", bucket, "--topic", topic, "--endpoint", recorder.url())
    assert len(cli_json(rgw, "remove", "--bucket", bucket)["removed_ids"]) == 2
    assert cli_json(rgw, "show", "--bucket", bucket)["notifications"] == []


def test_password_in_amqp_endpoint_is_refused_before_calling_rgw(rgw: RgwGateway) -> None:
    done = cli(
        rgw, "setup", "--bucket", "any", "--topic", "t", "--endpoint",
        "amqp://user:secret@127.0.0.1:5672", "--amqp-exchange", "ex",
    )  # fmt: skip
    assert done.returncode == 2
    assert "unencrypted" in done.stderr
    assert "secret" not in done.stderr, "the password must not be echoed"


def test_missing_bucket_is_a_clear_error(rgw: RgwGateway, recorder: Recorder) -> None:
    done = cli(
        rgw, "setup", "--bucket", "no-such-bucket-here", "--topic", "t", "--endpoint",
        recorder.url(),
    )  # fmt: skip
    assert done.returncode == 1
    assert "bucket 'no-such-bucket-here' does not exist" in done.stderr


def test_unreachable_endpoint_is_a_clear_error(rgw: RgwGateway) -> None:
    closed = RgwGateway("http://127.0.0.1:9", rgw.access_key, rgw.secret_key, rgw.data_dir)
    done = cli(closed, "show", "--bucket", "anything")
    assert done.returncode == 1
    assert "error: talking to RGW" in done.stderr
