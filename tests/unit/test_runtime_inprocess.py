"""The function runtime in-process: `create_app` driven through httpx's ASGI transport.

No server, no port, no subprocess: each test builds the app around a small recording `Function`,
runs its lifespan (start/stop) and sends requests straight into the ASGI callable, so status
codes, de-duplication, health, metrics and the lifecycle hooks are checked in milliseconds. The
process-level tests (tests/integration) still check the same app behind uvicorn.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from common.cloudevents_http import BaseCloudEvent, new_event
from common.env import ConfigError
from common.errors import EventError, NotAnImage, TransientError
from common.runtime import Delivery, Function, RuntimeSettings, create_app
from testkit.records import binary_event, binary_headers, records, s3_record

SETTINGS = RuntimeSettings(max_event_bytes=4096, max_records_per_event=2, dedup_window=100)


class Recorder(Function):
    """Answers each event as `outcome` says: a reply, None, or an exception to raise."""

    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.handled: list[Delivery] = []
        self.threads: list[threading.Thread] = []
        self.outcome: Callable[[Delivery], BaseCloudEvent | None] = lambda _: None
        self.is_alive = True
        self.is_ready = True

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")

    def alive(self) -> bool:
        return self.is_alive

    def ready(self) -> bool:
        return self.is_ready

    def handle(self, delivery: Delivery) -> BaseCloudEvent | None:
        self.handled.append(delivery)
        self.threads.append(threading.current_thread())
        return self.outcome(delivery)


def app_for(function: Function, settings: RuntimeSettings = SETTINGS) -> FastAPI:
    return create_app(lambda: function, settings)


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan entered (function.start) and left on exit (function.stop)."""
    async with app.router.lifespan_context(app), client_for(app) as client:
        yield client


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://function")


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


async def post_event(
    client: httpx.AsyncClient, key: str = "cat.jpg", event_id: str | None = None
) -> httpx.Response:
    headers, body = binary_event("photos", key, event_id=event_id)
    return await client.post("/", headers=headers, content=body)


