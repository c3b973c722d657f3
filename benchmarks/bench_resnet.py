"""Resnet function figures, measured side by side in one run; prints Markdown tables.

1. Cold start: spawn -> `GET /health/readiness` 200 (which needs the model's metadata over gRPC),
   median of `--runs`, and RSS once ready; next to the receiver (the runtime alone). Runs
   alternate between the functions so load from elsewhere hits them alike.
2. Per-image work beyond the model's own time, for a ~1 MP JPEG, each piece timed in-process
   with the function's own code against the real RGW and the real model server:
   - RGW download (`ObjectStore.download`: HEAD + GET);
   - preprocessing (`preprocess`: JPEG draft decode, EXIF, resize, crop, float32 batch), or for
     the seed's DT_STRING model the validating decode;
   - request building (TensorProto + PredictRequest) and reading the answer (top-5);
   - gRPC: the same PredictRequest against a no-op PredictionService in this process (the
     transport and (de)serialization cost without any model), next to the real Predict time.
   And end to end: a CloudEvent POSTed to the running function until its reply, minus a direct
   Predict of the prebuilt request (the model's time), i.e. everything the function adds.

Run: .venv/bin/python -m benchmarks.bench_resnet [--runs 10] [--images 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from benchmarks.import_budget import budget_rows
from benchmarks.support import alternating_cold_starts, free_port, log_dir, machine, table
from common.events import ObjectEvent
from common.images import decode_image, preprocess
from common.s3 import ObjectStore, S3Settings
from common.scores import labels_from_outputs
from common.tfserving import (
    TFServingClient,
    TFServingSettings,
    pixels_tensor,
    tensor_to_array,
)
from testkit.records import binary_event
from testkit.rgw import RgwGateway, start_rgw
from testkit.samples import photo_jpeg
from testkit.services import running_function, running_modelserver, write_model_config

GOAL_COLD_S = 0.45
GOAL_RSS_MB = 100
GOAL_PER_IMAGE_MS = 4.0
MAX_PIXELS = 40_000_000
ONE_MEGAPIXEL_SCALE = (1_000_000 / (451 * 300)) ** 0.5  # chelsea is 451 x 300


# (model, signature): the float32 pixels, the uint8 pixels the local pipeline sends, the seed's
# JPEG bytes.
VARIANTS = (
    ("mobilenet_v2", "serving_default"),
    ("mobilenet_v2", "serving_uint8"),
    ("resnet", "serving_default"),
)


def describe(signature: Any) -> str:
    if signature.input_kind == "pixels":
        return f"{np.dtype(signature.pixel_dtype).name} pixels"
    return "image bytes"


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


@contextmanager
def modelserver(workdir: Path) -> Iterator[str]:
    with running_modelserver(log_dir(), write_model_config(workdir / "models.json")) as server:
        yield server.grpc_target


class NoOpService(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    """Answers every Predict with a fixed [1, 1000] probabilities tensor: gRPC cost, no model."""

    def __init__(self) -> None:
        self.answer = predict_pb2.PredictResponse()
        self.answer.model_spec.name = "noop"
        self.answer.outputs["probabilities"].CopyFrom(
            pixels_tensor(np.full((1, 1000), 0.001, np.float32))
        )

    def Predict(self, request: Any, context: Any) -> Any:
        return self.answer


@contextmanager
def noop_server() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(NoOpService(), server)
    target = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(target)
    server.start()
    try:
        yield target
    finally:
        server.stop(grace=None)


def cold_start_rows(target: str, rgw_env: dict[str, str], runs: int) -> list[list[object]]:
    variants = {
        "receiver": ("receiver", {}),
        "resnet (mobilenet_v2, uint8 pixels)": (
            "resnet",
            {"MODEL_NAME": "mobilenet_v2", "MODEL_SIGNATURE": "serving_uint8"},
        ),
        "resnet (resnet, image bytes)": ("resnet", {"MODEL_NAME": "resnet"}),
    }
    env = {**rgw_env, "LOG_LEVEL": "WARNING", "RESNET_SERVING_ENDPOINT": target}
    medians = alternating_cold_starts(variants, env, runs)
    rows: list[list[object]] = []
    for name in variants:
        goal = "reference" if name == "receiver" else f"<= {GOAL_COLD_S} s, <= {GOAL_RSS_MB} MB"
        rows.append(
            [
                name,
                f"{medians[name][0]:.3f} s",
                f"{medians[name][1]:.0f} MB",
                goal,
            ]
        )
    return rows


def per_image_rows(
    rgw: RgwGateway, target: str, images: int
) -> tuple[list[list[object]], list[list[object]]]:
    s3 = rgw.s3_client()
    bucket = rgw.unique_name("bench-resnet")
    s3.create_bucket(Bucket=bucket)
    photo = photo_jpeg("chelsea", scale=ONE_MEGAPIXEL_SCALE, quality=90)
    key = "chelsea-1mp.jpg"
    s3.put_object(Bucket=bucket, Key=key, Body=photo, ContentType="image/jpeg")
    store = ObjectStore(S3Settings.from_env(rgw.env()))
    obj = ObjectEvent(bucket, key, "ObjectCreated:Put", "bench")
    size = decode_image(photo, MAX_PIXELS).size

    pieces: list[list[object]] = []
    end_to_end: list[list[object]] = []
    with noop_server() as noop_target:
        for model, signature_name in VARIANTS:
            client = TFServingClient(TFServingSettings(target, model, signature_name), MAX_PIXELS)
            client.connect()
            signature = client.fetch_signature()
            noop = TFServingClient(TFServingSettings(noop_target, "noop"), MAX_PIXELS)
            request = client.request_for(photo)
            response = client.predict(request)

            def download() -> None:
                store.download(obj)

            def prepare(signature: Any = signature) -> None:
                if signature.input_kind == "pixels":
                    preprocess(photo, 224, 224, signature.pixel_dtype, MAX_PIXELS)
                else:
                    decode_image(photo, MAX_PIXELS, min_size=(256, 256))

            def build_and_read(client: TFServingClient = client, response: Any = response) -> None:
                # request_for includes preprocessing; time the proto parts on their own.
                if client.signature and client.signature.input_kind == "pixels":
                    batch = np.zeros((1, 224, 224, 3), client.signature.pixel_dtype)
                    built = predict_pb2.PredictRequest()
                    built.inputs["images"].CopyFrom(pixels_tensor(batch))
                outputs = {n: tensor_to_array(p) for n, p in response.outputs.items()}
                labels_from_outputs(outputs, 5)

            def grpc_noop(noop: TFServingClient = noop, request: Any = request) -> None:
                noop.predict(request)

            def model_predict(client: TFServingClient = client, request: Any = request) -> None:
                client.predict(request)

            steps = {
                "download": download,
                "prepare": prepare,
                "build": build_and_read,
                "grpc": grpc_noop,
                "predict": model_predict,
            }
            for step in steps.values():
                step()
            samples: dict[str, list[float]] = {name: [] for name in steps}
            for _ in range(images):
                for name, step in steps.items():
                    samples[name].append(timed(step))
            ms = {name: median_ms(values) for name, values in samples.items()}
            total = ms["download"] + ms["prepare"] + ms["build"] + ms["grpc"]
            what = "preprocess" if signature.input_kind == "pixels" else "validating decode"
            pieces.append(
                [
                    f"{model} ({signature_name}: {describe(signature)})",
                    f"{ms['download']:.2f}",
                    f"{ms['prepare']:.2f} ({what})",
                    f"{ms['build']:.2f}",
                    f"{ms['grpc']:.2f}",
                    f"**{total:.2f}**",
                    f"{ms['predict']:.1f}",
                ]
            )
            end_to_end.append(
                event_row(rgw, target, (model, signature_name), bucket, key, photo, request, images)
            )
    print(f"Photo: chelsea scaled to {size[0]}x{size[1]} ({len(photo) / 1024:.0f} KiB JPEG)\n")
    return pieces, end_to_end


def event_row(
    rgw: RgwGateway,
    target: str,
    variant: tuple[str, str],
    bucket: str,
    key: str,
    photo: bytes,
    request: predict_pb2.PredictRequest,
    images: int,
) -> list[object]:
    """CloudEvent -> reply through the running function vs a direct Predict (model time)."""
    model, signature_name = variant
    size = len(photo)
    env = {
        **rgw.env(),
        "LOG_LEVEL": "WARNING",
        "RESNET_SERVING_ENDPOINT": target,
        "MODEL_NAME": model,
        "MODEL_SIGNATURE": signature_name,
        # Every event the same object: with records on, all but the first would be answered
        # from the record (bench_exactly_once measures that); here each one is classified.
        "RESULT_RECORDS": "false",
    }
    client = TFServingClient(TFServingSettings(target, model, signature_name), MAX_PIXELS)
    client.connect()
    with (
        running_function(
            log_dir(), "resnet", env, name=f"resnet-{model}-{signature_name}"
        ) as function,
        httpx.Client(timeout=60) as http,
    ):
        url = function.url

        def event() -> None:
            headers, body = binary_event(bucket, key, size=size)
            http.post(url, headers=headers, content=body).raise_for_status()

        def direct() -> None:
            client.predict(request)

        for warm in (event, direct, event, direct):
            warm()
        event_s, direct_s = [], []
        for _ in range(images):
            event_s.append(timed(event))
            direct_s.append(timed(direct))
    overhead = median_ms(event_s) - median_ms(direct_s)
    return [
        f"{model} ({signature_name})",
        f"{median_ms(direct_s):.1f}",
        f"{median_ms(event_s):.1f}",
        f"**{overhead:.1f}**",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="cold starts per variant")
    parser.add_argument("--images", type=int, default=30, help="samples per per-image figure")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        cluster, rgw = start_rgw(workdir / "rgw")
        with cluster, modelserver(workdir) as target:
            cold_rows = cold_start_rows(target, rgw.env(), args.runs)
            imports = budget_rows("functions.resnet.app", {**os.environ, "LOG_LEVEL": "WARNING"})
            pieces, end_to_end = per_image_rows(rgw, target, args.images)

    print(f"Resnet function benchmark ({machine()})\n")
    print(table(["cold start", f"median of {args.runs}", "RSS when ready", "goal"], cold_rows))
    print(
        "\nWhere the cold start goes: importing `functions.resnet.app` (`python -X importtime`, "
        "self time per package, median of 3)\n"
    )
    print(table(["package", "import time"], imports))
    print(
        f"\nPer-image work beyond the model, ~1 MP JPEG, median of {args.images} (ms; "
        f"goal <= {GOAL_PER_IMAGE_MS} ms)\n"
    )
    print(
        table(
            [
                "model (input)",
                "RGW download",
                "decode / preprocess",
                "proto build + top-5",
                "gRPC round trip (no-op server)",
                "sum",
                "real Predict (model incl.)",
            ],
            pieces,
        )
    )
    print(f"\nEnd to end through the function, median of {args.images} (ms)\n")
    print(
        table(
            ["model", "direct Predict", "CloudEvent -> reply", "function adds"],
            end_to_end,
        )
    )
    print(
        "\n`function adds` = CloudEvent -> reply minus a direct Predict of the same request: "
        "HTTP and CloudEvents in and out, RGW download, preprocessing, gRPC, logging."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
