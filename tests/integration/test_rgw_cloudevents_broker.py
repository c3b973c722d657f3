"""The Broker-direct way (knative/overlays/rgw-cloudevents-broker): RGW 18.2 ("Reef") pushes
binary-mode CloudEvents itself, and the functions take them as they come, with no source between.

A real Reef RGW (`make test-ceph18` runs this file from the Debian 13 root) pushes to real
function processes, which stand in for what the Broker hands on unchanged (its ingress keeps the
`ce-*` attributes and the body; a Trigger delivers them to the subscriber as they are):
- a persistent `cloudevents=true` topic, made with the project's own set-up command
  (`rgw-inference notifications setup --persistent --cloudevents`), pushes an upload to the
  vision function, which fetches the photo from RGW and classifies it; RGW hears 2xx and pushes
  it only once;
- a non-persistent one pushes created and removed objects to the receiver, which logs each.

RGW 16.2 stores the `cloudevents` attribute and pushes plain S3 records, which are not
CloudEvents (test_rgw_versions.py checks that); there is no Broker-direct way on 16.2, and these
tests are skipped there.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from source.notifications import remove
from testkit.processes import python_argv
from testkit.services import FunctionProcess, running_function
from tests.fixtures.modelserver import photo_jpeg
from tests.fixtures.rgw import RgwGateway, ceph_major
from tests.fixtures.vision import FakeVision, VisionFactory

pytestmark = pytest.mark.rgw

RGW_CREATED_TYPE = "com.amazonaws.ObjectCreated:Put"  # RGW's own naming: no "s3."


@pytest.fixture(autouse=True)
def _reef_or_later(rgw: RgwGateway) -> None:
    if ceph_major(rgw) < 18:
        pytest.skip("RGW 16.2 sends no CloudEvents; run `make test-ceph18` for RGW 18.2")


def notifications_setup(rgw: RgwGateway, *args: str) -> dict[str, object]:
    """`rgw-inference notifications setup ARGS` against the session's RGW; its JSON answer."""
    done = subprocess.run(
        python_argv("-m", "cli", "notifications", "setup", *args),
        env={**os.environ, **rgw.env()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def wait_for_lines(
    function: FunctionProcess, key: str, count: int = 1, timeout: float = 45.0
) -> list[dict[str, object]]:
    """The function's log lines about object `key`, once there are `count` of them."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in function.log_lines() if line.get("key") == key]
        if len(lines) >= count:
            return lines
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no log line about {key!r} within {timeout} s; log tail:\n"
                f"{function.process.log_tail()}"
            )
        time.sleep(0.05)


@pytest.fixture
def receiver(log_dir: Path) -> Iterator[FunctionProcess]:
    env = {"K_SERVICE": "receiver", "K_REVISION": "receiver-00001", "LOG_LEVEL": "INFO"}
    with running_function(log_dir, "receiver", env) as started:
        yield started


def test_persistent_cloudevents_topic_feeds_the_vision_function(
    rgw: RgwGateway, bucket: str, vision_function: VisionFactory, fake_vision: FakeVision
) -> None:
    function = vision_function(fake_vision.url)
    # A topic of the session's pool: RGW adopted its queue at start, not at the next 30 s scan.
    topic = rgw.claim_persistent_topic()
    answer = notifications_setup(
        rgw,
        "--bucket", bucket, "--topic", topic, "--endpoint", function.url + "/",
        "--persistent", "--cloudevents", "--suffix", ".jpg", ".png",
    )  # fmt: skip
    assert answer["topic_arn"] == rgw.topic_arn(topic)
    attributes = rgw.sns_client().get_topic_attributes(TopicArn=rgw.topic_arn(topic))
    endpoint = json.loads(attributes["Attributes"]["EndPoint"])
    assert "cloudevents=true" in endpoint["EndpointArgs"].split("&")
    assert endpoint["Persistent"] is True
    try:
        rgw.s3_client().put_object(
            Bucket=bucket, Key="cats/chelsea.jpg", Body=photo_jpeg("chelsea")
        )
        [labelled, *_] = wait_for_lines(function, "cats/chelsea.jpg")
        assert labelled.get("bucket") == bucket, labelled
        assert fake_vision.request_count() == 1
        # The function answered 2xx: RGW's persistent queue does not push the event again.
        time.sleep(2.0)
        assert fake_vision.request_count() == 1
        failures = [line for line in function.log_lines() if line.get("level") == "ERROR"]
        assert not failures, failures
    finally:
        # The pool topic stays; the notification goes, so the clean-up's deletions queue nothing.
        remove(rgw.s3_client(), rgw.sns_client(), bucket)


def test_created_and_removed_objects_reach_the_receiver(
    rgw: RgwGateway, bucket: str, receiver: FunctionProcess
) -> None:
    topic = rgw.unique_name("ce-receiver")
    notifications_setup(
        rgw,
        "--bucket", bucket, "--topic", topic, "--endpoint", receiver.url + "/",
        "--cloudevents", "--events", "s3:ObjectCreated:*", "s3:ObjectRemoved:*",
    )  # fmt: skip
    s3 = rgw.s3_client()
    # Non-persistent: RGW pushes inside the request, so each line is there when the call returns.
    s3.put_object(Bucket=bucket, Key="dir/a b.jpg", Body=b"x")
    s3.delete_object(Bucket=bucket, Key="dir/a b.jpg")

    created, removed = wait_for_lines(receiver, "dir/a b.jpg", count=2)
    assert created["event_type"] == RGW_CREATED_TYPE
    assert created["message"] == f'Object: "dir/a b.jpg" Bucket: "{bucket}"'
    assert removed["event_type"] == "com.amazonaws.ObjectRemoved:Delete"
    assert created["event_id"] != removed["event_id"]
