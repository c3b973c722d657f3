"""Source benchmark: upload -> CloudEvent-at-the-sink latency, and events/s through one source.

    .venv/bin/python benchmarks/bench_source.py [--uploads 500] [--burst 2000]

Starts everything for real on loopback: Ceph RGW (scripts/rgw-up.sh), RabbitMQ
(scripts/rabbitmq-up.sh), a recording HTTP sink (tests/support/recorder.py) and the source, once
per way in. Latency: PUT starts -> the sink has the CloudEvent (the recorder timestamps each
request on arrival; same host, same clock), uploads one after another, after a warm-up that waits
out RGW's adoption of the persistent topic. Throughput: a burst pushed straight into the source
(HTTP POSTs of RGW records from 32 client threads; AMQP messages published to the exchange)
and drained to the sink, so the figure is the source's, not RGW's. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pika

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.processes import free_port  # noqa: E402
from tests.fixtures.rabbitmq import start_rabbitmq, stop_rabbitmq  # noqa: E402
from tests.fixtures.recorder import Recorder, start_recorder  # noqa: E402
from tests.fixtures.rgw import RgwGateway, start_rgw, stop_rgw  # noqa: E402
from tests.fixtures.source import running_source  # noqa: E402

WARM_UP_TIMEOUT = 90.0
EXCHANGE = "rgw"


def record(bucket: str, key: str) -> dict[str, object]:
    return {
        "eventVersion": "2.2",
        "eventSource": "ceph:s3",
        "awsRegion": "",
        "eventTime": "2026-11-28T21:38:19.047572Z",
        "eventName": "ObjectCreated:Put",
        "responseElements": {"x-amz-request-id": f"req-{key}"},
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 1, "eTag": "e"}},
    }


def arrivals(sink: Recorder) -> dict[str, float]:
    """subject -> first arrival time (accepted requests only)."""
    first: dict[str, float] = {}
    for request in sink.requests():
        if request.status == 200:
            subject = json.loads(request.body)["s3"]["object"]["key"]
            first.setdefault(subject, request.time)
    return first


def wait_keys(sink: Recorder, keys: set[str], timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        seen = arrivals(sink)
        if keys <= seen.keys():
            return seen
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(keys - seen.keys())} event(s) missing after {timeout}s")
        time.sleep(0.05)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure_latency(rgw: RgwGateway, bucket: str, sink: Recorder, uploads: int) -> list[float]:
    s3 = rgw.s3_client()
    s3.put_object(Bucket=bucket, Key="warm-up", Body=b"x")
    wait_keys(sink, {"warm-up"}, WARM_UP_TIMEOUT)
    started: dict[str, float] = {}
    for index in range(uploads):
        key = f"lat/{index}.jpg"
        started[key] = time.time()
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    seen = wait_keys(sink, set(started), 120)
    return [(seen[key] - started[key]) * 1000 for key in started]


def push_burst_http(url: str, count: int) -> None:
    with httpx.Client(timeout=30) as client:

        def push(index: int) -> None:
            body = json.dumps({"Records": [record("burst", f"b/{index}")]})
            answer = client.post(url, content=body, headers={"content-type": "application/json"})
            answer.raise_for_status()

        with ThreadPoolExecutor(32) as pool:
            list(pool.map(push, range(count)))


def push_burst_amqp(amqp_url: str, routing_key: str, count: int) -> None:
    with contextlib.closing(pika.BlockingConnection(pika.URLParameters(amqp_url))) as connection:
        channel = connection.channel()
        for index in range(count):
            body = json.dumps({"Records": [record("burst", f"b/{index}")]}).encode()
            channel.basic_publish(
                EXCHANGE, routing_key, body, pika.BasicProperties(delivery_mode=2)
            )


def throughput(sink: Recorder, count: int, push: object) -> float:
    keys = {f"b/{index}" for index in range(count)}
    begin = time.time()
    push()  # type: ignore[operator]
    seen = wait_keys(sink, keys, 300)
    return count / (max(seen[key] for key in keys) - begin)


@contextlib.contextmanager
def stack(work: Path) -> Iterator[tuple[RgwGateway, str]]:
    rgw = start_rgw(work / "rgw", free_port())
    broker = None
    try:
        broker = start_rabbitmq(work / "rabbitmq", free_port())
        yield rgw, broker.url
    finally:
        if broker is not None:
            stop_rabbitmq(work / "rabbitmq")
        stop_rgw(work / "rgw", None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=500)
    parser.add_argument("--burst", type=int, default=2000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        logs = work / "logs"
        logs.mkdir()
        with stack(work) as (rgw, amqp_url):
            s3 = rgw.s3_client()
            sns = rgw.sns_client()
            for way in ("http", "amqp"):
                bucket = rgw.unique_name(f"bench-{way}")
                s3.create_bucket(Bucket=bucket)
                topic = rgw.unique_name(f"bench-{way}")
                # Created early: RGW adopts a new persistent queue on its 30 s rescan.
                sns.create_topic(
                    Name=topic,
                    Attributes={"push-endpoint": "http://127.0.0.1:9/", "persistent": "true"},
                )
                queue = f"bench-{way}"
                wiring = ["--setup-bucket", bucket, "--topic", topic, "--log-level", "WARNING"]
                if way == "amqp":
                    wiring += ["--url", amqp_url, "--queue", queue, "--exchange", EXCHANGE]
                with (
                    start_recorder(logs, f"sink-{way}") as sink,
                    running_source(logs, way, sink.url("/"), rgw.env(), wiring) as source,
                ):
                    latencies = measure_latency(rgw, bucket, sink, args.uploads)
                    with start_recorder(logs, f"burst-sink-{way}") as burst_sink:
                        # A second source on the same topology, pointed at a fresh sink.
                        burst_args = wiring[6:] if way == "amqp" else []
                        with running_source(logs, way, burst_sink.url("/"), {}, burst_args) as b:
                            if way == "http":
                                rate = throughput(
                                    burst_sink,
                                    args.burst,
                                    lambda: push_burst_http(b.url("/"), args.burst),
                                )
                            else:
                                source.process.stop()  # one consumer: the burst source
                                rate = throughput(
                                    burst_sink,
                                    args.burst,
                                    lambda: push_burst_amqp(amqp_url, topic, args.burst),
                                )
                rows.append(
                    (
                        way,
                        len(latencies),
                        statistics.median(latencies),
                        percentile(latencies, 0.99),
                        max(latencies),
                        rate,
                    )
                )
    print("| way in | uploads | p50 ms | p99 ms | max ms | events/s (burst of "
          f"{args.burst}, one source) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for way, n, p50, p99, worst, rate in rows:
        print(f"| {way} | {n} | {p50:.1f} | {p99:.1f} | {worst:.1f} | {rate:.0f} |")
    print("\nGoals: p50 <= 50 ms, p99 <= 200 ms, >= 300 events/s.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
