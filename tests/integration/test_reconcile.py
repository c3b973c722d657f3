"""`rgw-inference reconcile` as a real process against real RGW: one event per object without a
result record reaches the sink, nothing once they are classified, and a killed run resumes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from common.events import parse_object_events
from common.result_records import Label, encode_record, with_record
from testkit.processes import Process, python_argv
from testkit.sink import Recorder
from tests.fixtures.resnet import FunctionFactory, photo_jpeg
from tests.fixtures.rgw import RgwGateway

pytestmark = pytest.mark.rgw


def fill(rgw: RgwGateway, bucket: str, keys: list[str]) -> dict[str, str]:
    """Small objects; their ETags by key."""
    s3 = rgw.s3_client()
    etags = {}
    for key in keys:
        answer = s3.put_object(Bucket=bucket, Key=key, Body=f"object {key}".encode())
        etags[key] = str(answer["ETag"]).strip('"')
    return etags


def mark_classified(rgw: RgwGateway, bucket: str, key: str, etag: str, model: str) -> None:
    """The record a classifier writes (see common.result_records)."""
    value = encode_record(f"e:{etag}", [Label("tabby", 0.5, 281)])
    tags = with_record({"owner": "kept"}, model, value)
    rgw.s3_client().put_object_tagging(
        Bucket=bucket,
        Key=key,
        Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]},
    )


def reconcile_process(
    rgw: RgwGateway, log_dir: Path, name: str, bucket: str, sink: str, *args: str
) -> Process:
    argv = python_argv("-m", "cli", "reconcile", "--bucket", bucket, "--sink", sink, *args)
    return Process(name, argv, log_dir / f"{name}.log", rgw.env())


def run_reconcile(
    rgw: RgwGateway, log_dir: Path, bucket: str, sink: str, *args: str
) -> tuple[int, str]:
    name = f"reconcile-{time.monotonic_ns()}"
    process = reconcile_process(rgw, log_dir, name, bucket, sink, *args)
    process.start()
    assert process.popen is not None
    code = process.popen.wait(120)
    process.stop()
    return code, process.log_text()


def sent_keys(recorder: Recorder) -> list[str]:
    keys = []
    for request in recorder.requests(lambda r: r.path == "/events"):
        assert request.header("ce-type") == "com.amazonaws.s3.ObjectCreated:Put"
        assert request.header("ce-traceparent")
        [obj] = parse_object_events(request.json(), str(request.header("ce-id")))
        keys.append(obj.key)
    return keys


def test_one_event_per_unclassified_object_then_none(
    rgw: RgwGateway, bucket: str, recorder: Recorder, log_dir: Path
) -> None:
    keys = [f"photos/{i:03d}.jpg" for i in range(12)]
    etags = fill(rgw, bucket, [*keys, "other/skip.jpg"])
    for key in keys[:5]:
        mark_classified(rgw, bucket, key, etags[key], "mobilenet_v2")
    # A record for other content (the object was overwritten since) does not count.
    mark_classified(rgw, bucket, keys[5], "0" * 32, "mobilenet_v2")
    sink = recorder.url("/events")

    code, output = run_reconcile(rgw, log_dir, bucket, sink, "--prefix", "photos/", "--dry-run")
    assert code == 0, output
    assert recorder.requests() == []
    assert [line for line in output.splitlines() if line.startswith("photos/")] == keys[5:]

    code, output = run_reconcile(rgw, log_dir, bucket, sink, "--prefix", "photos/")
    assert code == 0, output
    assert sorted(sent_keys(recorder)) == keys[5:]
    [request] = recorder.requests(lambda r: keys[6].encode() in r.body)
    record = request.json()
    assert record["s3"]["object"]["eTag"] == etags[keys[6]]
    assert record["s3"]["object"]["size"] == len(f"object {keys[6]}")

    # --model narrows the records that count: another model has classified none of them.
    code, output = run_reconcile(
        rgw, log_dir, bucket, sink, "--prefix", "photos/", "--model", "efficientnet_lite0",
        "--dry-run",
    )  # fmt: skip
    assert [line for line in output.splitlines() if line.startswith("photos/")] == keys

    for key in keys[5:]:
        mark_classified(rgw, bucket, key, etags[key], "mobilenet_v2")
    before = len(recorder.requests())
    code, output = run_reconcile(rgw, log_dir, bucket, sink, "--prefix", "photos/")
    assert code == 0, output
    assert len(recorder.requests()) == before


def test_killed_halfway_it_resumes(
    rgw: RgwGateway, bucket: str, recorder: Recorder, log_dir: Path
) -> None:
    keys = [f"k/{i:03d}" for i in range(40)]
    fill(rgw, bucket, keys)
    state = log_dir / f"reconcile-state-{bucket}.json"
    sink = recorder.url("/events")
    args = ("--rate", "20", "--workers", "1", "--state", str(state))
    first = reconcile_process(rgw, log_dir, f"reconcile-killed-{bucket}", bucket, sink, *args)
    first.start()
    try:
        recorder.wait_for(10, timeout=30)
    finally:
        first.kill()
    done = json.loads(state.read_text())["last_key"]
    assert keys[5] <= done < keys[-1]

    code, output = run_reconcile(rgw, log_dir, bucket, sink, *args)
    assert code == 0, output
    received = sent_keys(recorder)
    assert sorted(set(received)) == keys
    # At most the one in flight at the kill is sent twice, with the same id (a consumer drops it).
    assert len(received) - len(keys) <= 1
    ids: dict[str, set[str]] = {}
    for request in recorder.requests():
        ids.setdefault(request.json()["s3"]["object"]["key"], set()).add(
            str(request.header("ce-id"))
        )
    assert all(len(found) == 1 for found in ids.values())


def test_reconcile_into_a_classifier_then_nothing_left(
    rgw: RgwGateway, bucket: str, resnet_function: FunctionFactory, log_dir: Path
) -> None:
    function = resnet_function("mobilenet_v2")
    s3 = rgw.s3_client()
    keys = ["a/cat.jpg", "a/cup.jpg", "a/cat2.jpg"]
    for key, photo in zip(keys, ("chelsea", "coffee", "chelsea"), strict=True):
        s3.put_object(Bucket=bucket, Key=key, Body=photo_jpeg(photo))

    code, output = run_reconcile(rgw, log_dir, bucket, function.url + "/")
    assert code == 0, output
    results = [line for line in function.log_lines() if "labels" in line]
    assert sorted(line["key"] for line in results) == sorted(keys)
    assert all(line["recorded"] is False for line in results)

    code, output = run_reconcile(rgw, log_dir, bucket, function.url + "/", "--dry-run")
    assert code == 0, output
    assert not [line for line in output.splitlines() if line.startswith("a/")]
    summary = [json.loads(line) for line in output.splitlines() if '"reconciled"' in line]
    assert summary[-1]["sent"] == 0 and summary[-1]["classified"] == 3
