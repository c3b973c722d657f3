"""The whole pipeline on one machine: throughput against the raw model, latency, cold start, RSS.

    .venv/bin/python -m benchmarks.bench_pipeline [--amqp] [--objects 60] [--rate 5]

One run starts the demo's stack (pipeline.demo: real RGW, source, dispatcher, functions, model
server) with the manifests' Route rewritten to send 100 % to resnet, then measures side by side:

1. raw model throughput: gRPC Predict on mobilenet_v2 with a ready 224x224 tensor, from
   CONCURRENCY threads (what the model server can do with nothing around it);
2. pipeline throughput: `--objects` uploads from CONCURRENCY threads as fast as RGW takes them,
   counted until the last classification reply reached the Broker; the ratio 2/1 is the figure;
3. latency at a moderate rate (`--rate` uploads/s, one at a time): from the start of the PUT to
   the resnet function's log line for that key (RGW publishes an AMQP or synchronous event
   before it answers the PUT, so the log line can come before the PUT returns);
4. cold start (spawn -> ready) and idle RSS of every process, and the CPU time each process
   spent per object during the throughput run (where the time goes).

Prints Markdown tables. Everything is torn down afterwards, as for `make demo`.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import yaml
from PIL import Image
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from common.tfserving import pixels_tensor
from pipeline.collector import read_entries
from pipeline.demo import BUCKET, RESNET_MODEL, Demo, DemoOptions, s3_client
from pipeline.photos import load_photos
from pipeline.stack import REPO_ROOT, Stack, rss_kib
from pipeline.topology import load_topology

CONCURRENCY = 4
RAW_SECONDS = 10.0
WARMUP_TIMEOUT = 90.0


def resnet_only_manifests(target: Path) -> Path:
    """knative/base with the classifiers Route at resnet 100 / vision 0."""
    target.mkdir(parents=True, exist_ok=True)
    for path in (REPO_ROOT / "knative" / "base").glob("*.yaml"):
        docs = list(yaml.safe_load_all(path.read_text()))
        for doc in docs:
            if isinstance(doc, dict) and doc.get("kind") == "Route":
                for entry in doc["spec"]["traffic"]:
                    entry["percent"] = 100 if entry.get("configurationName") == "resnet" else 0
        (target / path.name).write_text(yaml.safe_dump_all(docs))
    load_topology(target)  # still a valid topology
    return target


def raw_predict_throughput(grpc_target: str, jpeg: bytes) -> float:
    """Predict calls per second on a ready tensor, CONCURRENCY threads, RAW_SECONDS."""
    pixels = Image.open(io.BytesIO(jpeg)).convert("RGB").resize((224, 224))
    batch = np.asarray(pixels, dtype=np.uint8)[None, ...]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = RESNET_MODEL
    request.model_spec.signature_name = "serving_default"
    request.inputs["images"].CopyFrom(pixels_tensor(batch))
    channel = grpc.insecure_channel(grpc_target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    for _ in range(5):
        stub.Predict(request, timeout=30)
    counts = [0] * CONCURRENCY
    stop_at = time.perf_counter() + RAW_SECONDS

    def worker(index: int) -> None:
        while time.perf_counter() < stop_at:
            stub.Predict(request, timeout=30)
            counts[index] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CONCURRENCY)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    channel.close()
    return sum(counts) / elapsed


class Bench:
    def __init__(self, demo: Demo, stack: Stack, s3: Any) -> None:
        self.demo = demo
        self.stack = stack
        self.s3 = s3
        self.photos = load_photos(6)
        self.resnet_log = stack.log_dir / "resnet.log"

    def result_keys(self) -> set[str]:
        keys = set()
        for entry in read_entries(self.demo.results):
            data = entry.get("data")
            if isinstance(data, dict) and "key" in data:
                keys.add(str(data["key"]))
        return keys

    def wait_for(self, keys: set[str], timeout: float) -> float:
        """time.time() when the last of `keys` had a result; raises on timeout."""
        deadline = time.monotonic() + timeout
        while not keys <= self.result_keys():
            if time.monotonic() > deadline:
                missing = sorted(keys - self.result_keys())
                raise RuntimeError(f"{len(missing)} result(s) missing, e.g. {missing[:3]}")
            time.sleep(0.01)
        return time.time()

    def put(self, key: str, index: int) -> float:
        """Upload; returns when the PUT started."""
        photo = self.photos[index % len(self.photos)]
        started = time.time()
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=photo.jpeg, ContentType="image/jpeg")
        return started

    def warm_up(self) -> float:
        started = time.time()
        self.put("bench/warm-up.jpg", 0)
        return self.wait_for({"bench/warm-up.jpg"}, WARMUP_TIMEOUT) - started

    def throughput(self, objects: int) -> tuple[float, float]:
        """(results/s end to end, PUTs/s of the upload phase alone)."""
        keys = [f"bench/tp-{i:04d}.jpg" for i in range(objects)]
        started = time.time()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(self.put, keys, range(objects)))
        uploaded = time.time()
        finished = self.wait_for(set(keys), 60 + objects)
        return objects / (finished - started), objects / (uploaded - started)

    def latencies(self, count: int, rate: float) -> list[float]:
        put_started: dict[str, float] = {}
        for i in range(count):
            key = f"bench/lat-{i:04d}.jpg"
            put_started[key] = self.put(key, i)
            time.sleep(max(0.0, put_started[key] + 1.0 / rate - time.time()))
        self.wait_for(set(put_started), 60)
        logged = log_times(self.resnet_log)
        return [(logged[key] - put_started[key]) * 1000 for key in put_started]


def log_times(path: Path) -> dict[str, float]:
    """key -> time of the resnet function's classification log line (its JSON `time`)."""
    import json

    times = {}
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("logger") == "resnet" and "key" in entry:
            times[entry["key"]] = datetime.fromisoformat(entry["time"]).timestamp()
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    # utime, stime, cutime, cstime: fields 14-17 of stat; index 0 here is field 3.
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def all_pids(stack: Stack) -> dict[str, int]:
    pids = {p.name: p.pid for p in stack.processes}
    for pid in stack.daemon_pids.values():
        comm_path = Path(f"/proc/{pid}/comm")
        if comm_path.exists():
            pids[f"{comm_path.read_text().strip()} (RGW)"] = pid
    return pids