def metric(text: str, name: str, labels: str = "") -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    pattern = re.escape(name) + (re.escape("{" + labels + "}") if labels else "") + r" (\S+)"
    found = re.search(r"^" + pattern + r"$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_an_event_reaches_handle_and_its_reply_is_a_binary_cloudevent() -> None:
    function = Recorder()
    function.outcome = lambda delivery: new_event(
        "dev.test.reply", "/functions/recorder", {"key": delivery.objects[0].key}
    )

    async def scenario() -> None:
        async with running(app_for(function)) as client:
            answer = await post_event(client, "dir/cat.jpg", event_id="e-1")
        assert answer.status_code == 200
        assert answer.headers["ce-type"] == "dev.test.reply"
        assert answer.headers["ce-source"] == "/functions/recorder"
        assert answer.json() == {"key": "dir/cat.jpg"}

    run(scenario)
    [delivery] = function.handled
    assert delivery.event_id == "e-1"
    assert delivery.event_type == "com.amazonaws.s3.ObjectCreated:Put"
    assert [(o.bucket, o.key, o.created) for o in delivery.objects] == [
        ("photos", "dir/cat.jpg", True)
    ]


def test_no_reply_is_an_empty_200() -> None:
    function = Recorder()

    async def scenario() -> None:
        async with running(app_for(function)) as client:
            answer = await post_event(client)
        assert (answer.status_code, answer.content) == (200, b"")
        assert "ce-type" not in answer.headers

    run(scenario)
    assert len(function.handled) == 1


def test_a_redelivered_event_is_dropped_by_source_and_id() -> None:
    function = Recorder()

    async def scenario() -> None:
        async with running(app_for(function)) as client:
            first = await post_event(client, event_id="same")
            again = await post_event(client, event_id="same")
            other = await post_event(client, event_id="other")
            metrics = (await client.get("/metrics")).text
        assert [first.status_code, again.status_code, other.status_code] == [200, 200, 200]
        assert metric(metrics, "cloudevents_duplicates_total") == 1
        assert metric(metrics, "cloudevents_received_total") == 3
        assert metric(metrics, "cloudevents_handled_total") == 2

    run(scenario)
    assert [d.event_id for d in function.handled] == ["same", "other"]


def test_dedup_window_zero_handles_every_redelivery() -> None:
    function = Recorder()
    settings = RuntimeSettings(dedup_window=0)

    async def scenario() -> None:
        async with running(app_for(function, settings)) as client:
            for _ in range(3):
                assert (await post_event(client, event_id="same")).status_code == 200

    run(scenario)
    assert len(function.handled) == 3


@pytest.mark.parametrize(
    ("headers", "body", "status", "reason"),
    [
        ({"content-type": "text/plain"}, b"hello", 400, "invalid-cloudevent"),
        (
            {k: v for k, v in binary_headers("t", "s", "e").items() if k != "ce-source"},
            b"{}",
            400,
            "invalid-cloudevent",
        ),
        (binary_headers("t", "s", "e"), b"{not json", 400, "invalid-cloudevent"),
        (binary_headers("t", "s", "e"), b'{"hello": "world"}', 422, "unsupported-payload"),
        (
            binary_headers("t", "s", "e"),
            json.dumps(records(*[s3_record("b", f"k{i}") for i in range(3)])).encode(),
            413,
            "too-large",
        ),
        (binary_headers("t", "s", "e"), b'{"pad": "' + b"x" * 5000 + b'"}', 413, "too-large"),
    ],
    ids=["not-a-cloudevent", "no-source", "bad-json", "not-s3", "too-many-records", "too-big"],
)
def test_bad_events_get_their_status_and_never_reach_handle(
    headers: dict[str, str], body: bytes, status: int, reason: str
) -> None:
    function = Recorder()

    async def scenario() -> None:
        async with running(app_for(function)) as client:
            answer = await client.post("/", headers=headers, content=body)
            metrics = (await client.get("/metrics")).text
        assert answer.status_code == status
        assert answer.json()["error"] == reason
        assert answer.json()["message"]
        labels = f'reason="{reason}",status="{status}"'
        assert metric(metrics, "cloudevents_failed_total", labels) == 1
        assert metric(metrics, "cloudevents_handled_total") == 0

    run(scenario)
    assert function.handled == []


@pytest.mark.parametrize(
    ("error", "status", "reason"),
    [
        (NotAnImage("not a photo"), 415, "not-an-image"),
        (TransientError("model server away"), 503, "unavailable"),
        (RuntimeError("bug"), 500, "internal"),
    ],
)
def test_handler_errors_become_statuses_and_failed_events_are_not_remembered(
    error: Exception, status: int, reason: str
) -> None:
    function = Recorder()

    def fail(_: Delivery) -> None:
        raise error

    function.outcome = fail

    async def scenario() -> None:
        async with running(app_for(function)) as client:
            first = await post_event(client, event_id="e-9")
            again = await post_event(client, event_id="e-9")
        assert first.status_code == again.status_code == status
        body = first.json()
        assert body["error"] == (reason if isinstance(error, EventError) else "internal")
        if isinstance(error, EventError):
            assert (body["message"], body["event_id"]) == (error.message, "e-9")
        else:
            assert "bug" not in body["message"]  # internals stay in the log

    run(scenario)
    # A failed event is retried by the channel, so its redelivery must be handled again.
    assert len(function.handled) == 2


def test_blocking_handlers_run_off_the_event_loop_and_others_on_it() -> None:
    blocking, inline = Recorder(), Recorder()
    inline.blocking = False
    loop_threads: list[threading.Thread] = []

    async def scenario() -> None:
        loop_threads.append(threading.current_thread())
        for function in (blocking, inline):
            async with running(app_for(function)) as client:
                assert (await post_event(client)).status_code == 200

    run(scenario)
    assert blocking.threads[0] is not loop_threads[0]
    assert inline.threads[0] is loop_threads[0]


def test_lifecycle_start_ready_stop() -> None:
    function = Recorder()
    app = app_for(function)

    async def scenario() -> None:
        async with client_for(app) as client:
            before = await client.get("/health/readiness")
            assert (before.status_code, before.json()) == (503, {"ready": False})
            assert (await client.get("/health/liveness")).status_code == 200
            async with app.router.lifespan_context(app):
                assert function.calls == ["start"]
                ready = await client.get("/health/readiness")
                assert (ready.status_code, ready.json()) == (200, {"ready": True})
                function.is_ready = False
                assert (await client.get("/health/readiness")).status_code == 503
                function.is_ready = True
                function.is_alive = False
                alive = await client.get("/health/liveness")
                assert (alive.status_code, alive.json()) == (503, {"alive": False})
            assert function.calls == ["start", "stop"]
            assert (await client.get("/health/readiness")).status_code == 503

    run(scenario)


def test_metrics_are_prometheus_text_with_a_latency_histogram() -> None:
    function = Recorder()

    async def scenario() -> None:
        async with running(app_for(function)) as client:
            await post_event(client)
            answer = await client.get("/metrics")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain")
        assert metric(answer.text, "cloudevent_handle_seconds_count") == 1
        assert "cloudevents_received_created" not in answer.text

    run(scenario)


def test_only_the_documented_routes_exist() -> None:
    function = Recorder()

    async def scenario() -> None:
        async with running(app_for(function)) as client:
            assert (await client.get("/")).status_code == 405
            assert (await client.get("/docs")).status_code == 404
            assert (await client.post("/metrics")).status_code == 405

    run(scenario)


def test_a_configuration_error_exits_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    def broken() -> Function:
        raise ConfigError("TOP_K: expected an integer from 1 to 100, got '0'")

    with pytest.raises(SystemExit) as exited:
        create_app(broken, SETTINGS)
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "configuration error: TOP_K: expected an integer from 1 to 100, got '0'\n"
    )


