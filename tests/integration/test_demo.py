"""`make demo` end to end: the demo runs as a subprocess, exactly as a user starts it, and its
machine-readable summary is checked against what was uploaded. Then nothing may be left over:
every process it reports is gone and its temporary directory removed."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from localknative.collector import read_entries
from localknative.demo import BUCKET, Demo, DemoOptions, s3_client
from localknative.photos import CATALOGUE, load_photos
from localknative.report import summary_table
from testkit.stack import Stack, pid_alive
from tests.fixtures.processes import REPO_ROOT

pytestmark = pytest.mark.rgw

PHOTOS = 4
DEMO_DEADLINE = 420.0  # includes starting RGW and, on a fresh machine, converting the models
MODEL_CACHE_DIR = REPO_ROOT / ".cache" / "models"  # shared with the modelserver fixture
MODEL_OF = {"resnet": "mobilenet_v2", "vision": "google-cloud-vision"}
# Upload -> result at the Broker: about 0.1-0.3 s here; 24 s was RGW adopting the topic.
MAX_END_TO_END_S = 5.0
# What ImageNet classifiers call these photos; both models agree on them in their top 5.
EXPECTED_IN_TOP5 = {
    "chelsea.jpg": {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "lynx"},
    "coffee.jpg": {"espresso", "cup", "coffee mug", "eggnog", "consomme"},
}


def demo_argv(command: str, summary: Path, log_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "cli", command,
        "--summary-json", str(summary),
        "--model-cache-dir", str(MODEL_CACHE_DIR),
        "--keep-logs", str(log_dir),
        *extra,
    ]  # fmt: skip


def assert_nothing_left(summary: dict[str, Any]) -> None:
    assert summary["pids"], "the demo reported no processes"
    # RGW's purge and SIGKILLs are waited for, but give the kernel a moment to reap.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pid_alive(p) for p in summary["pids"].values()):
        time.sleep(0.1)
    left = {name: pid for name, pid in summary["pids"].items() if pid_alive(pid)}
    assert left == {}, f"still running after the demo: {left}"
    assert not Path(summary["work_dir"]).exists(), f"{summary['work_dir']} was not removed"


@pytest.mark.timeout(DEMO_DEADLINE + 60)
def test_demo_classifies_every_photo_by_the_function_the_split_chose(
    tmp_path: Path, log_dir: Path
) -> None:
    summary_path = tmp_path / "summary.json"
    done = subprocess.run(
        demo_argv("demo", summary_path, log_dir / "demo", "--photos", str(PHOTOS)),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=DEMO_DEADLINE,
        check=False,
    )
    assert done.returncode == 0, f"demo failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert "| object | function | top label | score |" in done.stdout
    summary = json.loads(summary_path.read_text())
    assert summary["ok"] is True
    uploaded = [key for key, _, _ in CATALOGUE[:PHOTOS]]
    objects = {row["key"]: row for row in summary["objects"]}
    assert sorted(objects) == sorted(uploaded)  # not the probe
    assert "RGW adopts a new persistent topic at its next queue scan" in done.stdout
    for key, row in objects.items():
        assert row["status"] == "classified", row
        assert row["receiver_seen"], f"{key}: the receiver's subscription never got it"
        assert row["routed_to"] in MODEL_OF, row
        assert row["function"] == row["routed_to"], row
        assert row["model"] == MODEL_OF[row["function"]], row
        assert row["labels"] and 0 < row["score"] <= 1, row
        assert row["top_label"] == row["labels"][0]["name"]
        assert row["dead_letter"] is None
        # The pipeline's latency: the demo waited for RGW to adopt its topic (the probe) first.
        assert row["end_to_end_s"] < MAX_END_TO_END_S, row
        assert key in done.stdout
        if key in EXPECTED_IN_TOP5:
            names = {label["name"] for label in row["labels"]}
            assert names & EXPECTED_IN_TOP5[key], f"{key} ({row['function']}): {names}"
    assert_nothing_left(summary)


@pytest.mark.timeout(DEMO_DEADLINE + 60)
def test_up_stops_everything_on_ctrl_c(tmp_path: Path, log_dir: Path) -> None:
    summary_path = tmp_path / "summary.json"
    process = subprocess.Popen(
        demo_argv("up", summary_path, log_dir / "up"),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + DEMO_DEADLINE
        for line in process.stdout:
            seen.append(line)
            if "Ctrl-C stops everything" in line or time.monotonic() > deadline:
                break
        output = "".join(seen)
        assert "aws --endpoint-url http://127.0.0.1:" in output, output
        assert "curl -i http://127.0.0.1:" in output
        os.kill(process.pid, signal.SIGINT)
        rest, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, "".join(seen) + rest
    assert "everything was shut down and removed" in rest
    assert_nothing_left(json.loads(summary_path.read_text()))


@pytest.mark.timeout(DEMO_DEADLINE + 60)
def test_sigterm_while_starting_leaves_nothing_behind(tmp_path: Path, log_dir: Path) -> None:
    summary_path = tmp_path / "summary.json"
    process = subprocess.Popen(
        demo_argv("demo", summary_path, log_dir / "sigterm", "--photos", "1"),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("model server:"):  # RGW and the model server are up
                break
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, rest
    summary = json.loads(summary_path.read_text())
    assert summary["ok"] is False and summary["message"] == "interrupted"
    assert "modelserver" in summary["pids"]
    assert_nothing_left(summary)


# Keys the CloudEvents HTTP binding percent-encodes in ce-subject (space, %, non-ASCII) or that a
# form decoder would misread (+); the last one is not an image, so a classifier refuses it.
ODD_KEYS = ["my dog.jpg", "a+b.jpg", "100% cat.jpg", "café/chat ü 猫.jpg"]
REFUSED_KEY = "notes 50%+ ü.txt"


@pytest.mark.timeout(DEMO_DEADLINE + 60)
@pytest.mark.parametrize(
    "amqp", [False, pytest.param(True, marks=pytest.mark.rabbitmq)], ids=["http", "amqp"]
)
def test_odd_keys_are_one_row_each_as_uploaded(log_dir: Path, amqp: bool) -> None:
    """RGW -> source (either way) -> channel -> functions, keys as a user would type them."""
    out = io.StringIO()
    options = DemoOptions(photos=0, timeout=180, amqp=amqp, model_cache_dir=MODEL_CACHE_DIR)
    demo = Demo(options, out)
    [photo] = load_photos(1)
    with Stack() as stack:
        try:
            endpoints = demo.build(stack)
            s3 = s3_client(endpoints.rgw)
            for key, body in [*((k, photo.jpeg) for k in ODD_KEYS), (REFUSED_KEY, b"not a photo")]:
                demo.tracker.expect(key, time.time())
                s3.put_object(Bucket=BUCKET, Key=key, Body=body)
                demo.keys.append(key)
            arrived = demo.watch(stack)
            dead_letters = read_entries(endpoints.dead_letters_log)
        finally:
            shutil.copytree(stack.log_dir, log_dir / f"odd-keys-{amqp}", dirs_exist_ok=True)
    printed = out.getvalue()
    assert arrived, printed
    keys = [*ODD_KEYS, REFUSED_KEY]
    assert sorted(demo.tracker.rows) == sorted(keys), printed  # no second, encoded row
    for key in ODD_KEYS:
        row = demo.tracker.rows[key]
        assert row.status == "classified" and row.function == row.routed_to, row
    refused = demo.tracker.rows[REFUSED_KEY]
    assert refused.status == "dead-lettered", refused
    assert {entry["attributes"]["subject"] for entry in dead_letters} == {REFUSED_KEY}
    for key in keys:
        assert f"channel   {key:<14} delivered to receiver" in printed, printed
    table = summary_table([demo.tracker.rows[key] for key in keys])
    assert all(f"| {key} |" in table for key in keys), table
    assert "%20" not in printed + table and "%25" not in printed + table
