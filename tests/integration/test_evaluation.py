"""The evaluation for real: two classifiers' replies for real photos in a real RGW bucket,
joined by the evaluation function over real HTTP; and `demo --compare`'s agreement report on
the demo's photos, through the whole local stack (RGW, the model server and its Vision
stand-in, the dispatcher playing the evaluation overlay). No result is written down here: every
figure is checked against the rows it is made of, and the rows against the labels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.result_records import Label
from functions.evaluation.matching import agree, overlap
from localknative.photos import CATALOGUE
from testkit.services import running_function
from tests.fixtures.processes import REPO_ROOT
from tests.fixtures.resnet import FunctionFactory, photo_jpeg
from tests.fixtures.rgw import RgwGateway
from tests.functions.test_evaluation import metric

pytestmark = pytest.mark.rgw

DEMO_DEADLINE = 420.0
PHOTOS = 4
MODEL_CACHE_DIR = REPO_ROOT / ".cache" / "models"


def labels_of(items: list[dict[str, Any]]) -> list[Label]:
    return [
        Label(item["name"], item["score"] if item["score"] is not None else 0.0, item["class_id"])
        for item in items
    ]


def test_two_local_models_replies_are_joined_over_http(
    rgw: RgwGateway, bucket: str, resnet_function: FunctionFactory, log_dir: Path
) -> None:
    """mobilenet_v2 and efficientnet_lite0 (the same ImageNet-1k ids) on the same photos."""
    models = [resnet_function("mobilenet_v2"), resnet_function("efficientnet_lite0")]
    photos = {"cat.jpg": photo_jpeg("chelsea"), "cup.jpg": photo_jpeg("coffee")}
    s3 = rgw.s3_client()
    replies: dict[str, list[httpx.Response]] = {}
    for key, body in photos.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="image/jpeg")
        replies[key] = [f.post_object_event(bucket, key, size=len(body)) for f in models]
        assert [r.status_code for r in replies[key]] == [200, 200]
    with running_function(log_dir, "evaluation", {"LOG_LEVEL": "INFO"}) as evaluation:
        for answers in replies.values():
            for reply in reversed(answers):  # arrival order must not matter
                headers = {k: v for k, v in reply.headers.items() if k.startswith("ce-")}
                headers["content-type"] = reply.headers["content-type"]
                posted = httpx.post(evaluation.url, headers=headers, content=reply.content)
                assert posted.status_code == 200, posted.text
        report = httpx.get(f"{evaluation.url}/report", timeout=10).json()
        metrics = httpx.get(f"{evaluation.url}/metrics", timeout=10).text
    assert report["pairs"] == 2 and report["pending"] == 0
    rows = {row["key"]: row for row in report["comparisons"]}
    assert set(rows) == set(photos)
    for key, row in rows.items():
        mobilenet, effnet = (answer.json() for answer in replies[key])
        # Each side is the reply of its model, as that model's function sent it.
        assert row["first"]["model"] == effnet["model_id"]  # "efficientnet..." < "mobilenet..."
        assert row["second"]["model"] == mobilenet["model_id"]
        assert row["first"]["label"] == effnet["labels"][0]["name"]
        assert row["second"]["label"] == mobilenet["labels"][0]["name"]
        ids_a = {label["class_id"] for label in effnet["labels"][:5]}
        ids_b = {label["class_id"] for label in mobilenet["labels"][:5]}
        assert row["top_k_overlap"] == len(ids_a & ids_b)
        same = effnet["labels"][0]["class_id"] == mobilenet["labels"][0]["class_id"]
        assert row["top1_agree"] is same
    pair = {
        "first": rows["cat.jpg"]["first"]["model"],
        "second": rows["cat.jpg"]["second"]["model"],
    }
    assert metric(metrics, "evaluation_pairs_total", **pair) == 2
    assert metric(metrics, "evaluation_top1_agree_total", **pair) == report["top1_agree"]
    by_overlap = sum(
        metric(metrics, "evaluation_top5_overlap_total", **pair, overlap=str(k)) * k
        for k in range(6)
    )
    assert by_overlap / 2 == report["mean_top_k_overlap"]
    assert metric(metrics, "evaluation_top5_shared_labels_total", **pair) == by_overlap


@pytest.mark.timeout(DEMO_DEADLINE + 60)
def test_demo_compare_prints_the_agreement_of_the_demos_photos(
    tmp_path: Path, log_dir: Path
) -> None:
    summary_path = tmp_path / "summary.json"
    argv = [
        sys.executable, "-m", "cli", "demo", "--compare", "--photos", str(PHOTOS),
        "--summary-json", str(summary_path), "--model-cache-dir", str(MODEL_CACHE_DIR),
        "--keep-logs", str(log_dir / "demo-compare"),
    ]  # fmt: skip
    done = subprocess.run(
        argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=DEMO_DEADLINE, check=False
    )
    assert done.returncode == 0, f"demo failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    summary = json.loads(summary_path.read_text())
    agreement = summary["agreement"]
    rows = agreement["rows"]
    uploaded = [key for key, _, _ in CATALOGUE[:PHOTOS]]
    assert [row["key"] for row in rows] == uploaded  # every photo, in upload order, no probe

    # Each row is what the two classifiers said, and its verdicts follow from their labels.
    for row in rows:
        assert row["first"]["function"] == "resnet" and row["second"]["function"] == "vision"
        first, second = labels_of(row["first"]["top"]), labels_of(row["second"]["top"])
        assert first and second
        assert row["first"]["label"] == first[0].name
        assert row["second"]["label"] == second[0].name
        assert row["top1_agree"] is agree(first[0], second[0])
        assert row["overlap"] == overlap(first, second)
        assert 0 <= row["overlap"] <= 5
    # The totals are those of the rows.
    assert agreement["pairs"] == len(rows)
    assert agreement["top1_agree"] == sum(1 for row in rows if row["top1_agree"])
    mean = sum(row["overlap"] for row in rows) / len(rows)
    assert agreement["mean_top5_overlap"] == pytest.approx(mean)
    # The function counted at least these pairs (the topic probe is one more), lost none.
    assert agreement["evaluation"]["pairs"] >= len(rows)
    assert agreement["evaluation"]["pending"] == 0 and agreement["evaluation"]["unpaired"] == {}

    # The printed table: a header, one line per row with the same labels and verdicts, totals.
    lines = done.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("| object | resnet ("))
    assert "| vision (google-cloud-vision) |" in lines[at] and "top-5 overlap" in lines[at]
    printed = [line.strip("|").split("|") for line in lines[at + 2 : at + 2 + len(rows)]]
    for cells, row in zip(printed, rows, strict=True):
        key, label_a, _, label_b, _, verdict, shared = (cell.strip() for cell in cells)
        assert (key, label_a, label_b) == (
            row["key"],
            row["first"]["label"],
            row["second"]["label"],
        )
        assert verdict == ("agree" if row["top1_agree"] else "differ")
        assert int(shared) == row["overlap"]
    agreed = agreement["top1_agree"]
    totals = f"top-1 agreement: {agreed}/{len(rows)} ({100 * agreed / len(rows):.0f}%); "
    assert f"{totals}mean top-5 overlap: {mean:.2f} of 5" in done.stdout


AUTH_PHOTOS = 2


@pytest.mark.timeout(DEMO_DEADLINE + 60)
def test_demo_compare_with_auth_delivers_the_results_with_tokens(
    tmp_path: Path, log_dir: Path
) -> None:
    """`demo --compare --auth`: the evaluation function verifies tokens (AUTH_* for the overlay's
    Trigger), the played Trigger sends them; a refused delivery would fail the demo."""
    summary_path = tmp_path / "summary.json"
    kept = log_dir / "demo-compare-auth"
    argv = [
        sys.executable, "-m", "cli", "demo", "--compare", "--auth",
        "--photos", str(AUTH_PHOTOS), "--summary-json", str(summary_path),
        "--model-cache-dir", str(MODEL_CACHE_DIR), "--keep-logs", str(kept),
    ]  # fmt: skip
    done = subprocess.run(
        argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=DEMO_DEADLINE, check=False
    )
    assert done.returncode == 0, f"demo failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert "sender authentication: local OIDC issuer" in done.stdout
    agreement = json.loads(summary_path.read_text())["agreement"]
    uploaded = [key for key, _, _ in CATALOGUE[:AUTH_PHOTOS]]
    assert [row["key"] for row in agreement["rows"]] == uploaded
    assert agreement["evaluation"]["pairs"] >= len(uploaded)
    assert agreement["evaluation"]["pending"] == 0
    # No function refused a sender (tests/integration/test_compare_auth.py shows the same
    # deliveries refused without their tokens).
    logs = "".join(p.read_text(errors="replace") for p in kept.rglob("*.log"))
    assert "sender refused" not in logs
    # And the evaluation function did verify (it fetched the issuer's keys at start).
    assert "issuer keys fetched" in (kept / "evaluation.log").read_text()
