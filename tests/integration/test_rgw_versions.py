"""What the session's RGW sends that depends on its Ceph version (16.2 on Debian 12, 18.2 Reef
from the Debian 13 root under `make test-ceph18`), checked against what each version really
sends: the version comes from the data directory's ceph-release file (written by rgw-up.sh).

A small receiver runs in a thread here; the topics are non-persistent, so RGW pushes inside the
PUT and the event has arrived when put_object returns.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

import pytest

from tests.fixtures.rgw import RgwGateway, ceph_major

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import TopicConfigurationTypeDef

pytestmark = pytest.mark.rgw


@dataclass
class Pushed:
    headers: dict[str, str]
    body: dict[str, object]


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    received: list[Pushed] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            holder[0].received.append(Pushed({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Receiver(server))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield holder[0]
    server.shutdown()
    server.server_close()


def notify_to(rgw: RgwGateway, bucket: str, receiver: Receiver, cloudevents: bool) -> None:
    topic = rgw.unique_name("versions")
    attributes = {"push-endpoint": receiver.url, "persistent": "false"}
    if cloudevents:
        attributes["cloudevents"] = "true"
    arn = rgw.sns_client().create_topic(Name=topic, Attributes=attributes)["TopicArn"]
    configuration: TopicConfigurationTypeDef = {
        "Id": topic,
        "TopicArn": arn,
        "Events": ["s3:ObjectCreated:*"],
    }
    rgw.s3_client().put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"TopicConfigurations": [configuration]}
    )


def test_event_record_region_by_version(rgw: RgwGateway, bucket: str, receiver: Receiver) -> None:
    notify_to(rgw, bucket, receiver, cloudevents=False)
    rgw.s3_client().put_object(Bucket=bucket, Key="dir/a b.txt", Body=b"x")

    assert len(receiver.received) == 1
    record = receiver.received[0].body["Records"][0]  # type: ignore[index]
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["s3"]["object"]["key"] == "dir/a b.txt"
    # The default zonegroup has no api_name: 16.2 leaves awsRegion empty, Reef names it.
    assert record["awsRegion"] == ("default" if ceph_major(rgw) >= 18 else "")
    assert not any(name.startswith("ce-") for name in receiver.received[0].headers)


def test_cloudevents_topic_by_version(rgw: RgwGateway, bucket: str, receiver: Receiver) -> None:
    notify_to(rgw, bucket, receiver, cloudevents=True)
    rgw.s3_client().put_object(Bucket=bucket, Key="photo.jpg", Body=b"x")

    assert len(receiver.received) == 1
    pushed = receiver.received[0]
    record = pushed.body["Records"][0]  # type: ignore[index]
    assert record["s3"]["object"]["key"] == "photo.jpg"
    ce = {name: value for name, value in pushed.headers.items() if name.startswith("ce-")}
    if ceph_major(rgw) >= 18:
        # Binary-mode CloudEvents from RGW itself; the body stays the usual Records JSON.
        assert ce["ce-specversion"] == "1.0"
        assert ce["ce-type"] == "com.amazonaws.ObjectCreated:Put"
        assert ce["ce-source"] == f"ceph:s3.{record['awsRegion']}.{bucket}"
        assert ce["ce-subject"] == "photo.jpg"
        assert ce["ce-id"]
    else:
        assert ce == {}  # 16.2 stores the attribute and ignores it
