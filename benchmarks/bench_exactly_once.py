"""Result identity benchmark: what a duplicate event costs, and reconcile's objects/s.

    make bench-exactly_once
    python -m benchmarks.bench_exactly_once [--images 20 --objects 10000]

On real RGW and the real model server (mobilenet_v2):

1. Calls per event, counted inside the resnet function (boto3's and the gRPC client's calls):
   a first event, a duplicate (a new CloudEvent id for the same PUT: another replica, RGW's
   second push), a stale event (overwritten since), and a duplicate with RESULT_RECORDS=false.
2. Latency of the same cases through a running resnet process (CloudEvent -> answer, median).
3. `rgw-inference reconcile` over a bucket of small objects: with no records (one event each to
   a recording sink) and with every object already classified (a tag read each, nothing sent).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from benchmarks.support import log_dir, machine, table
from common.cloudevents_http import parse_request
from common.events import parse_object_events
from common.result_records import Label, encode_record, record_key
from common.runtime import Delivery
from testkit.processes import Process, python_argv
from testkit.records import binary_headers, records, rgw_record
from testkit.rgw import RgwGateway, start_rgw
from testkit.samples import photo_jpeg
from testkit.services import running_function, running_modelserver, write_model_config
from testkit.sink import start_recorder

MODEL = "mobilenet_v2"


def event_for(bucket: str, key: str, etag: str, size: int) -> tuple[dict[str, str], bytes]:
    record = rgw_record(bucket, key, size=size, etag=etag)
    headers = binary_headers(
        "com.amazonaws.s3.ObjectCreated:Put", f"ceph:s3.default.{bucket}", subject=key
    )
    return headers, json.dumps(records(record)).encode()


def put(rgw: RgwGateway, bucket: str, key: str, body: bytes) -> tuple[str, int]:
    answer = rgw.s3_client().put_object(Bucket=bucket, Key=key, Body=body)
    return str(answer["ETag"]).strip('"'), len(body)


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


# --- 1. calls per event ---------------------------------------------------------------------------


class CountingFunction:
    """A resnet function in this process, with its calls to RGW and to the model counted."""

    def __init__(self, records_on: bool) -> None:
        from functions.resnet.app import ResnetFunction

        os.environ["RESULT_RECORDS"] = "true" if records_on else "false"
        self.function = ResnetFunction()
        self.function.start()
        deadline = time.monotonic() + 60
        while not self.function.ready() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert self.function.store is not None
        self.s3_calls: Counter[str] = Counter()
        self.predicts = 0
        self.function.store.client.meta.events.register("before-call.s3", self._s3_call)
        self._predict = self.function.client.predict
        self.function.client.predict = self._counted  # type: ignore[method-assign]

    def _s3_call(self, event_name: str, **_: Any) -> None:
        self.s3_calls.update([event_name.split(".")[-1]])

    def _counted(self, request: Any) -> Any:
        self.predicts += 1
        return self._predict(request)

    def handle(self, event: tuple[dict[str, str], bytes]) -> list[object]:
        self.s3_calls.clear()
        self.predicts = 0
        ce = parse_request(*event)
        delivery = Delivery(ce, parse_object_events(ce.get_data(), ce.get_id()))
        replied = self.function.handle(delivery) is not None
        which = ", ".join(f"{op} {n}" for op, n in sorted(self.s3_calls.items()))
        return [sum(self.s3_calls.values()), which, self.predicts, "yes" if replied else "no"]


def calls_rows(rgw: RgwGateway, target: str, bucket: str) -> list[list[object]]:
    os.environ.update(
        {**rgw.env(), "RESNET_SERVING_ENDPOINT": target, "MODEL_NAME": MODEL, "LOG_LEVEL": "ERROR"}
    )
    rows: list[list[object]] = []
    for records_on in (True, False):
        counting = CountingFunction(records_on)
        mode = "on" if records_on else "off"
        key = f"calls-{mode}/cat.jpg"
        etag, size = put(rgw, bucket, key, photo_jpeg("chelsea"))
        rows.append(["first event", mode, *counting.handle(event_for(bucket, key, etag, size))])
        rows.append(
            ["duplicate (new id, same PUT)", mode,
             *counting.handle(event_for(bucket, key, etag, size))]
        )  # fmt: skip
        old = event_for(bucket, key, etag, size)
        put(rgw, bucket, key, photo_jpeg("coffee"))
        rows.append(["stale (overwritten since)", mode, *counting.handle(old)])
        counting.function.stop()
    return rows


# --- 2. latency through a process ----------------------------------------------------------------


def latency_rows(rgw: RgwGateway, target: str, bucket: str, images: int) -> list[list[object]]:
    env = {**rgw.env(), "RESNET_SERVING_ENDPOINT": target, "MODEL_NAME": MODEL}
    env["LOG_LEVEL"] = "WARNING"
    rows: list[list[object]] = []
    for records_on in (True, False):
        env["RESULT_RECORDS"] = "true" if records_on else "false"
        first, duplicate = [], []
        with (
            running_function(log_dir(), "resnet", env, name=f"resnet-{records_on}") as function,
            httpx.Client(timeout=60) as http,
        ):

            def send(event: tuple[dict[str, str], bytes]) -> float:
                started = time.perf_counter()
                http.post(function.url, headers=event[0], content=event[1]).raise_for_status()
                return time.perf_counter() - started

            for i in range(images + 2):
                key = f"latency-{records_on}/{i}.jpg"
                etag, size = put(rgw, bucket, key, photo_jpeg("chelsea"))
                one, two = (
                    send(event_for(bucket, key, etag, size)),
                    send(event_for(bucket, key, etag, size)),
                )
                if i >= 2:  # the first two warm the connections up
                    first.append(one)
                    duplicate.append(two)
        mode = "on (default)" if records_on else "off"
        rows.append(
            [mode, f"{median_ms(first):.1f}", f"{median_ms(duplicate):.1f}",
             f"{median_ms(first) / median_ms(duplicate):.1f}x"]
        )  # fmt: skip
    return rows


# --- 3. reconcile ---------------------------------------------------------------------------------


def fill(rgw: RgwGateway, bucket: str, prefix: str, count: int, recorded: bool) -> None:
    s3 = rgw.s3_client()

    def one(i: int) -> None:
        body = f"small object {i}".encode()
        extra: dict[str, Any] = {}
        if recorded:  # the record a classifier would have written (a simple PUT's ETag is MD5)
            value = encode_record(f"e:{hashlib.md5(body).hexdigest()}", [Label("tabby", 0.5, 281)])
            extra["Tagging"] = f"{quote(record_key(MODEL))}={quote(value)}"
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{i:06d}", Body=body, **extra)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(count)))


def reconcile_seconds(rgw: RgwGateway, bucket: str, prefix: str, sink: str) -> tuple[float, str]:
    argv = python_argv(
        "-m", "cli", "reconcile", "--bucket", bucket, "--prefix", f"{prefix}/", "--sink", sink
    )
    name = f"reconcile-{prefix}"
    process = Process(name, argv, log_dir() / f"{name}.log", rgw.env())
    started = time.perf_counter()
    process.start()
    assert process.popen is not None
    process.popen.wait(3600)
    seconds = time.perf_counter() - started
    process.stop()
    summary = [line for line in process.log_text().splitlines() if '"reconciled"' in line]
    return seconds, summary[-1] if summary else process.log_tail()


def reconcile_rows(rgw: RgwGateway, bucket: str, objects: int) -> list[list[object]]:
    rows = []
    with start_recorder(log_dir(), "reconcile-sink") as recorder:
        for prefix, recorded in (("unclassified", False), ("classified", True)):
            fill(rgw, bucket, prefix, objects, recorded)
            seconds, summary = reconcile_seconds(rgw, bucket, prefix, recorder.url("/events"))
            sent = json.loads(summary).get("sent") if summary.startswith("{") else summary
            rows.append([prefix, objects, sent, f"{seconds:.1f}", f"**{objects / seconds:.0f}**"])
    return rows


@contextmanager
def stack(workdir: Path) -> Iterator[tuple[RgwGateway, str]]:
    cluster, rgw = start_rgw(workdir / "rgw")
    with cluster, running_modelserver(log_dir(), write_model_config(workdir / "m.json")) as server:
        yield rgw, server.grpc_target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20, help="samples per latency figure")
    parser.add_argument("--objects", type=int, default=10_000, help="objects for reconcile")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp)) as (rgw, target):
        bucket = f"bench-exactly-once-{uuid.uuid4().hex[:8]}"
        rgw.s3_client().create_bucket(Bucket=bucket)
        calls = calls_rows(rgw, target, bucket)
        latency = latency_rows(rgw, target, bucket, args.images)
        reconcile = reconcile_rows(rgw, bucket, args.objects)
    print(f"Result identity benchmark ({machine()}, {datetime.now(UTC):%Y-%m-%d})\n")
    print("Calls per event, counted in the resnet function (mobilenet_v2, ~1 MP JPEG)\n")
    print(
        table(
            ["event", "RESULT_RECORDS", "RGW calls", "which", "Predicts", "result event"],
            calls,
        )
    )
    print(f"\nCloudEvent -> answer through a resnet process, median of {args.images} (ms)\n")
    print(table(["RESULT_RECORDS", "first event", "duplicate", "first / duplicate"], latency))
    print(f"\n`rgw-inference reconcile` over {args.objects} small objects (8 workers)\n")
    print(table(["objects", "listed", "events sent", "seconds", "objects/s"], reconcile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
