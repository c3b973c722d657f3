"""Model server figures, measured side by side in one run; prints Markdown tables.

1. Predict through the server over gRPC vs onnxruntime called in-process on the same inputs with
   the same session options (batch 1 and 8): p50 latency, throughput, and the ratio (goal <= 1.15x).
2. Conversion time (.pth -> ONNX, no torch; open_nsfw: wrapping its ONNX) per architecture, and a
   verified cache hit.
3. Server cold start: spawn -> `GET /v1/models/<name>` says AVAILABLE (warm and empty cache).

Run: .venv/bin/python benchmarks/bench_modelserver.py [--model mobilenet_v2] [--requests 60]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import numpy as np
import onnxruntime as ort
import skimage.data
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.support import log_dir  # noqa: E402
from common.tensors import from_numpy, to_numpy  # noqa: E402
from modelserver.convert import ARCHITECTURES, ensure_onnx  # noqa: E402
from modelserver.registry import pixels_from_array, session_options  # noqa: E402
from testkit.processes import Process, free_port  # noqa: E402
from testkit.services import modelserver_argv  # noqa: E402

PHOTOS = ["chelsea", "coffee", "astronaut", "rocket"]


def batch_of(size: int) -> np.ndarray:
    photos = [
        pixels_from_array(getattr(skimage.data, PHOTOS[i % len(PHOTOS)])()) for i in range(size)
    ]
    return np.stack(photos).astype(np.float32)


def timed(fn: object, repeats: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()  # type: ignore[operator]
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
    return samples


def start_server(cache_dir: Path, model: str, threads: int) -> tuple[Process, int, int, float]:
    """The server, once its model's status is AVAILABLE; seconds from spawn to then."""
    grpc_port, rest_port = free_port(), free_port()
    argv = modelserver_argv(
        grpc_port, rest_port,
        "--model_name", model, "--model_cache_dir", str(cache_dir),
        "--intra_op_threads", str(threads), "--log_level", "WARNING",
    )  # fmt: skip
    url = f"http://127.0.0.1:{rest_port}/v1/models/{model}"

    def available() -> bool:
        try:
            status = httpx.get(url, timeout=1).json()["model_version_status"]
            return bool(status[0]["state"] == "AVAILABLE")
        except (httpx.HTTPError, KeyError, ValueError):
            return False

    started = time.perf_counter()
    process = Process("modelserver", argv, log_dir() / f"modelserver-{rest_port}.log").start()
    try:
        process.wait_ready(available, timeout=600, interval=0.02)
    except BaseException:
        process.stop()
        raise
    return process, grpc_port, rest_port, time.perf_counter() - started


CLIENTS = 8


def _invoke(call: Callable[[], None]) -> None:
    call()


def concurrency_rows(
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
    session: ort.InferenceSession,
    model: str,
    total: int,
) -> list[str]:
    """Throughput with CLIENTS threads at once: shows requests are not serialized in the server."""
    images = batch_of(1)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["images"].CopyFrom(from_numpy(images))

    def direct() -> None:
        session.run(["probabilities", "classes"], {"images": images})

    def served() -> None:
        stub.Predict(request, timeout=60)

    rows = []
    for label, call in (("in-process, shared session", direct), ("server over gRPC", served)):
        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(_invoke, [call] * CLIENTS))  # warm-up
            start = time.perf_counter()
            list(pool.map(_invoke, [call] * total))
            wall = time.perf_counter() - start
        rows.append(f"| {label} | {wall:.2f} | {total / wall:.0f} |")
    return rows


def stop(process: Process) -> None:
    process.stop(grace=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2", choices=sorted(ARCHITECTURES))
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads, both sides")
    args = parser.parse_args()
    cache_dir = REPO_ROOT / ".cache" / "models"
    arch = ARCHITECTURES[args.model]

    # 1. server vs in-process
    onnx_bytes = ensure_onnx(arch, cache_dir).onnx_bytes
    session = ort.InferenceSession(onnx_bytes, sess_options=session_options(args.threads))
    proc, grpc_port, _, _ = start_server(cache_dir, args.model, args.threads)
    rows = []
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for batch_size in (1, 8):
                images = batch_of(batch_size)
                repeats = (
                    max(10, args.requests // batch_size * 2) if batch_size > 1 else args.requests
                )

                def direct(images: np.ndarray = images) -> None:
                    session.run(["probabilities", "classes"], {"images": images})

                def served(images: np.ndarray = images) -> None:
                    request = predict_pb2.PredictRequest()
                    request.model_spec.name = args.model
                    request.model_spec.signature_name = "serving_default"
                    request.inputs["images"].CopyFrom(from_numpy(images))
                    response = stub.Predict(request, timeout=30)
                    to_numpy(response.outputs["probabilities"])

                # alternate call by call so background load on the shared machine hits both alike
                for _ in range(5):
                    direct()
                    served()
                direct_samples, served_samples = [], []
                for _ in range(repeats):
                    direct_samples += timed(direct, 1, warmup=0)
                    served_samples += timed(served, 1, warmup=0)
                d50, s50 = statistics.median(direct_samples), statistics.median(served_samples)
                rows.append(
                    f"| {batch_size} | {d50 * 1000:.2f} | {s50 * 1000:.2f} | {s50 / d50:.2f}x | "
                    f"{batch_size / d50:.0f} | {batch_size / s50:.0f} |"
                )
            concurrent_rows = concurrency_rows(stub, session, args.model, args.requests)
    finally:
        stop(proc)
    print(
        f"### Predict: server over gRPC vs onnxruntime in-process ({args.model}, "
        f"{args.threads} intra-op threads, {args.requests} requests)\n"
    )
    print("| batch | in-process p50 ms | server p50 ms | ratio | in-process img/s | server img/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print(f"\n### {CLIENTS} concurrent clients, batch 1 ({args.requests} requests in all)\n")
    print("| caller | wall s | img/s |")
    print("| --- | --- | --- |")
    print("\n".join(concurrent_rows))

    # 2. conversion
    print("\n### Conversion (weights -> served ONNX with onnx.helper, no torch)\n")
    print("| architecture | convert s | verified cache hit s |")
    print("| --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for name, candidate in ARCHITECTURES.items():
            built = ensure_onnx(candidate, Path(tmp))
            hit = ensure_onnx(candidate, Path(tmp))
            assert built.built and not hit.built
            print(f"| {name} | {built.seconds:.2f} | {hit.seconds:.3f} |")

    # 3. cold start
    print("\n### Cold start: spawn -> model status AVAILABLE\n")
    print("| cache | seconds |")
    print("| --- | --- |")
    proc, _, _, warm = start_server(cache_dir, args.model, args.threads)
    stop(proc)
    with tempfile.TemporaryDirectory() as tmp:
        proc, _, _, cold = start_server(Path(tmp), args.model, args.threads)
        stop(proc)
    print(f"| warm ({args.model} cached) | {warm:.2f} |")
    print(f"| empty (converts {args.model} first) | {cold:.2f} |")


if __name__ == "__main__":
    main()
