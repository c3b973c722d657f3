"""The raw model run and the CPU accounting of `bench_pipeline`: Predict calls per second with
nothing around the model server, the CPU each process spent, and the tables that set the two
side by side (where the CPU goes per object, and the throughput ceiling it allows).
"""

from __future__ import annotations

import io
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from PIL import Image
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from common.tfserving import pixels_tensor
from localknative.demo import RESNET_MODEL
from testkit.stack import Stack

CONCURRENCY = 4
RAW_SECONDS = 6.0  # twice: right before and right after the pipeline run
CLIENT = "S3 / gRPC client (this benchmark)"
# Processes after the Broker: the collectors that play it and the dead-letter sink, and the
# results service behind Trigger `results`. Not part of the CPU goal, which is the pipeline's.
BEHIND_THE_BROKER = ("results", "dead-letters", "results-service")


def is_goal_process(name: str) -> bool:
    """Source, dispatcher, functions, model server: what the CPU goal counts."""
    return name != CLIENT and not name.endswith("(RGW)") and name not in BEHIND_THE_BROKER


GOAL_OWN_CPU_RATIO = 2.0


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
    # The signature the demo's resnet function calls (knative/base/classifiers.yaml).
    request.model_spec.signature_name = "serving_uint8"
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


def budget_table(
    cpu: dict[str, float], objects: int, seconds: float, machine: float, raw: RawRun
) -> list[str]:
    """What the CPU per object allows on this machine's cores, next to what was measured."""
    cores = os.cpu_count() or 1
    per_object = sum(cpu.values()) / objects
    per_call = (raw.server_cpu + raw.client_cpu) / raw.calls
    ceiling = cores / per_object
    model_share = cpu.get("modelserver", 0.0) / sum(cpu.values())
    ours = sum(v for k, v in cpu.items() if is_goal_process(k)) / objects
    behind = sum(cpu.get(k, 0.0) for k in BEHIND_THE_BROKER) / objects
    server_per_call = raw.server_cpu / raw.calls
    return [
        "| CPU budget | value |",
        "|---|---:|",
        f"| cores | {cores} |",
        f"| CPU per object, all processes (pipeline) | {per_object * 1000:.1f} ms |",
        f"| of which the model server | {model_share:.0%} |",
        f"| CPU per Predict, server + client (raw run) | {per_call * 1000:.1f} ms |",
        f"| CPU per object, this project's processes (source, dispatcher, functions, model "
        f"server; RGW, the load client, the local Broker and the results service apart) "
        f"| {ours * 1000:.1f} ms |",
        f"| the same / model server CPU per Predict in the raw run ({server_per_call * 1000:.1f} "
        f"ms); goal <= {GOAL_OWN_CPU_RATIO:g} | {ours / server_per_call:.2f} |",
        f"| CPU per object behind the Broker (its local stand-in and the results service) "
        f"| {behind * 1000:.1f} ms |",
        f"| pipeline / raw model from CPU alone (= CPU per Predict / CPU per object; "
        f"what the ratio is when both runs use the cores fully) | {per_call / per_object:.2f} |",
        f"| pipeline ceiling = cores / CPU per object | {ceiling:.1f} /s |",
        f"| cores busy with this stack during the pipeline run | "
        f"{sum(cpu.values()) / seconds:.2f} |",
        f"| cores busy with other work on the machine: raw runs / pipeline run | "
        f"{raw.other_load:.2f} / {(machine - sum(cpu.values())) / seconds:.2f} |",
    ]
