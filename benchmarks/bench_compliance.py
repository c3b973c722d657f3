"""Compliance function figures: cold start, RSS, and per-image latency through the real model
server (open_nsfw, a ResNet-50); prints Markdown tables.

1. Cold start: spawn -> `GET /health/readiness` 200 (which needs open_nsfw's metadata over gRPC),
   median of `--runs`, and RSS once ready; next to the receiver (the runtime alone) and resnet
   (the same client stack on MobileNetV2). Runs alternate so load from elsewhere hits all alike.
2. Per image, a ~1 MP JPEG in the real RGW, a CloudEvent POSTed to the running function until
   its verdict reply, each event naming a fresh object (so each is a first event: tags read,
   download, preprocess, Predict, record written):
   - not flagged (the defaults: threshold 0.8, no result record): the verdict only;
   - flagged (COMPLIANCE_THRESHOLD=0, QUARANTINE_BUCKET, COMPLIANCE_TAG_WAIT=0: no classifier
     here): plus the tags merged in place, the quarantine HEAD and the server-side copy;
   - with RESULT_RECORDS=true, a duplicate event of an object already judged: one
     GetObjectTagging, no Predict;
   next to a direct Predict of the same request (the model's own time).

Run: .venv/bin/python -m benchmarks.bench_compliance [--runs 5] [--images 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from benchmarks.support import alternating_cold_starts, log_dir, machine, table
from common.tfserving import TFServingClient, TFServingSettings
from testkit.records import binary_event
from testkit.rgw import RgwGateway, start_rgw
from testkit.samples import photo_jpeg
from testkit.services import running_function, running_modelserver

MODEL = "open_nsfw"
MAX_PIXELS = 40_000_000
ONE_MEGAPIXEL_SCALE = (1_000_000 / (451 * 300)) ** 0.5  # chelsea is 451 x 300


@contextmanager
def modelserver(workdir: Path) -> Iterator[str]:
    config = workdir / "models.json"
    models = [{"name": m, "model_kind": m} for m in ("mobilenet_v2", MODEL)]
    config.write_text(json.dumps({"model_config_list": {"config": models}}))
    with running_modelserver(log_dir(), config) as server:
        yield server.grpc_target


def cold_start_rows(target: str, rgw_env: dict[str, str], runs: int) -> list[list[object]]:
    variants = {
        "receiver (the runtime alone)": ("receiver", {}),
        "resnet (mobilenet_v2, uint8 pixels)": (
            "resnet",
            {"MODEL_NAME": "mobilenet_v2", "MODEL_SIGNATURE": "serving_uint8"},
        ),
        "compliance (open_nsfw, float32 pixels)": ("compliance", {}),
    }
    env = {**rgw_env, "LOG_LEVEL": "WARNING", "RESNET_SERVING_ENDPOINT": target}
    medians = alternating_cold_starts(variants, env, runs)
    return [[name, f"{medians[name][0]:.3f} s", f"{medians[name][1]:.0f} MB"] for name in variants]


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def latency_rows(rgw: RgwGateway, target: str, images: int) -> list[list[object]]:
    s3 = rgw.s3_client()
    bucket, quarantine = rgw.unique_name("bench-compliance"), rgw.unique_name("bench-quarantine")
    s3.create_bucket(Bucket=bucket)
    s3.create_bucket(Bucket=quarantine)
    photo = photo_jpeg("chelsea", scale=ONE_MEGAPIXEL_SCALE, quality=90)

    client = TFServingClient(TFServingSettings(target, MODEL), MAX_PIXELS)
    client.connect()
    client.fetch_signature()
    request = client.request_for(photo)
    direct = []
    for index in range(images + 2):
        started = time.perf_counter()
        client.predict(request)
        if index >= 2:  # two warm-ups
            direct.append(time.perf_counter() - started)
    rows: list[list[object]] = [["direct Predict (the model alone)", f"{median_ms(direct):.1f}"]]

    cases: dict[str, dict[str, str]] = {
        "not flagged: verdict + reply": {},
        "RESULT_RECORDS=true, first event (+ record written)": {"RESULT_RECORDS": "true"},
        "flagged: + tags in place + quarantine copy": {
            "COMPLIANCE_THRESHOLD": "0",
            "QUARANTINE_BUCKET": quarantine,
            "COMPLIANCE_TAG_WAIT": "0",  # no classifier writes a record here
        },
    }
    for name, extra in cases.items():
        env = {**rgw.env(), "LOG_LEVEL": "WARNING", "RESNET_SERVING_ENDPOINT": target, **extra}
        prefix = rgw.unique_name("k")
        keys = [f"{prefix}/{n}.jpg" for n in range(images + 2)]
        for key in keys:
            s3.put_object(Bucket=bucket, Key=key, Body=photo, ContentType="image/jpeg")
        with (
            running_function(log_dir(), "compliance", env) as function,
            httpx.Client(timeout=60) as http,
        ):

            def post(key: str) -> float:
                headers, body = binary_event(bucket, key, size=len(photo))
                started = time.perf_counter()
                http.post(function.url, headers=headers, content=body).raise_for_status()
                return time.perf_counter() - started

            first = [post(key) for key in keys][2:]  # two warm-ups
            rows.append([name, f"{median_ms(first):.1f}"])
            if extra.get("RESULT_RECORDS") == "true":
                again = [post(key) for key in keys][2:]
                rows.append(
                    ["RESULT_RECORDS=true, duplicate (from the record)", f"{median_ms(again):.1f}"]
                )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="cold starts per variant")
    parser.add_argument("--images", type=int, default=20, help="samples per latency figure")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        cluster, rgw = start_rgw(workdir / "rgw")
        with cluster, modelserver(workdir) as target:
            cold_rows = cold_start_rows(target, rgw.env(), args.runs)
            latency = latency_rows(rgw, target, args.images)

    print(f"Compliance function benchmark ({machine()})\n")
    print(table(["cold start", f"median of {args.runs}", "RSS when ready"], cold_rows))
    print(
        f"\nPer image, ~1 MP JPEG (chelsea), CloudEvent -> verdict reply, median of {args.images}"
        " (ms)\n"
    )
    print(table(["what", "ms"], latency))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
