"""Result identity, the record's tag format, W3C trace context, and the runtime carrying it
(in-process, through httpx's ASGI transport), and the source's lineage attributes."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys

import httpx
import pytest

from common.cloudevents_http import BaseCloudEvent, new_event
from common.errors import NotAnImage
from common.result_records import (
    MAX_TAG_VALUE,
    MAX_TAGS,
    Label,
    ResultIdentity,
    decode_record,
    encode_record,
    record_key,
    records_in,
    with_record,
)
from common.runtime import Delivery, Function, RuntimeSettings, create_app
from common.tracing import TraceParent
from source.forwarder import Forwarder
from testkit.records import binary_headers, records, rgw_record


def identity(**changes: str | None) -> ResultIdentity:
    fields: dict[str, str | None] = {
        "bucket": "b", "key": "k", "version_id": None, "etag": "e1", "model": "m@1",
    }  # fmt: skip
    fields.update(changes)
    return ResultIdentity(**fields)  # type: ignore[arg-type]


def test_result_id_is_stable_and_names_every_part() -> None:
    assert identity().result_id == identity().result_id
    others = [
        identity(bucket="c"), identity(key="k2"), identity(etag="e2"), identity(model="m@2"),
        identity(version_id="v1"),
    ]  # fmt: skip
    assert len({identity().result_id, *(o.result_id for o in others)}) == 6
    # The version id wins over the ETag: two versions with the same bytes are two results.
    assert identity(version_id="v1", etag="x").marker == "v:v1"
    assert identity(version_id="null").marker == "e:e1"
    assert identity(etag=None).marker == "-"


def test_record_round_trip_within_s3_limits() -> None:
    labels = [Label("Egyptian cat", 0.7134, 285), Label("tabby, tabby cat", 0.1, 281)]
    labels.append(Label("no score", math.nan))
    value = encode_record("e:abc", labels)
    record = decode_record("m", value)
    assert record is not None and record.marker == "e:abc"
    assert [(x.name, x.class_id) for x in record.labels] == [(x.name, x.class_id) for x in labels]
    assert record.labels[0].score == pytest.approx(0.7134)
    assert math.isnan(record.labels[2].score)
    assert "," not in value.split(" ", 1)[1].split(",")[1]  # names are encoded
    long = encode_record("v:" + "x" * 40, [Label("n" * 80, 0.5, i) for i in range(10)])
    assert len(long) <= MAX_TAG_VALUE
    assert 1 <= len(decode_record("m", long).labels) < 10  # type: ignore[union-attr]


def test_with_record_keeps_other_tags_and_stays_within_ten() -> None:
    tags = {f"owner{i}": "x" for i in range(7)} | {record_key("a"): "e:1", record_key("b"): "e:2"}
    merged = with_record(tags, "c", "e:3", {"classified-by": "c"})
    assert len(merged) == MAX_TAGS
    assert all(f"owner{i}" in merged for i in range(7))
    assert set(records_in(merged)) >= {"c"}
    assert merged["classified-by"] == "c"


@pytest.mark.parametrize(
    "value",
    [
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        " 00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-00 ",
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future",
    ],
)
def test_valid_traceparents(value: str) -> None:
    parsed = TraceParent.parse(value)
    assert parsed is not None and parsed.trace_id == "0af7651916cd43dd8448eb211c80319c"
    child = parsed.child()
    assert child.trace_id == parsed.trace_id and child.span_id != parsed.span_id


@pytest.mark.parametrize(
    "value",
    [
        None, "", "garbage", "00-" + "0" * 32 + "-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
    ],
)  # fmt: skip
def test_invalid_traceparents(value: str | None) -> None:
    assert TraceParent.parse(value) is None


class Replier(Function):
    name = "replier"
    blocking = True

    def handle(self, delivery: Delivery) -> BaseCloudEvent | None:
        import logging

        logging.getLogger("replier").info("handling", extra={"key": delivery.objects[0].key})
        if delivery.objects[0].key == "bad":
            raise NotAnImage("not an image")
        assert delivery.span is not None and delivery.received_at is not None
        return new_event("t", "/s", {"ok": True})


def post_all(requests: list[tuple[dict[str, str], bytes]]) -> list[httpx.Response]:
    app = create_app(Replier, RuntimeSettings())

    async def go() -> list[httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://f") as client:
                return [await client.post("/", headers=h, content=b) for h, b in requests]

    return asyncio.run(go())


def event(key: str, **headers: str) -> tuple[dict[str, str], bytes]:
    base = binary_headers("com.amazonaws.s3.ObjectCreated:Put", "ceph:s3.default.bkt", subject=key)
    return {**base, **headers}, json.dumps(records(rgw_record("bkt", key))).encode()


def test_runtime_continues_the_trace_into_reply_logs_and_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parent = TraceParent.new()
    ok, bad, fresh = post_all(
        [
            event("good", **{"ce-traceparent": parent.header()}),
            event("bad", **{"ce-traceparent": parent.header()}),
            event("good"),
        ]
    )
    reply = TraceParent.parse(ok.headers["ce-traceparent"])
    assert reply is not None and reply.trace_id == parent.trace_id
    assert reply.span_id != parent.span_id
    assert bad.status_code == 415
    assert TraceParent.parse(bad.json()["traceparent"]).trace_id == parent.trace_id  # type: ignore[union-attr]
    started = TraceParent.parse(fresh.headers["ce-traceparent"])
    assert started is not None and started.trace_id != parent.trace_id
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "{" in line]
    handling = [line for line in lines if line.get("message") == "handling"]
    assert [line["trace_id"] for line in handling[:2]] == [parent.trace_id] * 2
    assert handling[0]["span_id"] == reply.span_id
    assert handling[0]["parent_span_id"] == parent.span_id


def test_without_an_otlp_endpoint_the_sdk_is_never_imported() -> None:
    # (FastAPI itself imports the OpenTelemetry *API*; the SDK and the exporter are ours.)
    script = (
        "import sys, asyncio, httpx\n"
        "from tests.unit.test_results_and_tracing import post_all, event\n"
        "post_all([event('good')])\n"
        "wanted = ('opentelemetry.sdk', 'opentelemetry.exporter', 'common.otlp')\n"
        "print(sorted(m for m in sys.modules if m.startswith(wanted)))\n"
    )
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


class _Settings:
    region = "default"
    overrides: dict[str, str] = {}  # noqa: RUF012


def forwarder() -> Forwarder:
    return Forwarder(_Settings(), None, None, "http")  # type: ignore[arg-type]


def test_the_source_starts_a_trace_and_keeps_the_request_id() -> None:
    record = rgw_record("bkt", "k")
    body = json.dumps(records(record, rgw_record("bkt", "k2"))).encode()
    first, second = forwarder().events_of({"content-type": "application/json"}, body)
    attributes = first.get_attributes()
    trace = TraceParent.parse(attributes["traceparent"])
    assert trace is not None
    assert attributes["xamzrequestid"] == record["responseElements"]["x-amz-request-id"]
    assert attributes["sourcereceived"].endswith("Z")
    # Each object event is its own trace, unless the pusher sent a traceparent.
    assert TraceParent.parse(second.get_attributes()["traceparent"]).trace_id != trace.trace_id  # type: ignore[union-attr]
    parent = TraceParent.new()
    [continued] = forwarder().events_of(
        {"content-type": "application/json", "traceparent": parent.header()},
        json.dumps(records(record)).encode(),
    )
    child = TraceParent.parse(continued.get_attributes()["traceparent"])
    assert child is not None and child.trace_id == parent.trace_id
    assert child.span_id != parent.span_id


def test_the_source_keeps_the_traceparent_of_an_rgw_cloudevent() -> None:
    parent = TraceParent.new().header()
    headers, body = event("k", **{"ce-traceparent": parent})
    [passed] = forwarder().events_of(headers, body)
    assert passed.get_attributes()["traceparent"] == parent
    assert "sourcereceived" in passed.get_attributes()
