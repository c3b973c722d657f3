"""The local Channel stand-in, with real processes: recorders and collectors as subscribers.

The topology is written per test in the manifests' own shape (same kinds and names as
knative/base), with a 70/30 split so that honouring the percents differs from an even split.
"""

from __future__ import annotations

import base64
import itertools
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from localknative.collector import read_entries
from localknative.routing import WeightedTarget, choose_target
from testkit.sink import Recorder, start_recorder
from tests.fixtures.processes import ServiceProcess, free_port, python_argv, running

RETRY = 3
BACKOFF = 0.1  # exponential: 0.1 s, 0.2 s, 0.4 s (Knative counts attempts from 0)
SPLIT = {"resnet": 70, "vision": 30}


def manifests(directory: Path) -> Path:
    delivery = {
        "retry": RETRY,
        "backoffPolicy": "exponential",
        "backoffDelay": f"PT{BACKOFF}S",
        "deadLetterSink": {
            "ref": {
                "apiVersion": "serving.knative.dev/v1",
                "kind": "Service",
                "name": "dead-letters",
            }
        },
    }

    def ref(kind: str, name: str) -> dict[str, str]:
        return {"apiVersion": "x/v1", "kind": kind, "name": name}

    docs: list[dict[str, Any]] = [
        {"kind": "Channel", "metadata": {"name": "rgw-events"}, "spec": {}},
        {
            "kind": "Route",
            "metadata": {"name": "classifiers"},
            "spec": {"traffic": [{"configurationName": k, "percent": v} for k, v in SPLIT.items()]},
        },
        {
            "kind": "Subscription",
            "metadata": {"name": "receiver"},
            "spec": {
                "channel": ref("Channel", "rgw-events"),
                "subscriber": {"ref": ref("Service", "receiver")},
                "delivery": delivery,
            },
        },
        {
            "kind": "Subscription",
            "metadata": {"name": "classifiers"},
            "spec": {
                "channel": ref("Channel", "rgw-events"),
                "subscriber": {"ref": ref("Route", "classifiers")},
                "reply": {"ref": ref("Broker", "default")},
                "delivery": delivery,
            },
        },
    ]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "topology.yaml").write_text(yaml.safe_dump_all(docs))
    return directory


@dataclass
class Collector:
    process: ServiceProcess
    url: str
    out: Path

    def entries(self) -> list[dict[str, Any]]:
        return read_entries(self.out)


@dataclass
class Stack:
    url: str
    receiver: Recorder
    resnet: Recorder
    vision: Recorder
    dead_letters: Collector
    broker: Collector
    record: Path
    dispatcher: ServiceProcess

    def target(self, name: str) -> Recorder:
        return self.resnet if name == "resnet" else self.vision

    def post(self, event_id: str, subject: str = "photo.jpg") -> httpx.Response:
        headers = {
            "ce-id": event_id,
            "ce-specversion": "1.0",
            "ce-type": "com.amazonaws.s3.ObjectCreated:Put",
            "ce-source": "/test",
            "ce-subject": subject,
            "content-type": "application/json",
        }
        return httpx.post(self.url, headers=headers, content=b'{"k": 1}', timeout=60)

    def outcomes(self) -> list[dict[str, Any]]:
        return read_entries(self.record)


def start_collector(stack: ExitStack, log_dir: Path, role: str, reply: str | None) -> Collector:
    port = free_port()
    out = log_dir / f"{role}-{port}.jsonl"
    argv = python_argv(
        "-m", "localknative.collector", "--port", str(port), "--out", str(out), "--role", role
    )
    if reply:
        argv += ["--reply-type", reply]
    url = f"http://127.0.0.1:{port}"
    process = stack.enter_context(
        running(f"{role}-{port}", argv, log_dir, ready_url=f"{url}/healthz", timeout=20)
    )
    return Collector(process, url, out)


def event_id_for(target: str) -> str:
    """An event id that the split sends to `target` (resnet or vision)."""
    targets = [WeightedTarget(f"Configuration/{k}", v, "") for k, v in SPLIT.items()]
    while True:
        event_id = str(uuid.uuid4())
        if choose_target(targets, event_id).name == f"Configuration/{target}":
            return event_id


