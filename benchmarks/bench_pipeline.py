"""The whole pipeline on one machine: throughput against the raw model, latency, cold start, RSS.

    .venv/bin/python -m benchmarks.bench_pipeline [--amqp] [--objects 150] [--rate 5]

One run starts the demo's stack (localknative.demo: real RGW, source, dispatcher, functions, model
server) with the manifests' Route rewritten to send 100 % to resnet, then measures back to back,
on the same model server process, the same model (mobilenet_v2) and the same client concurrency:

1. raw model throughput: gRPC Predict on mobilenet_v2 with a ready 224x224 uint8 tensor (the
   tensor the resnet function sends), from CONCURRENCY threads: what the model server can do
   with nothing around it. Measured right before and right after the pipeline run (the figure is
   both together); the CPU the model server and this client spent per Predict is kept, and so is
   what the rest of the machine spent meanwhile, so that a busy neighbour shows in the table;
2. pipeline throughput: `--objects` uploads from `--upload-threads` threads as fast as RGW takes
   them, counted until the last classification reply reached the Broker; the ratio 2/1 is the
   figure. The uploaders are many so that they are not what limits the run: with AMQP, RGW
   answers a PUT only after RabbitMQ confirmed the publish (about 0.2 s here), and 4 uploaders
   would measure that, not the pipeline;
3. latency at a moderate rate (`--rate` uploads/s, one at a time): from the start of the PUT to
   the resnet function's log line for that key, split per hop with the dispatcher's record
   (when it got the event) and the function's own latency_ms (download + classify). The same is
   measured on a second bucket whose topic is *not* persistent (RGW pushes within the PUT),
   which shows what RGW's persistent queue adds (the HTTP way only; with `--amqp` RGW
   publishes to RabbitMQ within the PUT anyway);
4. cold start (spawn -> ready) and idle RSS of every process, and the CPU time each process
   (this benchmark's S3 client included) spent per object during the throughput run: the CPU
   budget, and the throughput ceiling it puts on this machine's cores.

Prints Markdown tables. Everything is torn down afterwards, as for `make demo`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import yaml
from PIL import Image
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from common.tfserving import pixels_tensor
from localknative.collector import read_entries
from localknative.demo import BUCKET, RESNET_MODEL, Demo, DemoOptions, Endpoints, s3_client
from localknative.photos import load_photos
from localknative.topology import load_topology
from testkit.stack import REPO_ROOT, Rgw, Stack, rss_kib

CONCURRENCY = 4
UPLOAD_THREADS = 16
RAW_SECONDS = 6.0  # twice: right before and right after the pipeline run
WARMUP_TIMEOUT = 90.0
# A second bucket whose topic is not persistent: RGW pushes within the PUT, no queue.
SYNC_BUCKET = "photos-sync"
SYNC_TOPIC = "photos-sync"


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


@dataclass
class RawRun:
    per_second: float
    calls: int
    server_cpu: float  # seconds, model server process
    client_cpu: float  # seconds, this process (the gRPC client threads)
    elapsed: float
    machine_cpu: float  # seconds, every process on the machine

    @property
    def other_load(self) -> float:
        """Cores kept busy by processes other than the model server and this client."""
        return (self.machine_cpu - self.server_cpu - self.client_cpu) / self.elapsed

    def __add__(self, other: RawRun) -> RawRun:
        calls, elapsed = self.calls + other.calls, self.elapsed + other.elapsed
        return RawRun(
            calls / elapsed,
            calls,
            self.server_cpu + other.server_cpu,
            self.client_cpu + other.client_cpu,
            elapsed,
            self.machine_cpu + other.machine_cpu,
        )


def raw_predict_throughput(grpc_target: str, jpeg: bytes, server_pid: int) -> RawRun:
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

    server_before, client_before = cpu_seconds(server_pid), time.process_time()
    machine_before = machine_cpu_seconds()
    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CONCURRENCY)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    server_cpu, client_cpu = cpu_seconds(server_pid), time.process_time()
    machine_cpu = machine_cpu_seconds()
    channel.close()
    calls = sum(counts)
    return RawRun(
        calls / elapsed,
        calls,
        server_cpu - server_before,
        client_cpu - client_before,
        elapsed,
        machine_cpu - machine_before,
    )


@dataclass
class Hops:
    """One upload at the latency rate, in ms from the start of its PUT."""

    put_done: float  # the PUT returned
    dispatcher: float  # the channel (dispatcher) got the event: RGW + source before this
    logged: float  # the resnet function logged the classification
    function: float  # the function's own latency_ms (download + classify)


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

    def put(self, key: str, index: int, bucket: str = BUCKET) -> tuple[float, float]:
        """Upload; returns when the PUT started and when it returned."""
        photo = self.photos[index % len(self.photos)]
        started = time.time()
        self.s3.put_object(Bucket=bucket, Key=key, Body=photo.jpeg, ContentType="image/jpeg")
        return started, time.time()

    def warm_up(self) -> float:
        started = time.time()
        self.put("bench/warm-up.jpg", 0)
        return self.wait_for({"bench/warm-up.jpg"}, WARMUP_TIMEOUT) - started

    def throughput(self, objects: int, threads: int) -> tuple[float, float, float]:
        """(results/s end to end, PUTs/s of the upload phase alone, seconds of the run)."""
        keys = [f"bench/tp-{i:04d}.jpg" for i in range(objects)]
        started = time.time()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(self.put, keys, range(objects)))
        uploaded = time.time()
        finished = self.wait_for(set(keys), 60 + objects)
        return objects / (finished - started), objects / (uploaded - started), finished - started

    def latencies(self, count: int, rate: float, bucket: str = BUCKET) -> list[Hops]:
        puts: dict[str, tuple[float, float]] = {}
        for i in range(count):
            key = f"bench/lat-{bucket}-{i:04d}.jpg"
            puts[key] = self.put(key, i, bucket)
            time.sleep(max(0.0, puts[key][0] + 1.0 / rate - time.time()))
        self.wait_for(set(puts), 60)
        logged = log_lines(self.resnet_log)
        received = dispatcher_received(self.demo.record)
        hops = []
        for key, (started, returned) in puts.items():
            log_time, function_ms = logged[key]
            hops.append(
                Hops(
                    put_done=(returned - started) * 1000,
                    dispatcher=(received[key] - started) * 1000,
                    logged=(log_time - started) * 1000,
                    function=function_ms,
                )
            )
        return hops


def log_lines(path: Path) -> dict[str, tuple[float, float]]:
    """key -> (time of the resnet function's classification log line, its latency_ms)."""
    lines = {}
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("logger") == "resnet" and "key" in entry:
            stamp = datetime.fromisoformat(entry["time"]).timestamp()
            lines[entry["key"]] = (stamp, float(entry.get("latency_ms", 0.0)))
    return lines


def dispatcher_received(record: Path) -> dict[str, float]:
    """key (the event's subject) -> when the dispatcher started delivering it.

    Each record line is written when one subscription's delivery ended, `elapsed_ms` after it
    started; the earliest start over the subscriptions is when the channel got the event.
    """
    received: dict[str, float] = {}
    for entry in read_entries(record):
        key = entry.get("subject")
        if key is None:
            continue
        began = float(entry["time"]) - float(entry["elapsed_ms"]) / 1000
        received[key] = min(began, received.get(key, began))
    return received


def wire_sync_bucket(s3: Any, rgw: Rgw, endpoints: Endpoints) -> None:
    """A second bucket notifying the same source through a topic that is not persistent."""
    s3.create_bucket(Bucket=SYNC_BUCKET)
    argv = [
        sys.executable, "-m", "cli", "notifications", "setup",
        "--bucket", SYNC_BUCKET, "--topic", SYNC_TOPIC, "--endpoint", f"{endpoints.source}/",
    ]  # fmt: skip
    subprocess.run(
        argv, cwd=REPO_ROOT, env={**os.environ, **rgw.env()}, check=True, capture_output=True
    )


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


def machine_cpu_seconds() -> float:
    """CPU time every process on the machine spent so far (non-idle jiffies of /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def all_pids(stack: Stack) -> dict[str, int]:
    pids = {p.name: p.pid for p in stack.processes}
    for pid in stack.daemon_pids.values():
        comm_path = Path(f"/proc/{pid}/comm")
        if comm_path.exists():
            pids[f"{comm_path.read_text().strip()} (RGW)"] = pid
    return pids


def process_table(
    stack: Stack,
    rss: dict[str, int | None],
    cpu: dict[str, float],
    objects: int,
    raw: RawRun,
) -> list[str]:
    """Where the CPU goes, per object in the pipeline and per Predict in the raw run."""
    rows = [
        "| process | cold start (spawn -> ready) | idle RSS | CPU per object (pipeline run) "
        "| CPU per Predict (raw run) |",
        "|---|---:|---:|---:|---:|",
    ]
    ready = {p.name: p.ready_after for p in stack.processes}
    raw_cpu = {"modelserver": raw.server_cpu, CLIENT: raw.client_cpu}
    for name in [*all_pids(stack), CLIENT]:
        start = ready.get(name)
        started = f"{start:.2f} s" if start is not None else ""
        if name.endswith("(RGW)"):
            started = "(rgw-up.sh)"
        memory = f"{(rss.get(name) or 0) / 1024:.0f} MiB" if name in rss else ""
        per_object = f"{cpu.get(name, 0.0) * 1000 / objects:.1f} ms"
        per_call = f"{raw_cpu[name] * 1000 / raw.calls:.1f} ms" if name in raw_cpu else ""
        rows.append(f"| {name} | {started} | {memory} | {per_object} | {per_call} |")
    total = sum(cpu.values()) * 1000 / objects
    raw_total = sum(raw_cpu.values()) * 1000 / raw.calls
    rows.append(f"| **all** | | | **{total:.1f} ms** | **{raw_total:.1f} ms** |")
    return rows


CLIENT = "S3 / gRPC client (this benchmark)"


def budget_table(
    cpu: dict[str, float], objects: int, seconds: float, machine: float, raw: RawRun
) -> list[str]:
    """What the CPU per object allows on this machine's cores, next to what was measured."""
    cores = os.cpu_count() or 1
    per_object = sum(cpu.values()) / objects
    per_call = (raw.server_cpu + raw.client_cpu) / raw.calls
    ceiling = cores / per_object
    model_share = cpu.get("modelserver", 0.0) / sum(cpu.values())
    return [
        "| CPU budget | value |",
        "|---|---:|",
        f"| cores | {cores} |",
        f"| CPU per object, all processes (pipeline) | {per_object * 1000:.1f} ms |",
        f"| of which the model server | {model_share:.0%} |",
        f"| CPU per Predict, server + client (raw run) | {per_call * 1000:.1f} ms |",
        f"| pipeline / raw model from CPU alone (= CPU per Predict / CPU per object; "
        f"what the ratio is when both runs use the cores fully) | {per_call / per_object:.2f} |",
        f"| pipeline ceiling = cores / CPU per object | {ceiling:.1f} /s |",
        f"| cores busy with this stack during the pipeline run | "
        f"{sum(cpu.values()) / seconds:.2f} |",
        f"| cores busy with other work on the machine: raw runs / pipeline run | "
        f"{raw.other_load:.2f} / {(machine - sum(cpu.values())) / seconds:.2f} |",
    ]


def hop_rows(title: str, hops: list[Hops]) -> list[str]:
    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.0f} / {percentile(values, 99):.0f} ms"

    to_dispatcher = [h.dispatcher for h in hops]
    dispatched = [h.logged - h.function - h.dispatcher for h in hops]
    return [
        f"| {title}: upload -> classification log | {cell([h.logged for h in hops])} |",
        f"| ... upload -> dispatcher got the event (RGW, its queue, source) "
        f"| {cell(to_dispatcher)} |",
        f"| ... dispatcher -> function, until it starts its download | {cell(dispatched)} |",
        f"| ... function: download + classify (its latency_ms) "
        f"| {cell([h.function for h in hops])} |",
        f"| ... the PUT itself (start -> answer) | {cell([h.put_done for h in hops])} |",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amqp", action="store_true", help="RGW -> RabbitMQ -> AMQP source")
    parser.add_argument("--objects", type=int, default=150, help="uploads for the throughput run")
    parser.add_argument(
        "--upload-threads", type=int, default=UPLOAD_THREADS, help="uploaders, throughput run"
    )
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
        s3 = s3_client(endpoints.rgw)
        bench = Bench(demo, stack, s3)
        first_event = bench.warm_up()
        time.sleep(2)  # idle
        pids = all_pids(stack)
        rss = {name: rss_kib(pid) for name, pid in pids.items()}
        raw_before = raw_predict_throughput(
            endpoints.grpc, bench.photos[0].jpeg, pids["modelserver"]
        )
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        client_before, machine_before = time.process_time(), machine_cpu_seconds()
        pipeline, puts, seconds = bench.throughput(args.objects, args.upload_threads)
        machine = machine_cpu_seconds() - machine_before
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        cpu[CLIENT] = time.process_time() - client_before
        raw_after = raw_predict_throughput(
            endpoints.grpc, bench.photos[0].jpeg, pids["modelserver"]
        )
        raw = raw_before + raw_after
        latencies = bench.latencies(args.latency_objects, args.rate)
        sync_latencies = None
        if not args.amqp:
            wire_sync_bucket(s3, endpoints.rgw, endpoints)
            sync_latencies = bench.latencies(args.latency_objects, args.rate, SYNC_BUCKET)
        processes = process_table(stack, rss, cpu, args.objects, raw)
        budget = budget_table(cpu, args.objects, seconds, machine, raw)

    transport = "AMQP (RabbitMQ)" if args.amqp else "HTTP push, persistent topic"
    logged = [h.logged for h in latencies]
    print(
        f"## Pipeline on this machine ({transport}; resnet = {RESNET_MODEL}; raw model: "
        f"{CONCURRENCY} gRPC client threads; pipeline: {args.upload_threads} uploaders)\n"
    )
    print("| figure | value | goal |")
    print("|---|---:|---:|")
    print(
        "| raw model throughput (gRPC Predict, ready tensor; right before / after the pipeline) "
        f"| {raw.per_second:.1f} /s ({raw_before.per_second:.0f} / {raw_after.per_second:.0f}) | |"
    )
    print(f"| pipeline throughput ({args.objects} uploads -> results) | {pipeline:.1f} /s | |")
    print(f"| pipeline / raw model | {pipeline / raw.per_second:.2f} | >= 0.8 |")
    print(f"| RGW PUTs/s during that run (upload phase alone) | {puts:.1f} /s | |")
    print(
        f"| upload -> classification log, p50 ({args.latency_objects} at {args.rate:g}/s) "
        f"| {statistics.median(logged):.0f} ms | <= 50 ms |"
    )
    print(f"| upload -> classification log, p99 | {percentile(logged, 99):.0f} ms | <= 200 ms |")
    print(f"| cores on this machine | {os.cpu_count()} | |")
    print(f"| whole stack start (RGW included) | {stack_seconds:.1f} s | |")
    print(f"| first event after start (queue adoption included) | {first_event:.1f} s | |")
    print()
    print("\n".join(budget))
    print()
    print(f"| latency per hop ({args.latency_objects} uploads at {args.rate:g}/s) | p50 / p99 |")
    print("|---|---:|")
    print("\n".join(hop_rows(transport, latencies)))
    if sync_latencies is not None:
        print("\n".join(hop_rows("HTTP push, topic not persistent", sync_latencies)))
    print()
    print("\n".join(processes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
