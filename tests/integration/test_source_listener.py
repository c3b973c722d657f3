"""The HTTP way on a held socket (SOURCE_LISTEN_FD): a restart is a wait for RGW, not a refusal.

RGW 16.2 re-pushes a refused entry at once, thousands of times a second, and can hang the queue
after such a burst (docs/source.md). These tests push exactly as RGW does (one S3 record per
POST) while the source is dead, with and without a socket held by the supervisor.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from testkit.records import rgw_record
from testkit.sink import Recorder
from testkit.stack import loopback_listener
from tests.fixtures.source import start_source, wait_for_subjects


def push(port: int, key: str, timeout: float) -> httpx.Response:
    body = json.dumps({"Records": [rgw_record("bkt", key, "ObjectCreated:Put", 1)]})
    return httpx.post(
        f"http://127.0.0.1:{port}/",
        content=body,
        headers={"content-type": "application/json"},
        timeout=timeout,
    )


def test_a_push_during_a_restart_waits_and_is_delivered(log_dir: Path, recorder: Recorder) -> None:
    listener = loopback_listener()
    port = int(listener.getsockname()[1])
    try:
        source = start_source(log_dir, "http", recorder.url("/"), {}, [], None, listener)
        assert push(port, "before.jpg", 10).status_code == 200
        source.process.signal(signal.SIGKILL)
        source.process.popen.wait(10)  # type: ignore[union-attr]

        answers: list[httpx.Response | BaseException] = []

        def push_in_the_gap() -> None:
            try:
                answers.append(push(port, "during the gap.jpg", 30))
            except BaseException as exc:  # surfaced below
                answers.append(exc)

        pusher = threading.Thread(target=push_in_the_gap)
        pusher.start()
        time.sleep(1.0)
        assert answers == [], f"the push did not wait for the restart: {answers}"
        source = start_source(log_dir, "http", recorder.url("/"), {}, [], None, listener)
        try:
            pusher.join(30)
            [answer] = answers
            assert isinstance(answer, httpx.Response), answer
            assert answer.status_code == 200
            events = wait_for_subjects(recorder, {"before.jpg", "during the gap.jpg"}, timeout=30)
        finally:
            source.process.stop()
    finally:
        listener.close()
    assert {event.subject for event in events} == {"before.jpg", "during the gap.jpg"}


def test_without_a_held_socket_the_gap_refuses_pushes(log_dir: Path, recorder: Recorder) -> None:
    """What RGW sees without socket activation: the reason SOURCE_LISTEN_FD exists."""
    source = start_source(log_dir, "http", recorder.url("/"), {}, [], None)
    port = source.port
    assert push(port, "before.jpg", 10).status_code == 200
    source.process.signal(signal.SIGKILL)
    source.process.popen.wait(10)  # type: ignore[union-attr]
    started = time.monotonic()
    with pytest.raises(httpx.ConnectError):
        push(port, "refused.jpg", 10)
    assert time.monotonic() - started < 1.0  # refused at once: RGW would retry at once
