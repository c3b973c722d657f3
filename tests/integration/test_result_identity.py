"""One result per object version, on real RGW, the real model server and real resnet processes:
duplicates across replicas and notifications, stale events after an overwrite, trace context
from the event to the reply and the logs, and spans exported to an OTLP/HTTP receiver."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import httpx
import pytest

from common.result_records import records_in
from common.tracing import TraceParent
from testkit.processes import free_port
from testkit.records import binary_headers, records, rgw_record
from tests.fixtures.resnet import FunctionFactory, RunningFunction, photo_jpeg
from tests.fixtures.rgw import RgwGateway

pytestmark = pytest.mark.rgw

MODEL = "mobilenet_v2"


def put(rgw: RgwGateway, bucket: str, key: str, body: bytes) -> dict[str, Any]:
    """Upload; the object's ETag, version id and size as RGW's notification would name them."""
    answer = rgw.s3_client().put_object(Bucket=bucket, Key=key, Body=body)
    return {
        "etag": str(answer["ETag"]).strip('"'),
        "version_id": answer.get("VersionId") or "",
        "size": len(body),
    }


def notification(
    bucket: str, key: str, written: dict[str, Any], event_id: str | None = None, **headers: str
) -> tuple[dict[str, str], bytes]:
    """The CloudEvent the source sends for one PUT (a new id unless given)."""
    record = rgw_record(bucket, key, size=written["size"], etag=written["etag"])
    record["s3"]["object"]["versionId"] = written["version_id"]
    ce = binary_headers(
        "com.amazonaws.s3.ObjectCreated:Put", f"ceph:s3.default.{bucket}", event_id, subject=key
    )
    return {**ce, **headers}, json.dumps(records(record)).encode()


def send(function: RunningFunction, event: tuple[dict[str, str], bytes]) -> httpx.Response:
    headers, body = event
    return httpx.post(function.url + "/", headers=headers, content=body, timeout=60.0)


def classified(function: RunningFunction, key: str) -> list[dict[str, Any]]:
    """The function's result lines for `key` that ran the model (not rebuilt from a record)."""
    return [
        line
        for line in function.log_lines()
        if line.get("key") == key and "labels" in line and line.get("recorded") is False
    ]


@pytest.fixture
def function(resnet_function: FunctionFactory) -> RunningFunction:
    """One resnet process on the real model server."""
    return resnet_function(MODEL)


def test_duplicates_across_replicas_run_the_model_once(
    rgw: RgwGateway, bucket: str, resnet_function: FunctionFactory
) -> None:
    first, second = resnet_function(MODEL), resnet_function(MODEL)
    key = "dup/cat.jpg"
    written = put(rgw, bucket, key, photo_jpeg("chelsea"))
    event = notification(bucket, key, written)
    # The same CloudEvent to both replicas, then RGW's second notification for the PUT (new id).
    answers = [send(first, event), send(second, event)]
    answers.append(send(second, notification(bucket, key, written)))
    answers.append(send(first, notification(bucket, key, written)))

    assert [a.status_code for a in answers] == [200, 200, 200, 200], [a.text for a in answers]
    ids = {a.headers["ce-id"] for a in answers if a.content}
    assert len(ids) == 1, ids
    assert all(a.json()["etag"] == written["etag"] for a in answers)
    assert [a.json()["recorded"] for a in answers] == [False, True, True, True]
    labels = [[label["class_id"] for label in a.json()["labels"]] for a in answers]
    assert all(ids == labels[0] for ids in labels), labels
    assert len(classified(first, key)) + len(classified(second, key)) == 1
    tags = {
        t["Key"]: t["Value"]
        for t in rgw.s3_client().get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    }
    [record] = records_in(tags).values()
    assert record.marker == f"e:{written['etag']}"


def test_a_race_between_replicas_gives_one_result_id(
    rgw: RgwGateway, bucket: str, resnet_function: FunctionFactory
) -> None:
    replicas = [resnet_function(MODEL), resnet_function(MODEL)]
    key = "race/cup.jpg"
    written = put(rgw, bucket, key, photo_jpeg("coffee"))
    with ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(lambda n: send(replicas[n % 2], notification(bucket, key, written)), range(4))
        )
    assert {a.status_code for a in answers} == {200}, [a.text for a in answers]
    assert len({a.headers["ce-id"] for a in answers}) == 1


def test_an_overwritten_object_old_event_no_result_new_event_new_id(
    rgw: RgwGateway, bucket: str, function: RunningFunction
) -> None:
    key = "overwrite/photo.jpg"
    old = put(rgw, bucket, key, photo_jpeg("chelsea"))
    old_event = notification(bucket, key, old)
    new = put(rgw, bucket, key, photo_jpeg("coffee"))  # before the old event is handled
    assert new["etag"] != old["etag"]

    stale = send(function, old_event)
    assert stale.status_code == 200 and not stale.content, stale.text
    assert "ce-id" not in stale.headers
    fresh = send(function, notification(bucket, key, new))
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["etag"] == new["etag"]
    reasons = [line for line in function.log_lines() if line.get("reason") == "stale"]
    assert [line["etag"] for line in reasons] == [old["etag"]]

    # The old version's result id (had it been classified) differs from the new one's.
    again = send(function, notification(bucket, key, new))
    assert again.headers["ce-id"] == fresh.headers["ce-id"]
    assert again.json()["recorded"] is True


