"""The README's curl commands, run exactly as printed against a receiver process."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.fixtures.processes import REPO_ROOT, free_port, python_argv, running

README = (REPO_ROOT / "README.md").read_text()


def example(name: str) -> str:
    match = re.search(rf"<!-- curl-example:{name} -->\n```\w+\n(.*?)```", README, re.S)
    assert match, f"README has no curl-example:{name} block"
    return match.group(1)


def logged_objects(log_text: str, event_id: str) -> list[dict[str, object]]:
    lines = [json.loads(x) for x in log_text.splitlines() if x.startswith("{")]
    return [x for x in lines if x.get("event_id") == event_id and "key" in x]


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_curl_examples_work_as_printed(mode: str, log_dir: Path) -> None:
    port = free_port()
    command = example(mode)
    assert "localhost:8080" in command
    expected = json.loads(example("log"))
    with running(
        f"readme-receiver-{mode}",
        python_argv("-m", "functions.receiver"),
        log_dir,
        {"PORT": str(port)},
        ready_url=f"http://127.0.0.1:{port}/health/readiness",
    ) as proc:
        result = subprocess.run(
            ["bash", "-c", command.replace("localhost:8080", f"localhost:{port}")],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0].strip() == "HTTP/1.1 200 OK"
        event_id = "curl-binary-1" if mode == "binary" else "curl-structured-1"
        deadline = time.monotonic() + 5
        while not (lines := logged_objects(proc.log_text(), event_id)):
            assert time.monotonic() < deadline, proc.log_tail()
            time.sleep(0.05)
    [line] = lines
    for field, value in expected.items():
        if field != "event_id":
            assert line[field] == value, field
    if mode == "binary":
        assert line["event_id"] == expected["event_id"]