def test_runtime_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PORT", "not-a-port")
    with pytest.raises(SystemExit) as exited:
        create_app(Recorder)
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("configuration error: PORT: expected an integer")


class ResultReader(Recorder):
    """Takes one other CloudEvent type as it is, counts it, and serves the count."""

    event_types = frozenset({"dev.test.result"})

    def __init__(self) -> None:
        super().__init__()
        self.refreshed = 0

    def instrument(self, registry: object) -> None:
        from prometheus_client import CollectorRegistry, Counter

        assert isinstance(registry, CollectorRegistry)
        self.taken = Counter("test_results", "results taken", registry=registry)

    def refresh_metrics(self) -> None:
        self.refreshed += 1

    def routes(self) -> dict[str, Callable[[], object]]:
        return {"/report": lambda: {"handled": len(self.handled)}}

    def handle(self, delivery: Delivery) -> BaseCloudEvent | None:
        self.taken.inc()
        return super().handle(delivery)


def test_a_function_naming_event_types_gets_those_events_as_they_are() -> None:
    function = ResultReader()

    async def scenario() -> None:
        async with running(app_for(function)) as client:
            headers = binary_headers("dev.test.result", "/functions/resnet")
            taken = await client.post("/", headers=headers, content=b'{"labels": []}')
            notification = await post_event(client)  # an S3 notification is not its type
            report = (await client.get("/report")).json()
            metrics = (await client.get("/metrics")).text
        assert taken.status_code == 200
        assert notification.status_code == 422
        assert notification.json()["error"] == "unsupported-payload"
        assert "dev.test.result" in notification.json()["message"]
        assert [d.objects for d in function.handled] == [[]]
        assert function.handled[0].cloudevent.get_data() == {"labels": []}
        assert report == {"handled": 1}
        assert metric(metrics, "test_results_total") == 1
        assert function.refreshed == 1

    run(scenario)


def test_a_route_may_not_take_a_runtime_endpoint() -> None:
    class Greedy(Recorder):
        def routes(self) -> dict[str, Callable[[], object]]:
            return {"/metrics": dict}

    with pytest.raises(ValueError, match="/metrics is the runtime's own endpoint"):
        app_for(Greedy())