def test_a_versioned_bucket_stale_by_version_id(
    rgw: RgwGateway, bucket: str, resnet_function: FunctionFactory
) -> None:
    s3 = rgw.s3_client()
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    function = resnet_function(MODEL)
    key = "versions/photo.jpg"
    old = put(rgw, bucket, key, photo_jpeg("chelsea"))
    new = put(rgw, bucket, key, photo_jpeg("chelsea"))  # same bytes, same ETag, a new version
    assert old["version_id"] and new["version_id"] != old["version_id"]

    stale = send(function, notification(bucket, key, old))
    assert stale.status_code == 200 and not stale.content, stale.text
    fresh = send(function, notification(bucket, key, new))
    assert fresh.json()["version_id"] == new["version_id"]
    duplicate = send(function, notification(bucket, key, new))
    assert duplicate.headers["ce-id"] == fresh.headers["ce-id"]
    assert duplicate.json()["recorded"] is True
    tags = s3.get_object_tagging(Bucket=bucket, Key=key, VersionId=new["version_id"])["TagSet"]
    [record] = records_in({t["Key"]: t["Value"] for t in tags}).values()
    assert record.marker == f"v:{new['version_id']}"


def test_records_off_classifies_every_time_with_the_same_id(
    rgw: RgwGateway, bucket: str, resnet_function: FunctionFactory
) -> None:
    function = resnet_function(MODEL, RESULT_RECORDS="false")
    key = "norecord/cat.jpg"
    written = put(rgw, bucket, key, photo_jpeg("chelsea"))
    answers = [send(function, notification(bucket, key, written)) for _ in range(2)]
    assert len({a.headers["ce-id"] for a in answers}) == 1
    assert len(classified(function, key)) == 2
    assert rgw.s3_client().get_object_tagging(Bucket=bucket, Key=key)["TagSet"] == []


def test_traceparent_continues_into_the_reply_and_the_logs(
    rgw: RgwGateway, bucket: str, function: RunningFunction
) -> None:
    key = "trace/cat.jpg"
    written = put(rgw, bucket, key, photo_jpeg("chelsea"))
    incoming = TraceParent.new()
    answer = send(
        function, notification(bucket, key, written, **{"ce-traceparent": incoming.header()})
    )
    assert answer.status_code == 200, answer.text
    out = TraceParent.parse(answer.headers["ce-traceparent"])
    assert out is not None and out.trace_id == incoming.trace_id
    assert out.span_id != incoming.span_id
    assert answer.json()["trace_id"] == incoming.trace_id
    stages = answer.json()["stages"]
    assert stages["function_received"] <= stages["model_done"]
    lines = [line for line in function.log_lines() if line.get("key") == key]
    assert lines and all(line["trace_id"] == incoming.trace_id for line in lines)
    assert {line["span_id"] for line in lines} == {out.span_id}
    assert {line["parent_span_id"] for line in lines} == {incoming.span_id}

    # An error answer (here 410: the object is gone) names the trace too: Knative copies the
    # body into the dead letter.
    rgw.s3_client().delete_object(Bucket=bucket, Key=key)
    gone = send(
        function, notification(bucket, key, written, **{"ce-traceparent": incoming.header()})
    )
    assert gone.status_code == 410
    assert TraceParent.parse(gone.json()["traceparent"]).trace_id == incoming.trace_id  # type: ignore[union-attr]


class _Traces(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        if self.path == "/v1/traces":
            self.bodies.append(self.rfile.read(length))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, list[bytes]]]:
    """A minimal OTLP/HTTP receiver: records each POST /v1/traces body."""
    port = free_port()
    bodies: list[bytes] = []
    handler = type("Traces", (_Traces,), {"bodies": bodies})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", bodies
    finally:
        server.shutdown()
        server.server_close()


def test_spans_reach_an_otlp_receiver(
    rgw: RgwGateway,
    bucket: str,
    resnet_function: FunctionFactory,
    otlp_receiver: tuple[str, list[bytes]],
) -> None:
    trace_service = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
    url, bodies = otlp_receiver
    function = resnet_function(MODEL, OTEL_EXPORTER_OTLP_ENDPOINT=url)
    key = "otlp/cat.jpg"
    written = put(rgw, bucket, key, photo_jpeg("chelsea"))
    incoming = TraceParent.new()
    answer = send(
        function, notification(bucket, key, written, **{"ce-traceparent": incoming.header()})
    )
    out = TraceParent.parse(answer.headers["ce-traceparent"])
    assert out is not None and out.trace_id == incoming.trace_id

    def spans() -> list[Any]:
        found = []
        for body in list(bodies):
            request = trace_service.ExportTraceServiceRequest.FromString(body)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    found += list(scope.spans)
        return found

    import time

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not any(
        s.trace_id.hex() == incoming.trace_id for s in spans()
    ):
        time.sleep(0.2)
    [span] = [s for s in spans() if s.trace_id.hex() == incoming.trace_id]
    assert span.span_id.hex() == out.span_id
    assert span.parent_span_id.hex() == incoming.span_id
