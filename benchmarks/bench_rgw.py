"""RGW figures: cluster cold start, and upload -> notification received latency.

    .venv/bin/python benchmarks/bench_rgw.py [--uploads 200] [--starts 5]

Starts its own throwaway RGW (scripts/rgw-up.sh) and RabbitMQ (scripts/rabbitmq-up.sh) on free
loopback ports and removes them afterwards. Prints a Markdown table.

- cold start: empty directory -> S3 answers and the user exists (rgw-up.sh wall time).
- kept-alive metadata calls: GetObjectTagging (an XML answer) and HeadObject on one connection,
  with rgw-up.sh's `tcp_nodelay=1` and with the frontend as Ceph ships it, side by side.
- latency: time from just before PutObject to the moment the receiver has the event, for
  `--uploads` sequential 1 KiB uploads. The receivers run in this process (HTTP server thread,
  AMQP consumer thread) so both ends use the same clock. A plain PUT on a bucket without
  notifications is measured alongside as the baseline.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import pika

from source.notification_specs import NotificationSpec, TopicSpec
from source.notifications import setup
from testkit.rabbitmq import start_rabbitmq, stop_rabbitmq
from testkit.rgw import RgwCluster, start_rgw

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient

EXCHANGE = "bench"
WARM_UP_TIMEOUT = 45.0


def cold_starts(count: int, workdir: Path) -> list[float]:
    seconds = []
    for i in range(count):
        with RgwCluster(workdir / f"cold-{i}") as cluster:
            started = time.perf_counter()
            cluster.start()
            seconds.append(time.perf_counter() - started)
    return seconds


class Arrivals:
    """Arrival time of each object key, filled by the receiver threads."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.cond = threading.Condition()

    def note(self, body: bytes) -> None:
        now = time.perf_counter()
        for record in json.loads(body)["Records"]:
            with self.cond:
                self.times.setdefault(record["s3"]["object"]["key"], now)
                self.cond.notify_all()

    def wait(self, key: str, timeout: float) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: key in self.times, timeout):
                raise SystemExit(f"no event for {key} within {timeout}s")
            return self.times[key]


@contextmanager
def http_receiver(arrivals: Arrivals) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            arrivals.note(body)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/events"
    finally:
        server.shutdown()


@contextmanager
def amqp_receiver(url: str, routing_key: str, arrivals: Arrivals) -> Iterator[None]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, EXCHANGE, routing_key=routing_key)
    channel.basic_consume(queue, lambda ch, method, props, body: arrivals.note(body), auto_ack=True)
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            connection.process_data_events(time_limit=0.05)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        connection.close()


