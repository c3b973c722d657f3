"""The demo's stack, driven by a program: uploads, what the stack recorded per object, process
faults, direct CloudEvents, metrics and memory.

`LiveStack.build(stack)` starts what `make demo` starts (real RGW, model server, functions,
source, channel, Broker and dead-letter sink) on a `testkit.stack.Stack`; the fault scenarios
(`testkit.scenarios`) are written against it, and the reliability tests and `make soak` use it.
The accounting per object key is in `testkit.recordings`.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Literal

import httpx

from common.cloudevents_http import new_event, to_binary_headers
from localknative.demo import BUCKET, Demo, DemoOptions, Endpoints, s3_client
from localknative.topology import load_topology
from localknative.workloads import CLASSIFIER
from testkit.processes import StartError, free_port, http_ok
from testkit.recordings import KeyOutcome, Recordings, Upload, replayable
from testkit.registry import rss_kib
from testkit.rgw import RgwGateway
from testkit.stack import Stack

S3_EVENT_TYPE = "com.amazonaws.s3.ObjectCreated:Put"
CHANNEL = "rgw-events"  # the channel RGW's events enter (knative/base/channel.yaml)
AMQP_BUCKET = "photos-amqp"
AMQP_TOPIC = "photos-amqp"
AMQP_EXCHANGE = "rgw-reliability"
# Fault runs read objects up to this size (the load mix tops out near 5 MB) so that "over the
# size cap" costs a 9 MB upload rather than a 20 MB one.
MAX_OBJECT_BYTES = 8 * 1024 * 1024
_ATTRIBUTES = ("id", "source", "type", "specversion", "time", "datacontenttype", "subject")


class PeakRss:
    """Samples every process of the stack in the background; keeps the peak per name (KiB)."""

    def __init__(self, pids: Callable[[], Mapping[str, int]], every: float = 0.5) -> None:
        self._pids = pids
        self._every = every
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def start(self) -> PeakRss:
        self._thread.start()
        return self

    def sample(self) -> None:
        for name, pid in self._pids().items():
            rss = rss_kib(pid)
            if rss is not None:
                self.peak[name] = max(self.peak.get(name, 0), rss)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class LiveStack:
    def __init__(self, stack: Stack, demo: Demo, endpoints: Endpoints) -> None:
        self.stack = stack
        self.demo = demo
        self.endpoints = endpoints
        self.topology = load_topology(demo.options.knative_dir)
        # The functions whose Subscription replies (resnet and vision), as the manifests say.
        self.classifiers = tuple(sorted(n for n, r in endpoints.roles.items() if r == CLASSIFIER))
        self.s3 = s3_client(endpoints.rgw)
        self.http = httpx.Client(timeout=60.0)
        self.amqp_url: str | None = None
        self.rss = PeakRss(self.pids).start()

    @classmethod
    def build(
        cls,
        stack: Stack,
        out: IO[str] | None = None,
        model_cache_dir: Path | None = None,
        auth: bool = False,
    ) -> LiveStack:
        """The demo's stack (HTTP way in, persistent topic), with classifiers that tag objects
        and may read only the two buckets of the scenarios; `auth` turns sender authentication
        on end to end (DemoOptions.auth)."""
        options = DemoOptions(
            photos=0,
            model_cache_dir=model_cache_dir,
            auth=auth,
            classifier_env={
                "TAG_OBJECTS": "true",
                "ALLOWED_BUCKETS": f"{BUCKET},{AMQP_BUCKET}",
                "S3_MAX_OBJECT_BYTES": str(MAX_OBJECT_BYTES),
            },
        )
        demo = Demo(options, out or sys.stderr)
        return cls(stack, demo, demo.build(stack))

    def close(self) -> None:
        self.rss.stop()
        self.http.close()

    # --- where things are ---------------------------------------------------------------------

    def pids(self) -> dict[str, int]:
        return {
            **{p.name: p.pid for p in self.stack.processes if p.alive()},
            **self.stack.daemon_pids,
        }

    def url(self, name: str) -> str:
        return self.endpoints.functions[name]

    def dead_processes(self) -> list[str]:
        return [p.name for p in self.stack.processes if not p.alive()]

    # --- uploads -------------------------------------------------------------------------------

    def upload_many(
        self,
        objects: Iterable[tuple[str, bytes]],
        writers: int = 8,
        bucket: str = BUCKET,
        client: Any = None,
        pause: float = 0.0,
    ) -> list[Upload]:
        """PUT each (key, body) with `writers` concurrent clients; an upload RGW refused (or
        that never got an answer) is recorded, not raised."""
        s3 = client or self.s3

        def put(item: tuple[str, bytes]) -> Upload:
            key, body = item
            started = time.time()
            try:
                s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="image/jpeg")
            except Exception as exc:  # the client's view of an outage: any error is a refusal
                return Upload(key, bucket, started, False, f"{type(exc).__name__}: {exc}"[:200])
            finally:
                if pause:
                    time.sleep(pause)
            return Upload(key, bucket, started, True)

        with ThreadPoolExecutor(max_workers=writers) as pool:
            return list(pool.map(put, objects))

    def impatient_s3(self) -> Any:
        """An S3 client without retries and with short timeouts: sees an outage as it is."""
        retries = {"max_attempts": 1, "mode": "standard"}
        return _client(
            "s3", self.endpoints.rgw, retries=retries, connect_timeout=2, read_timeout=10
        )

    # --- what happened -------------------------------------------------------------------------

    def recordings(self) -> Recordings:
        e = self.endpoints
        return Recordings.read(e.results_log, e.dead_letters_log, e.record)

    def outcomes(self, keys: Iterable[str]) -> dict[str, KeyOutcome]:
        # The dead letters of functions that are no classifier (the receiver, compliance) are
        # not a classification's outcome.
        others = [url for name, url in self.endpoints.functions.items()
                  if self.endpoints.roles.get(name) != CLASSIFIER]  # fmt: skip
        return self.recordings().outcomes(keys, [self.url("receiver"), *others])

    def dispatches(
        self, keys: Iterable[str], subscription: str = "classifiers"
    ) -> list[dict[str, Any]]:
        return self.recordings().dispatches_of(keys, subscription)

    def wait_settled(
        self, keys: list[str], timeout: float, quiet: float = 1.0
    ) -> dict[str, KeyOutcome]:
        """Until every key is classified or dead-lettered (then `quiet` seconds more, so late
        duplicates show), or the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            outcomes = self.outcomes(keys)
            if all(o.classified or o.dead for o in outcomes.values()):
                time.sleep(quiet)
                return self.outcomes(keys)
            if time.monotonic() > deadline:
                return outcomes
            time.sleep(0.2)

    def replay_dead_letters(self, keys: Iterable[str]) -> int:
        """Send every classifier dead letter of these keys (still unclassified) through the
        channel again, without the knativeerror* marks: what an operator does after an outage.
        Returns how many were sent."""
        sent = 0
        for outcome in self.outcomes(keys).values():
            if outcome.classified or not outcome.dead:
                continue
            entry = outcome.dead[-1]
            self.post_event(self.endpoints.dispatcher, entry["data"], attributes=replayable(entry))
            sent += 1
        return sent

    # --- talking to the parts directly ------------------------------------------------------

    def post_event(
        self,
        url: str,
        data: Any,
        event_id: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        subject: str | None = None,
    ) -> httpx.Response:
        """A binary-mode CloudEvent POSTed to `url` (a function, the channel)."""
        if attributes is not None:
            event = new_event(
                str(attributes["type"]),
                str(attributes["source"]),
                data,
                subject=attributes.get("subject"),
                extensions={k: v for k, v in attributes.items() if k not in _ATTRIBUTES},
                event_id=str(attributes["id"]),
            )
        else:
            event = new_event(
                S3_EVENT_TYPE, "/reliability", data, subject=subject, event_id=event_id
            )
        headers, body = to_binary_headers(event)
        return self.http.post(url + "/", headers=headers, content=body)

    def counters(self, name: str) -> dict[str, float]:
        """The function's Prometheus counters (name{labels} -> value)."""
        text = self.http.get(self.url(name) + "/metrics").text
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                metric, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    values[metric] = float(value)
        return values

    def received(self, names: Iterable[str]) -> float:
        """CloudEvents these functions received so far, by their own counters."""
        return sum(self.counters(n).get("cloudevents_received_total", 0.0) for n in names)

    def rss_of(self, name: str) -> int:
        rss = rss_kib(self.stack.process(name).pid)
        if rss is None:
            raise StartError(f"{name} is not running")
        return rss

    # --- the second way in: RGW -> RabbitMQ -> the AMQP source -----------------------------

    def add_amqp_way(self) -> None:
        """RabbitMQ, bucket `photos-amqp` publishing to it, and `python -m source amqp`
        ("source-amqp") feeding the same channel."""
        from source.notification_specs import NotificationSpec, TopicSpec
        from source.notifications import setup

        self.amqp_url = self.stack.start_rabbitmq(free_port())
        self.s3.create_bucket(Bucket=AMQP_BUCKET)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = self.stack.python_module(
            "source", "amqp", "--url", self.amqp_url, "--queue", AMQP_TOPIC,
            "--exchange", AMQP_EXCHANGE, "--health-port", str(port),
            "--sink", self.endpoints.dispatcher, "--timeout", "120", "--deadline", "600",
            "--dead-letter-url", self.endpoints.dead_letters,
        )  # fmt: skip
        self.stack.start(
            "source-amqp",
            argv,
            lambda: http_ok(f"{url}/health/readiness"),
            env={"PORT": str(port), "HOST": "127.0.0.1", **self.endpoints.rgw.env()},
            url=url,
        )
        # After the consumer declared the exchange and queue: RGW drops events published to an
        # exchange that does not exist yet.
        topic = TopicSpec(AMQP_TOPIC, self.amqp_url, amqp_exchange=AMQP_EXCHANGE)
        sns = _client("sns", self.endpoints.rgw, retries={"max_attempts": 3})
        setup(self.s3, sns, AMQP_BUCKET, topic, NotificationSpec(AMQP_TOPIC, AMQP_TOPIC))


def _client(service: Literal["s3", "sns"], rgw: RgwGateway, **config: Any) -> Any:
    """A boto3 client (s3, sns) on the stack's RGW."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=rgw.endpoint,
        aws_access_key_id=rgw.access_key,
        aws_secret_access_key=rgw.secret_key,
        region_name=rgw.region,
        config=Config(s3={"addressing_style": "path"}, **config),
    )