def start_dispatcher(
    exits: ExitStack,
    tmp_path: Path,
    log_dir: Path,
    binds: dict[str, str],
    record: Path | None = None,
) -> tuple[str, ServiceProcess]:
    """The dispatcher on the test topology, every object bound; its URL and process."""
    port = free_port()
    args = ["--knative-dir", str(manifests(tmp_path / "knative")), "--port", str(port)]
    if record is not None:
        args += ["--record", str(record)]
    for ref, bound in binds.items():
        args += ["--bind", f"{ref}={bound}"]
    argv = python_argv("-m", "localknative.dispatcher", *args)
    url = f"http://127.0.0.1:{port}"
    process = exits.enter_context(
        running(f"dispatcher-{port}", argv, log_dir, ready_url=f"{url}/healthz", timeout=20)
    )
    return url, process


@pytest.fixture
def stack(tmp_path: Path, log_dir: Path) -> Iterator[Stack]:
    with ExitStack() as exits:
        receiver = exits.enter_context(start_recorder(log_dir, "receiver"))
        resnet = exits.enter_context(start_recorder(log_dir, "resnet"))
        vision = exits.enter_context(start_recorder(log_dir, "vision"))
        dead_letters = start_collector(exits, log_dir, "dead-letters", None)
        broker = start_collector(exits, log_dir, "broker", None)
        record = tmp_path / "dispatch.jsonl"
        binds = {
            "Service/receiver": receiver.url(),
            "Configuration/resnet": resnet.url(),
            "Configuration/vision": vision.url(),
            "Service/dead-letters": dead_letters.url,
            "Broker/default": broker.url,
        }
        url, dispatcher = start_dispatcher(exits, tmp_path, log_dir, binds, record)
        yield Stack(url, receiver, resnet, vision, dead_letters, broker, record, dispatcher)


def test_every_subscription_gets_the_event_and_the_route_one_target(stack: Stack) -> None:
    event_id = event_id_for("vision")
    assert stack.post(event_id).status_code == 202
    [to_receiver] = stack.receiver.requests()
    [to_vision] = stack.vision.requests()
    assert stack.resnet.requests() == []
    for request in (to_receiver, to_vision):
        assert request.header("ce-id") == event_id
        assert request.header("ce-subject") == "photo.jpg"
        assert request.json() == {"k": 1}
    outcomes = {o["subscription"]: o for o in stack.outcomes()}
    assert outcomes["classifiers"]["target"] == "Configuration/vision"
    assert outcomes["receiver"]["outcome"] == outcomes["classifiers"]["outcome"] == "delivered"


def test_503_is_retried_with_exponential_backoff_until_it_succeeds(stack: Stack) -> None:
    event_id = event_id_for("resnet")
    stack.resnet.set_status(503)
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(stack.post, event_id)
        stack.resnet.wait_for(2)
        stack.resnet.set_status(200)
        assert answer.result(timeout=30).status_code == 202
    attempts = stack.resnet.requests()
    assert [r.status for r in attempts][:2] == [503, 503]
    assert attempts[-1].status == 200
    assert all(r.header("ce-id") == event_id for r in attempts)
    # The wait after n retries is BACKOFF * 2^n: at least 0.1 s, then at least 0.2 s, and it
    # grows (a fixed delay would fail the second check).
    gaps = [later.time - earlier.time for earlier, later in itertools.pairwise(attempts)]
    for n, gap in enumerate(gaps):
        assert gap >= BACKOFF * 2**n * 0.95, gaps
    [outcome] = [o for o in stack.outcomes() if o["subscription"] == "classifiers"]
    assert outcome["outcome"] == "delivered"
    assert outcome["attempts"] == len(attempts)
    assert stack.dead_letters.entries() == []


def test_400_goes_to_the_dead_letter_sink_without_retries(stack: Stack) -> None:
    event_id = event_id_for("vision")
    stack.vision.set_status(400)
    assert stack.post(event_id).status_code == 202
    assert len(stack.vision.requests()) == 1
    [parked] = stack.dead_letters.entries()
    attributes = parked["attributes"]
    assert attributes["id"] == event_id
    assert attributes["knativeerrorcode"] == "400"
    assert attributes["knativeerrordest"] == stack.vision.url("/").rstrip("/")
    assert parked["data"] == {"k": 1}
    [outcome] = [o for o in stack.outcomes() if o["subscription"] == "classifiers"]
    assert (outcome["outcome"], outcome["status"], outcome["attempts"]) == ("dead-lettered", 400, 1)
    # The receiver's copy is unaffected.
    assert len(stack.receiver.requests()) == 1