def measure(
    s3: S3Client, bucket: str, uploads: int, arrivals: Arrivals | None, prefix: str
) -> list[float]:
    latencies = []
    body = b"x" * 1024
    for i in range(uploads):
        key = f"{prefix}/{i:05d}"
        started = time.perf_counter()
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        done = time.perf_counter() if arrivals is None else arrivals.wait(key, 30.0)
        latencies.append(done - started)
    return latencies


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def subscribe(s3: S3Client, sns: SNSClient, bucket: str, topic: TopicSpec) -> None:
    s3.create_bucket(Bucket=bucket)
    setup(s3, sns, bucket, topic, NotificationSpec(topic.name, topic.name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=200)
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--calls", type=int, default=50, help="per metadata call and frontend")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-rgw-"))
    rows: list[tuple[str, str, str, str]] = []
    try:
        starts = cold_starts(args.starts, workdir)
        rows.append(
            (
                f"cold start to S3 answering (n={len(starts)})",
                f"{statistics.median(starts):.2f} s",
                "-",
                f"min {min(starts):.2f} s, max {max(starts):.2f} s",
            )
        )
        cluster, gateway = start_rgw(workdir / "rgw")
        with cluster:
            broker = start_rabbitmq(workdir / "rabbitmq")
            try:
                rows += latency_rows(
                    gateway.s3_client(), gateway.sns_client(), broker.url, args.uploads
                )
            finally:
                stop_rabbitmq(broker.data_dir)
        rows += kept_alive_rows(workdir, args.calls)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("| what | p50 / median | p99 | notes |\n| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def latency_rows(
    s3: S3Client, sns: SNSClient, amqp_url: str, uploads: int
) -> list[tuple[str, str, str, str]]:
    rows = []
    n = uploads

    def row(name: str, values: list[float], note: str) -> None:
        rows.append((name, ms(percentile(values, 50)), ms(percentile(values, 99)), note))

    s3.create_bucket(Bucket="bench-plain")
    row(f"plain PUT, no notification (n={n})", measure(s3, "bench-plain", n, None, "p"),
        "baseline: PutObject round trip")  # fmt: skip

    arrivals = Arrivals()
    with http_receiver(arrivals) as url:
        subscribe(s3, sns, "bench-http", TopicSpec("bench-http", url))
        row(f"PUT -> HTTP push, non-persistent (n={n})",
            measure(s3, "bench-http", n, arrivals, "h"), "pushed inside the PUT")  # fmt: skip

        subscribe(s3, sns, "bench-persist", TopicSpec("bench-persist", url, persistent=True))
        warm_started = time.perf_counter()
        s3.put_object(Bucket="bench-persist", Key="warm/0", Body=b"x")
        warm = arrivals.wait("warm/0", WARM_UP_TIMEOUT) - warm_started
        row(f"PUT -> HTTP push, persistent, warm (n={n})",
            measure(s3, "bench-persist", n, arrivals, "q"),
            f"first event of the new topic took {warm:.1f} s (queue-list rescan)")  # fmt: skip

    with amqp_receiver(amqp_url, "bench-amqp", arrivals):
        topic = TopicSpec("bench-amqp", amqp_url, amqp_exchange=EXCHANGE)
        subscribe(s3, sns, "bench-amqp", topic)
        row(f"PUT -> AMQP (RabbitMQ), non-persistent (n={n})",
            measure(s3, "bench-amqp", n, arrivals, "a"), "ack level broker")  # fmt: skip
    return rows


# The frontend options compared: rgw-up.sh's default and the frontend as Ceph ships it.
FRONTENDS = (("tcp_nodelay=1 (rgw-up.sh)", None), ("Ceph's default frontend", ""))


def kept_alive_rows(workdir: Path, calls: int) -> list[tuple[str, str, str, str]]:
    """Metadata calls on one kept-alive connection, with and without TCP_NODELAY on RGW's side:
    an XML answer is two small writes, and under Nagle the second waits for the client's
    delayed ACK."""
    rows: list[tuple[str, str, str, str]] = []
    for label, options in FRONTENDS:
        cluster, gateway = start_rgw(workdir / f"rgw-{len(rows)}", frontend_options=options)
        with cluster:
            s3 = gateway.s3_client()
            s3.create_bucket(Bucket="bench-meta")
            s3.put_object(Bucket="bench-meta", Key="k", Body=b"x" * 1024)
            s3.put_object_tagging(
                Bucket="bench-meta", Key="k", Tagging={"TagSet": [{"Key": "a", "Value": "b"}]}
            )
            probes: dict[str, Callable[[], object]] = {
                "GetObjectTagging": partial(s3.get_object_tagging, Bucket="bench-meta", Key="k"),
                "HeadObject": partial(s3.head_object, Bucket="bench-meta", Key="k"),
            }
            for name, probe in probes.items():
                probe()  # the connection is open and kept alive from here on
                samples = []
                for _ in range(calls):
                    started = time.perf_counter()
                    probe()
                    samples.append(time.perf_counter() - started)
                rows.append(
                    (
                        f"{name}, kept-alive connection, {label} (n={calls})",
                        ms(percentile(samples, 50)),
                        ms(percentile(samples, 99)),
                        "XML answer" if name == "GetObjectTagging" else "headers only",
                    )
                )
    return rows


if __name__ == "__main__":
    main()