def process_table(
    stack: Stack, rss: dict[str, int | None], cpu: dict[str, float], objects: int
) -> list[str]:
    rows = [
        "| process | cold start (spawn -> ready) | idle RSS | CPU per object (throughput run) |",
        "|---|---:|---:|---:|",
    ]
    ready = {p.name: p.ready_after for p in stack.processes}
    for name in all_pids(stack):
        start = ready.get(name)
        started = f"{start:.2f} s" if start is not None else "(rgw-up.sh)"
        memory = f"{(rss.get(name) or 0) / 1024:.0f} MiB"
        per_object = f"{cpu.get(name, 0.0) * 1000 / objects:.1f} ms"
        rows.append(f"| {name} | {started} | {memory} | {per_object} |")
    total = sum(cpu.values()) * 1000 / objects
    rows.append(f"| **all** | | | **{total:.1f} ms** |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amqp", action="store_true", help="RGW -> RabbitMQ -> AMQP source")
    parser.add_argument("--objects", type=int, default=60, help="uploads for the throughput run")
    parser.add_argument("--latency-objects", type=int, default=40)
    parser.add_argument("--rate", type=float, default=5.0, help="uploads/s for the latency run")
    parser.add_argument("--model-cache-dir", type=Path, default=REPO_ROOT / ".cache" / "models")
    args = parser.parse_args(argv)

    with Stack() as stack:
        options = DemoOptions(
            photos=0,
            amqp=args.amqp,
            knative_dir=resnet_only_manifests(stack.work_dir / "knative"),
            model_cache_dir=args.model_cache_dir,
        )
        rgw_started = time.monotonic()
        demo = Demo(options, sys.stderr)
        endpoints = demo.build(stack)
        stack_seconds = time.monotonic() - rgw_started
        bench = Bench(demo, stack, s3_client(endpoints.rgw))
        first_event = bench.warm_up()
        time.sleep(2)  # idle
        pids = all_pids(stack)
        rss = {name: rss_kib(pid) for name, pid in pids.items()}
        raw = raw_predict_throughput(endpoints.grpc, bench.photos[0].jpeg)
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        pipeline, puts = bench.throughput(args.objects)
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        latencies = bench.latencies(args.latency_objects, args.rate)
        processes = process_table(stack, rss, cpu, args.objects)

    transport = "AMQP (RabbitMQ)" if args.amqp else "HTTP push, persistent topic"
    print(
        f"## Pipeline on this machine ({transport}; resnet = {RESNET_MODEL}, {CONCURRENCY} "
        "concurrent clients)\n"
    )
    print("| figure | value | goal |")
    print("|---|---:|---:|")
    print(f"| raw model throughput (gRPC Predict, ready tensor) | {raw:.1f} /s | |")
    print(f"| pipeline throughput ({args.objects} uploads -> results) | {pipeline:.1f} /s | |")
    print(f"| pipeline / raw model | {pipeline / raw:.2f} | >= 0.8 |")
    print(f"| RGW PUTs/s during that run (upload phase alone) | {puts:.1f} /s | |")
    print(
        f"| upload -> classification log, p50 ({args.latency_objects} at {args.rate:g}/s) "
        f"| {statistics.median(latencies):.0f} ms | <= 50 ms |"
    )
    print(f"| upload -> classification log, p99 | {percentile(latencies, 99):.0f} ms | <= 200 ms |")
    print(f"| cores on this machine | {os.cpu_count()} | |")
    print(f"| whole stack start (RGW included) | {stack_seconds:.1f} s | |")
    print(f"| first event after start (queue adoption included) | {first_event:.1f} s | |")
    print()
    print("\n".join(processes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
