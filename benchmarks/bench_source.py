"""Source benchmark: upload -> CloudEvent-at-the-sink latency, and events/s through one source.

    .venv/bin/python benchmarks/bench_source.py [--uploads 500] [--burst 2000]

Starts everything for real on loopback: Ceph RGW (scripts/rgw-up.sh), RabbitMQ
(scripts/rabbitmq-up.sh), a recording HTTP sink (testkit.sink) and the source, once
per way in. Latency: PUT starts -> the sink has the CloudEvent (the recorder timestamps each
request on arrival; same host, same clock), one upload at a time (the next starts when the
previous arrived), after a warm-up that waits out RGW's adoption of the persistent topic.
Throughput: a burst pushed straight into the source
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

from testkit.rabbitmq import start_rabbitmq, stop_rabbitmq
from testkit.rgw import RgwGateway, start_rgw
from testkit.services import running_source
from testkit.sink import Recorder, start_recorder

WARM_UP_TIMEOUT = 90.0
STALL_SECONDS = 10.0
STALLS: dict[str, int] = {}
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


class Arrivals:
    """subject -> first accepted arrival time, read incrementally from the recorder's JSONL."""

    def __init__(self, sink: Recorder) -> None:
        self.path, self.offset = sink.out, 0
        self.first: dict[str, float] = {}

    def update(self) -> dict[str, float]:
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.splitlines():
            entry = json.loads(line)
            if entry["status"] == 200 and entry["body"]:
                subject = json.loads(entry["body"])["s3"]["object"]["key"]
                self.first.setdefault(subject, entry["time"])
        return self.first


_ARRIVALS: dict[str, Arrivals] = {}


def arrivals(sink: Recorder) -> dict[str, float]:
    tracker = _ARRIVALS.setdefault(str(sink.out), Arrivals(sink))
    return tracker.update()


def wait_keys(
    sink: Recorder, keys: set[str], timeout: float, poll: float = 0.05
) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        seen = arrivals(sink)
        if keys <= seen.keys():
            return seen
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(keys - seen.keys())} event(s) missing after {timeout}s")
        time.sleep(poll)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure_latency(
    rgw: RgwGateway, bucket: str, sink: Recorder, uploads: int, source_url: str
) -> tuple[list[float], list[float]]:
    """Upload -> sink latencies and the PUTs' own durations, ms."""
    s3 = rgw.s3_client()
    s3.put_object(Bucket=bucket, Key="warm-up", Body=b"x")
    wait_keys(sink, {"warm-up"}, WARM_UP_TIMEOUT)
    started: dict[str, float] = {}
    put_ms: list[float] = []
    stalled: list[str] = []
    for index in range(uploads):
        # One at a time (closed loop): latency, not the backlog of a burst. An event RGW holds
        # back longer than STALL_SECONDS is noted and waited for at the end.
        key = f"lat/{index}.jpg"
        started[key] = time.time()
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
        # The client's own wait: a direct AMQP topic makes RGW publish inside the PUT.
        put_ms.append((time.time() - started[key]) * 1000)
        try:
            wait_keys(sink, {key}, STALL_SECONDS, poll=0.002)
        except RuntimeError:
            stalled.append(key)
            print(f"event #{index} held back > {STALL_SECONDS}s", file=sys.stderr)
    try:
        seen = wait_keys(sink, set(started), 300)
    except RuntimeError:
        print(httpx.get(f"{source_url}/metrics").text, file=sys.stderr)
        raise
    STALLS[source_url] = len(stalled)
    latencies = [(seen[key] - started[key]) * 1000 for key in started]
    return latencies, put_ms


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
    return float(count / (max(seen[key] for key in keys) - begin))


@contextlib.contextmanager
def stack(work: Path) -> Iterator[tuple[RgwGateway, str]]:
    cluster, rgw = start_rgw(work / "rgw")
    with cluster:
        try:
            yield rgw, start_rabbitmq(work / "rabbitmq").url
        finally:
            stop_rabbitmq(work / "rabbitmq")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=500)
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--ways", default="http,amqp", help="comma-separated: http, amqp")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        logs = work / "logs"
        logs.mkdir()
        with stack(work) as (rgw, amqp_url):
            s3 = rgw.s3_client()
            sns = rgw.sns_client()
            for way in args.ways.split(","):
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
                    latencies, put_ms = measure_latency(
                        rgw, bucket, sink, args.uploads, source.url("")
                    )
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
                                    lambda topic=topic: push_burst_amqp(
                                        amqp_url, topic, args.burst
                                    ),
                                )
                rows.append(
                    (
                        way,
                        STALLS.get(source.url(""), 0),
                        len(latencies),
                        statistics.median(latencies),
                        percentile(latencies, 0.99),
                        max(latencies),
                        statistics.median(put_ms),
                        rate,
                    )
                )
    print(
        f"| way in | uploads | held back > {STALL_SECONDS:.0f} s by RGW | p50 ms | p99 ms | "
        f"max ms | PUT itself p50 ms | events/s (burst of {args.burst}, one source) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for way, stalls, n, p50, p99, worst, put, rate in rows:
        print(
            f"| {way} | {n} | {stalls} | {p50:.1f} | {p99:.1f} | {worst:.1f} | {put:.1f} "
            f"| {rate:.0f} |"
        )
    print("\nGoals: p50 <= 50 ms, p99 <= 200 ms, >= 300 events/s.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
