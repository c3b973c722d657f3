"""The whole pipeline on one machine: throughput against the raw model, latency, cold start, RSS.

    .venv/bin/python -m benchmarks.bench_pipeline [--amqp] [--objects 150] [--rate 5]

One run starts the demo's stack (localknative.demo: real RGW, source, dispatcher, functions, model
server) with the manifests' Route rewritten to send 100 % to resnet (and, unless `--compliance`,
without the compliance Subscription), then measures back to back,
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
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from benchmarks import profiles
from benchmarks.pipeline_cpu import (
    CLIENT,
    CONCURRENCY,
    all_pids,
    budget_table,
    cpu_seconds,
    machine_cpu_seconds,
    process_table,
    raw_predict_throughput,
)
from localknative.collector import read_entries
from localknative.demo import BUCKET, RESNET_MODEL, Demo, DemoOptions, Endpoints, s3_client
from localknative.photos import load_photos
from localknative.topology import load_topology
from testkit.stack import REPO_ROOT, Rgw, Stack, rss_kib

UPLOAD_THREADS = 16
GOAL_RATIO = 0.6  # pipeline / raw model on this machine
WARMUP_TIMEOUT = 90.0
# A second bucket whose topic is not persistent: RGW pushes within the PUT, no queue.
SYNC_BUCKET = "photos-sync"
SYNC_TOPIC = "photos-sync"


def resnet_only_manifests(target: Path, compliance: bool = False) -> Path:
    """knative/base with the classifiers Route at resnet 100 / vision 0, and without the
    compliance Subscription unless `compliance` (its open_nsfw Predict is a ResNet-50, three
    times MobileNetV2's work: with it the run measures two models, not the classification
    pipeline against its raw model)."""
    # The whole folder: the kustomization's secretGenerator files come along.
    shutil.copytree(REPO_ROOT / "knative" / "base", target, dirs_exist_ok=True)
    for path in target.glob("*.yaml"):
        docs = list(yaml.safe_load_all(path.read_text()))
        if not compliance:
            docs = [doc for doc in docs if not _is_compliance_subscription(doc)]
        for doc in docs:
            if isinstance(doc, dict) and doc.get("kind") == "Route":
                for entry in doc["spec"]["traffic"]:
                    entry["percent"] = 100 if entry.get("configurationName") == "resnet" else 0
        (target / path.name).write_text(yaml.safe_dump_all(docs))
    load_topology(target)  # still a valid topology
    return target


def _is_compliance_subscription(doc: Any) -> bool:
    return (
        isinstance(doc, dict)
        and doc.get("kind") == "Subscription"
        and (doc.get("spec", {}).get("subscriber", {}).get("ref", {}).get("name") == "compliance")
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
    parser.add_argument(
        "--compliance",
        action="store_true",
        help="keep the compliance function subscribed (each object also gets an open_nsfw Predict)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample every Python process with py-spy during the throughput run; raw stacks "
        "go to DIR, a summary per process is printed",
    )
    args = parser.parse_args(argv)
    profiled: list[tuple[str, profiles.Profile]] = []

    with Stack() as stack:
        options = DemoOptions(
            photos=0,
            amqp=args.amqp,
            knative_dir=resnet_only_manifests(stack.work_dir / "knative", args.compliance),
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
        recordings = profiles.start(python_pids(pids), args.profile) if args.profile else []
        pipeline, puts, seconds = bench.throughput(args.objects, args.upload_threads)
        profiles.stop(recordings)
        profiled = [(r.name, profiles.read(r.output)) for r in recordings]
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
    print(f"| pipeline / raw model | {pipeline / raw.per_second:.2f} | >= {GOAL_RATIO} |")
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
    if profiled:
        print(f"\n## Where each process's CPU went (py-spy, throughput run; raw: {args.profile})\n")
        for name, profile in profiled:
            print("\n".join(profiles.table(name, profile)))
    return 0


def python_pids(pids: dict[str, int]) -> dict[str, int]:
    """The project's processes (RGW is C++: py-spy has nothing to say about it)."""
    return {name: pid for name, pid in pids.items() if not name.endswith("(RGW)")}


if __name__ == "__main__":
    sys.exit(main())