def test_retries_run_out_then_the_event_is_dead_lettered(stack: Stack) -> None:
    event_id = event_id_for("resnet")
    stack.resnet.set_status(500)
    assert stack.post(event_id).status_code == 202
    assert len(stack.resnet.requests()) == RETRY + 1
    [parked] = stack.dead_letters.entries()
    assert parked["attributes"]["knativeerrorcode"] == "500"


def test_a_subscriber_that_is_down_is_dead_lettered_with_the_error(stack: Stack) -> None:
    event_id = event_id_for("resnet")
    stack.resnet.process.stop()
    assert stack.post(event_id).status_code == 202
    [parked] = stack.dead_letters.entries()
    assert "knativeerrorcode" not in parked["attributes"]
    assert b"Connect" in base64.b64decode(parked["attributes"]["knativeerrordata"])


def test_source_gets_503_when_the_dead_letter_sink_is_down_too(stack: Stack) -> None:
    stack.vision.set_status(422)
    stack.dead_letters.process.stop()
    answer = stack.post(event_id_for("vision"))
    assert answer.status_code == 503
    assert answer.json()["subscriptions"] == ["classifiers"]


def test_invalid_cloudevent_is_refused_and_forwarded_nowhere(stack: Stack) -> None:
    answer = httpx.post(stack.url, content=b"{}", headers={"content-type": "application/json"})
    assert answer.status_code == 400
    assert stack.receiver.requests() == []
    assert stack.outcomes() == []


def test_traffic_split_follows_the_route_percents(stack: Stack) -> None:
    events = 200

    def post_one(_: int) -> int:
        return stack.post(str(uuid.uuid4())).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(post_one, range(events)))
    assert statuses == [202] * events
    counts = Counter(r.path for r in stack.resnet.requests()) + Counter(
        r.path for r in stack.vision.requests()
    )
    resnet, vision = len(stack.resnet.requests()), len(stack.vision.requests())
    assert resnet + vision == events, counts
    # 200 draws at p=0.7: sd ~6.5; +-26 is 4 sd.
    assert abs(resnet - 140) <= 26, (resnet, vision)
    assert len(stack.receiver.requests()) == events


def test_reply_is_forwarded_to_the_broker(tmp_path: Path, log_dir: Path) -> None:
    with ExitStack() as exits:
        replier = start_collector(exits, log_dir, "replier", "dev.rgwinference.test.reply")
        broker = start_collector(exits, log_dir, "broker", None)
        dead = start_collector(exits, log_dir, "dead", None)
        binds = {
            "Service/receiver": f"{dead.url}/receiver",
            "Configuration/resnet": replier.url,
            "Configuration/vision": replier.url,
            "Service/dead-letters": dead.url,
            "Broker/default": f"{broker.url}/broker",
        }
        url, _ = start_dispatcher(exits, tmp_path, log_dir, binds)
        event = {
            "specversion": "1.0",
            "id": "structured-1",
            "type": "com.amazonaws.s3.ObjectCreated:Put",
            "source": "/test",
            "subject": "cat.jpg",
            "datacontenttype": "application/json",
            "data": {"k": 2},
        }
        answer = httpx.post(
            url,
            content=json.dumps(event).encode(),
            headers={"content-type": "application/cloudevents+json"},
            timeout=30,
        )
        assert answer.status_code == 202
        [got] = replier.entries()
        assert got["attributes"]["id"] == "structured-1"
        assert got["data"] == {"k": 2}
        [reply] = broker.entries()
        assert reply["path"] == "/broker"
        assert reply["attributes"]["type"] == "dev.rgwinference.test.reply"
        assert reply["attributes"]["subject"] == "cat.jpg"
        assert reply["data"] == {"in_reply_to": "structured-1"}
        # The receiver subscription answers 202 without a body: nothing more at the broker.
        assert [e["path"] for e in dead.entries()] == ["/receiver"]
