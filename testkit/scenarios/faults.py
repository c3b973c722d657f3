"""Load and process faults while events flow: a function SIGKILLed, the model server down,
radosgw restarted, the source SIGKILLed. Each returns a `ScenarioResult` (testkit.scenarios.tally).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from testkit.live_stack import AMQP_BUCKET, CHANNEL, LiveStack
from testkit.recordings import Upload
from testkit.samples import photo
from testkit.scenarios.tally import (
    SETTLE_TIMEOUT,
    SLOW_SETTLE_TIMEOUT,
    ScenarioResult,
    photos_under,
    replay_and_settle,
    settle,
)

# How long the model server stays down past `down` waiting for a delivery to meet the outage.
OUTAGE_OBSERVED_TIMEOUT = 30.0


def load(live: LiveStack, objects: int, writers: int = 8) -> ScenarioResult:
    """`objects` uploads (photos from 48 px thumbnails to ~5 MB) by `writers` clients at once."""
    started = time.time()
    uploads = live.upload_many(photos_under("load", objects), writers=writers)
    result = settle(live, "load", uploads, started, SETTLE_TIMEOUT + objects * 0.5)
    sizes = [len(photo(i).body) for i in range(objects)]
    result.notes.append(f"{writers} writers, {min(sizes)}..{max(sizes)} bytes")
    return result


def _during(
    live: LiveStack,
    prefix: str,
    objects: int,
    fault: Callable[[], None],
    client: object = None,
    bucket: str | None = None,
    rate: float = 20.0,
) -> tuple[list[Upload], float]:
    """Upload at about `rate` objects/s from one thread while `fault` runs after a third of them.

    A fault that fails (a restart that did not come back, say) fails the scenario: its exception
    is raised here once the uploads are done, never left as a thread's warning."""
    items = photos_under(prefix, objects)
    uploads: list[Upload] = []
    started = time.time()
    failures: list[BaseException] = []

    def run_fault() -> None:
        try:
            fault()
        except BaseException as exc:  # re-raised in the caller's thread below
            failures.append(exc)

    fault_thread = threading.Thread(target=run_fault, name=f"fault-{prefix}")
    for index, item in enumerate(items):
        if index == objects // 3:
            fault_thread.start()
        kwargs: dict[str, object] = {"writers": 1, "client": client}
        if bucket is not None:
            kwargs["bucket"] = bucket
        uploads += live.upload_many([item], **kwargs)  # type: ignore[arg-type]
        time.sleep(1.0 / rate)
    if fault_thread.is_alive() or fault_thread.ident is not None:
        fault_thread.join()
    if failures:
        raise RuntimeError(f"the fault of scenario {prefix!r} failed") from failures[0]
    return uploads, started


def function_killed(
    live: LiveStack, objects: int, victim: str = "resnet", down: float = 3.0
) -> ScenarioResult:
    """SIGKILL a classifier while events flow; start it again on the same port `down` s later."""

    def fault() -> None:
        live.stack.kill(victim)
        time.sleep(down)
        live.stack.restart(victim)

    uploads, started = _during(live, f"kill-{victim}", objects, fault)
    result = replay_and_settle(live, f"{victim} killed", uploads, started, SETTLE_TIMEOUT)
    result.notes.append(f"SIGKILL, restarted after {down:.0f} s")
    return result


@dataclass
class RetryAccount:
    """How hard the channel pushed on the functions while a dependency was down."""

    deliveries: int  # classifier deliveries recorded for the scenario's events
    attempts: int  # HTTP attempts they took in all
    max_attempts: int
    allowed_attempts: int  # retry + 1, from the manifests
    function_requests: int  # POSTs the classifiers received meanwhile (their own counters)


def retry_account(live: LiveStack, keys: list[str], received_before: float) -> RetryAccount:
    dispatched = live.dispatches(keys)
    retry = max(s.delivery.retry for s in live.topology.subscriptions_of(CHANNEL))
    return RetryAccount(
        deliveries=len(dispatched),
        attempts=sum(int(e["attempts"]) for e in dispatched),
        max_attempts=max((int(e["attempts"]) for e in dispatched), default=0),
        allowed_attempts=retry + 1,
        function_requests=int(live.received(live.classifiers) - received_before),
    )


def modelserver_down(
    live: LiveStack, objects: int, down: float = 10.0
) -> tuple[ScenarioResult, RetryAccount]:
    """Stop the model server for `down` s while events flow: functions answer 503, the channel
    retries with backoff, what outlasts the delivery policy is dead-lettered, then replayed."""
    before = live.received(live.classifiers)

    def unavailable_answers() -> float:
        counters = live.counters("resnet")
        return sum(v for k, v in counters.items() if k.startswith("cloudevents_failed_total{"))

    def fault() -> None:
        failed_before = unavailable_answers()
        live.stack.kill("modelserver")
        time.sleep(down)
        # The scenario is about deliveries that meet the outage. RGW's persistent queue can hold
        # events back for seconds; if none has reached resnet yet, stay down until one has.
        deadline = time.monotonic() + OUTAGE_OBSERVED_TIMEOUT
        while unavailable_answers() <= failed_before and time.monotonic() < deadline:
            time.sleep(0.2)
        live.stack.restart("modelserver", timeout=300)

    uploads, started = _during(live, "modelserver-down", objects, fault, rate=4.0)
    keys = [u.key for u in uploads if u.acknowledged]
    live.wait_settled(keys, SETTLE_TIMEOUT)
    account = retry_account(live, keys, before)
    result = replay_and_settle(live, "model server down", uploads, started, SETTLE_TIMEOUT)
    result.notes.append(
        f"down {down:.0f} s; attempts max {account.max_attempts}/{account.allowed_attempts}, "
        f"{account.function_requests} requests for {account.deliveries} deliveries"
    )
    return result, account


def rgw_restart(live: LiveStack, objects: int, down: float = 3.0) -> ScenarioResult:
    """Stop radosgw cleanly while a client uploads, start it again `down` s later: uploads in
    the gap fail for the client; every acknowledged one must still be classified."""

    def fault() -> None:
        live.stack.stop_radosgw()
        time.sleep(down)
        live.stack.start_stopped_rgw_daemons()

    client = live.impatient_s3()
    uploads, started = _during(live, "rgw-restart", objects, fault, client=client, rate=10.0)
    result = replay_and_settle(live, "RGW restart", uploads, started, SLOW_SETTLE_TIMEOUT)
    result.notes.append(f"radosgw SIGTERM, {result.refused} uploads refused meanwhile")
    return result


def source_killed(
    live: LiveStack, objects: int, way: str = "http", down: float = 3.0
) -> ScenarioResult:
    """SIGKILL the source (HTTP adapter, or the AMQP consumer) while events flow, restart it."""
    name = "source" if way == "http" else "source-amqp"
    bucket = None if way == "http" else AMQP_BUCKET

    def fault() -> None:
        live.stack.kill(name)
        time.sleep(down)
        live.stack.restart(name)

    uploads, started = _during(live, f"kill-source-{way}", objects, fault, bucket=bucket)
    result = replay_and_settle(
        live, f"source killed ({way})", uploads, started, SLOW_SETTLE_TIMEOUT
    )
    result.notes.append(f"SIGKILL, restarted after {down:.0f} s")
    return result
