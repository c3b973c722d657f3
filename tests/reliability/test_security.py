"""Security checks on the running stack and the images' Dockerfiles (docs/security.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from testkit.listeners import listening_sockets
from testkit.live_stack import LiveStack
from tests.fixtures.processes import REPO_ROOT

DOCKERFILES = sorted(REPO_ROOT.glob("*/Dockerfile")) + sorted(
    REPO_ROOT.glob("functions/*/Dockerfile")
)


def test_secrets_never_reach_a_log_line(stack_intact: LiveStack) -> None:
    rgw = stack_intact.endpoints.rgw
    secrets = {"S3 secret": rgw.secret_key, "Vision key": stack_intact.endpoints.vision_key}
    assert all(len(s) >= 16 for s in secrets.values())
    logs = sorted(stack_intact.stack.log_dir.glob("*.log"))
    recordings = sorted(stack_intact.stack.work_dir.glob("*.jsonl"))
    assert len(logs) >= 9, logs
    leaks = [
        (path.name, what)
        for path in [*logs, *recordings]
        for what, secret in secrets.items()
        if secret in path.read_text(errors="replace")
    ]
    assert leaks == []


def test_every_listener_binds_loopback(stack_intact: LiveStack) -> None:
    listeners = listening_sockets(stack_intact.pids())
    names = {listener.process for listener in listeners}
    assert {"resnet", "vision", "receiver", "dispatcher", "source", "modelserver"} <= names
    exposed = [listener for listener in listeners if not listener.loopback]
    assert exposed == []


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_images_run_as_non_root(dockerfile: Path) -> None:
    users = re.findall(r"^\s*USER\s+(\S+)", dockerfile.read_text(), flags=re.MULTILINE)
    assert users, f"{dockerfile}: no USER instruction, the image runs as root"
    assert users[-1].split(":")[0] not in ("root", "0"), users


def test_source_refuses_push_bodies_over_its_cap(stack_intact: LiveStack) -> None:
    body = b'{"Records": [' + b" " * (5 * 1024 * 1024) + b"]}"
    answer = stack_intact.http.post(
        stack_intact.endpoints.source + "/",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 413


def test_channel_refuses_bodies_over_a_cap(stack_intact: LiveStack) -> None:
    body = b'{"Records": [' + b" " * (10 * 1024 * 1024) + b"]}"
    headers = {
        "ce-specversion": "1.0", "ce-id": "huge", "ce-source": "/x",
        "ce-type": "com.amazonaws.s3.ObjectCreated:Put", "content-type": "application/json",
    }  # fmt: skip
    answer = stack_intact.http.post(
        stack_intact.endpoints.dispatcher + "/", content=body, headers=headers
    )
    assert answer.status_code == 413
