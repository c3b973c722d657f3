"""Receiver: cold start and RSS, and events/s on one core next to a bare uvicorn echo app.

    .venv/bin/python benchmarks/bench_receiver.py

Needs `wrk` (Debian package) as the load generator. The server runs pinned to core 0 and wrk to
core 1, so the ratio compares the two apps on the same single core with the same client.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.support import (
    DEVNULL,
    REPO_ROOT,
    cold_start,
    free_port,
    machine,
    python,
    served,
    table,
)

GOAL_COLD_S, GOAL_RSS_MB, GOAL_RATIO = 0.35, 70, 0.5
BODY = (REPO_ROOT / "examples" / "rgw-put-event.json").read_text()


def wrk_script(directory: Path) -> Path:
    script = directory / "post.lua"
    headers = {
        "ce-specversion": "1.0",
        "ce-source": "ceph:s3.default.nbkt-false",
        "ce-type": "com.amazonaws.s3.ObjectCreated:Put",
        "content-type": "application/json",
    }
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(json.dumps(json.loads(BODY)))}"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    # A fresh id per request, so the receiver's redelivery filter never short-cuts the work.
    lines += [
        "counter = 0",
        "request = function()",
        "  counter = counter + 1",
        '  wrk.headers["ce-id"] = "bench-" .. counter .. "-" .. math.random(1, 1e9)',
        "  return wrk.format()",
        "end",
    ]
    script.write_text("\n".join(lines) + "\n")
    return script


def requests_per_second(argv: list[str], port: int, env: dict[str, str], script: Path) -> float:
    url = f"http://127.0.0.1:{port}/"
    ready = f"{url}health/readiness" if "functions.receiver" in argv else url
    # Output to /dev/null, as before: the figure is the app's, not the log file's.
    with served(f"wrk-target-{port}", ["taskset", "-c", "0", *argv], env, ready, log=DEVNULL):
        subprocess.run(
            ["taskset", "-c", "1", "wrk", "-t1", "-c16", "-d2s", "-s", str(script), url],
            check=True,
            capture_output=True,
        )  # warm-up
        out = subprocess.run(
            ["taskset", "-c", "1", "wrk", "-t1", "-c16", "-d8s", "-s", str(script), url],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{argv}: {non2xx.group(1)} requests failed:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def main() -> int:
    if not shutil.which("wrk"):
        sys.stderr.write("wrk not found: apt-get install wrk\n")
        return 1
    port = free_port()
    env = {"PORT": str(port), "LOG_LEVEL": "INFO"}
    receiver = [python(), "-m", "functions.receiver"]
    cold, rss = cold_start(receiver, env, f"http://127.0.0.1:{port}/health/readiness", runs=10)
    with tempfile.TemporaryDirectory() as tmp:
        script = wrk_script(Path(tmp))
        # The receiver logs two JSON lines per event to stdout; a real deployment ships them.
        log_env = {**env, "PORT": str(port)}
        receiver_rps = requests_per_second(receiver, port, log_env, script)
        echo_port = free_port()
        echo = [
            python(),
            "-m",
            "uvicorn",
            "localknative.collector:bare_sink",
            "--port",
            str(echo_port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        echo_rps = requests_per_second(echo, echo_port, {}, script)
    ratio = receiver_rps / echo_rps
    print(f"Receiver benchmark ({machine()})\n")
    print(
        table(
            ["figure", "measured", "goal"],
            [
                [
                    "cold start, spawn to readiness 200 (median of 10)",
                    f"{cold:.3f} s",
                    f"<= {GOAL_COLD_S} s",
                ],
                ["RSS when ready", f"{rss:.1f} MB", f"<= {GOAL_RSS_MB} MB"],
                ["receiver events/s, one core", f"{receiver_rps:.0f}", ""],
                [
                    "bare uvicorn echo app req/s, same core, same client",
                    f"{echo_rps:.0f}",
                    "(ceiling)",
                ],
                ["receiver / ceiling", f"{ratio:.2f}", f">= {GOAL_RATIO}"],
            ],
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
