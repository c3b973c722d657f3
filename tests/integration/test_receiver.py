"""The receiver as a real process: real HTTP in, JSON log lines out, as Knative would use it."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from testkit.records import rgw_legacy_event
from tests.fixtures.processes import ServiceProcess, free_port, python_argv, running

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RGW_BODY = (EXAMPLES / "rgw-put-event.json").read_bytes()


class Receiver:
    def __init__(self, proc: ServiceProcess, url: str) -> None:
        self.proc = proc
        self.url = url

    def post(self, headers: dict[str, str], body: bytes) -> httpx.Response:
        return httpx.post(self.url, headers=headers, content=body, timeout=10)

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.proc.log_text().splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    def wait_for_log(self, predicate: Any, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_lines():
                if predicate(line):
                    return line
            time.sleep(0.02)
        raise AssertionError(f"no matching log line; log tail:\n{self.proc.log_tail()}")


@pytest.fixture(scope="module")
def receiver(log_dir: Path) -> Iterator[Receiver]:
    port = free_port()
    env = {
        "PORT": str(port),
        "K_SERVICE": "receiver",
        "K_REVISION": "receiver-00001",
        "MAX_EVENT_BYTES": str(64 * 1024),
        "MAX_RECORDS_PER_EVENT": "50",
    }
    url = f"http://127.0.0.1:{port}"
    with running(
        "receiver",
        python_argv("-m", "functions.receiver"),
        log_dir,
        env,
        ready_url=f"{url}/health/readiness",
    ) as proc:
        yield Receiver(proc, url + "/")


def binary_headers(event_id: str, **extra: str) -> dict[str, str]:
    return {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-source": "ceph:s3.default.nbkt-false",
        "ce-type": "com.amazonaws.s3.ObjectCreated:Put",
        "content-type": "application/json",
        **extra,
    }


def test_binary_mode_logs_the_seed_line(receiver: Receiver) -> None:
    response = receiver.post(binary_headers("bin-1"), RGW_BODY)
    assert response.status_code == 200, response.text
    line = receiver.wait_for_log(lambda line: line.get("event_id") == "bin-1" and "key" in line)
    assert line["message"] == 'Object: "dir/hello world.txt" Bucket: "nbkt-false"'
    assert line["event_type"] == "com.amazonaws.s3.ObjectCreated:Put"
    assert line["event_time"] == "2026-11-28T21:38:19.047572+00:00"
    assert line["service"] == "receiver" and line["revision"] == "receiver-00001"


def test_structured_mode(receiver: Receiver) -> None:
    body = json.loads((EXAMPLES / "structured-event.json").read_text())
    body["id"] = "struct-1"
    response = receiver.post(
        {"content-type": "application/cloudevents+json"}, json.dumps(body).encode()
    )
    assert response.status_code == 200, response.text
    receiver.wait_for_log(lambda line: line.get("event_id") == "struct-1" and line.get("bucket"))


def test_several_records_one_line_each(receiver: Receiver) -> None:
    record = json.loads(RGW_BODY)["Records"][0]
    records = []
    for key in ["a.jpg", "dir/b c.jpg", "ü/ñ+.png"]:
        copy = json.loads(json.dumps(record))
        copy["s3"]["object"]["key"] = key
        records.append(copy)
    response = receiver.post(binary_headers("multi"), json.dumps({"Records": records}).encode())
    assert response.status_code == 200
    for index, key in enumerate(["a.jpg", "dir/b c.jpg", "ü/ñ+.png"]):
        line = receiver.wait_for_log(lambda line, i=index: line.get("event_id") == f"multi/{i}")
        assert line["key"] == key
        assert line["message"] == f'Object: "{key}" Bucket: "nbkt-false"'


def test_aws_flavour_key_is_decoded(receiver: Receiver) -> None:
    record = json.loads(RGW_BODY)["Records"][0]
    record["eventSource"] = "aws:s3"
    record["s3"]["object"]["key"] = "dir/hello+world%2B1+%C3%A9.jpg"
    response = receiver.post(binary_headers("aws-1"), json.dumps({"Records": [record]}).encode())
    assert response.status_code == 200
    line = receiver.wait_for_log(lambda line: line.get("event_id") == "aws-1" and "key" in line)
    assert line["key"] == "dir/hello world+1 é.jpg"


def test_legacy_rgwevent(receiver: Receiver) -> None:
    legacy = rgw_legacy_event("psbkt", "pulled-object-2.txt", bucket_id="x.1")
    headers = binary_headers("legacy-1", **{"ce-type": "dev.knative.source.rgwpubsub"})
    response = receiver.post(headers, json.dumps(legacy).encode())
    assert response.status_code == 200
    line = receiver.wait_for_log(lambda line: line.get("event_id") == "legacy-1" and "key" in line)
    assert line["message"] == 'Object: "pulled-object-2.txt" Bucket: "psbkt"'


@pytest.mark.parametrize(
    ("headers", "body", "status", "error"),
    [
        ({"content-type": "application/json"}, RGW_BODY, 400, "invalid-cloudevent"),
        (
            {k: v for k, v in binary_headers("x").items() if k != "ce-id"},
            RGW_BODY,
            400,
            "invalid-cloudevent",
        ),
        (
            {k: v for k, v in binary_headers("x").items() if k != "ce-source"},
            RGW_BODY,
            400,
            "invalid-cloudevent",
        ),
        (binary_headers("bad-json"), b'{"Records": [', 400, "invalid-cloudevent"),
        ({"content-type": "application/cloudevents+json"}, b'{"id": 1', 400, "invalid-cloudevent"),
        ({"content-type": "text/plain"}, b"hello", 400, "invalid-cloudevent"),
        (binary_headers("not-s3"), b'{"hello": "world"}', 422, "unsupported-payload"),
        (binary_headers("no-data"), b"", 422, "unsupported-payload"),
        (binary_headers("many"), json.dumps({"Records": [{}] * 51}).encode(), 413, "too-large"),
        (binary_headers("huge"), b"x" * (64 * 1024 + 1), 413, "too-large"),
    ],
)
def test_malformed_requests_get_a_clear_4xx(
    receiver: Receiver, headers: dict[str, str], body: bytes, status: int, error: str
) -> None:
    response = receiver.post(headers, body)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert response.json()["message"]
    assert receiver.proc.alive()


def test_redelivery_is_dropped(receiver: Receiver) -> None:
    for _ in range(3):
        assert receiver.post(binary_headers("dup-1"), RGW_BODY).status_code == 200
    time.sleep(0.2)
    handled = [x for x in receiver.log_lines() if x.get("event_id") == "dup-1" and "key" in x]
    assert len(handled) == 1
    metrics = httpx.get(receiver.url + "metrics").text
    duplicates = [x for x in metrics.splitlines() if x.startswith("cloudevents_duplicates_total")]
    assert float(duplicates[0].split()[-1]) >= 2


def test_health_and_metrics(receiver: Receiver) -> None:
    assert httpx.get(receiver.url + "health/liveness").status_code == 200
    assert httpx.get(receiver.url + "health/readiness").json() == {"ready": True}
    metrics = httpx.get(receiver.url + "metrics")
    assert metrics.status_code == 200
    for name in [
        "cloudevents_received_total",
        "cloudevents_handled_total",
        "cloudevents_failed_total",
        "cloudevent_handle_seconds_bucket",
    ]:
        assert name in metrics.text


def test_bad_configuration_stops_with_one_line() -> None:
    result = subprocess.run(
        python_argv("-m", "functions.receiver"),
        env={"PATH": "/usr/bin:/bin", "PORT": "not-a-port"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "configuration error: PORT: expected an integer from 1 to 65535, got 'not-a-port'"
    )
