"""RGW's retry storm, what the source does about it, and a new persistent topic's first event.

    .venv/bin/python -m benchmarks.bench_rgw_retry [--ceph host|18|both]

Runs on loopback with the test kit: a throwaway RGW (testkit.rgw), recording sinks
(`localknative.collector --requests`, whose status is switched through /_control/status) and the
HTTP-way source (testkit.services). One event per row; the outage window starts at the first
attempt that reaches the sink and lasts OUTAGE seconds, then the sink answers 200.

- RGW straight at the sink: the pushes in the window (each one answered 503), and their rate.
- RGW -> the source -> the sink, with the default DELIVERY_DEADLINE and with 1 s, and a 25 s
  outage: RGW's pushes (the source's `source_events_received_total`), the sink's attempts, and
  the delay from the first attempt to the delivering one.
- Adoption: a persistent topic made right after radosgw started; its first event's delay from
  just before the PUT to its arrival at the sink (RGW rescans its queue list every 30 s).

`--ceph 18` runs the daemons from the Debian 13 root that `scripts/ceph18-root.sh` builds (it
needs root); `host` the host's Ceph; `both` (the default) one after the other. Prints a Markdown
table, one column per Ceph version.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.support import REPO_ROOT, log_dir, machine, table
from source.notification_specs import NotificationSpec, TopicSpec
from source.notifications import setup
from testkit.rgw import RgwGateway, start_rgw
from testkit.services import SourceProcess, running_source
from testkit.sink import RecordedRequest, Recorder, start_recorder

SHORT_OUTAGE = 5.0
LONG_OUTAGE = 25.0
FIRST_PUSH_TIMEOUT = 45.0  # RGW adopts a persistent queue at its 30 s rescan
DELIVERY_TIMEOUT = 60.0
KEY = "retried-object"
RECEIVED = re.compile(r'^source_events_received_total\{way="http"\} ([0-9.e+]+)$', re.M)


@dataclass(frozen=True)
class Outage:
    """One event through an outage, as the sink and the source saw it."""

    attempts: list[RecordedRequest]  # every request that carried the event, oldest first
    pushes: int | None  # RGW's pushes to the source (None: RGW pushed to the sink itself)

    @property
    def delay(self) -> float:
        return self.attempts[-1].time - self.attempts[0].time

    @property
    def refused(self) -> list[RecordedRequest]:
        return [r for r in self.attempts if r.status != 200]


def carries(key: str) -> Callable[[RecordedRequest], bool]:
    return lambda request: f'"{key}"'.encode() in request.body


def delivered(key: str) -> Callable[[RecordedRequest], bool]:
    return lambda request: carries(key)(request) and request.status == 200


class Bench:
    """One RGW and its S3 and SNS clients."""

    def __init__(self, gateway: RgwGateway) -> None:
        self.gateway = gateway
        self.s3 = gateway.s3_client()
        self.sns = gateway.sns_client()

    def subscribe(self, endpoint: str, topic: str | None = None) -> str:
        """A new bucket whose uploads go to a persistent topic pushing to `endpoint` (a claimed
        pool topic unless `topic` names a new one); returns the bucket."""
        bucket = self.gateway.unique_name("retry")
        name = topic or self.gateway.claim_persistent_topic()
        self.s3.create_bucket(Bucket=bucket)
        spec = TopicSpec(name, endpoint, persistent=True)
        setup(self.s3, self.sns, bucket, spec, NotificationSpec(f"{name}-id", name))
        return bucket

    def first_event_delay(self, sink: Recorder) -> float:
        """Seconds from a PUT to its event at the sink, on a topic RGW has not adopted yet."""
        bucket = self.subscribe(sink.url("/new"), self.gateway.unique_name("fresh-persistent"))
        started = time.time()
        self.s3.put_object(Bucket=bucket, Key="first", Body=b"x")
        arrived = sink.wait_for(1, where=carries("first"), timeout=FIRST_PUSH_TIMEOUT)
        return arrived[0].time - started

    def outage(self, sink: Recorder, seconds: float, source: SourceProcess | None = None) -> Outage:
        """One upload while `sink` answers 503 for `seconds` from its first attempt."""
        endpoint = sink.url("/direct") if source is None else source.url("/rgw")
        bucket = self.subscribe(endpoint)
        # A first event, accepted, so the queue is adopted before the window opens.
        self.s3.put_object(Bucket=bucket, Key="warm-up", Body=b"x")
        sink.wait_for(1, where=carries("warm-up"), timeout=FIRST_PUSH_TIMEOUT)
        sink.set_status(503)
        pushed_before = 0 if source is None else received(source)
        self.s3.put_object(Bucket=bucket, Key=KEY, Body=b"x")
        first = sink.wait_for(1, where=carries(KEY), timeout=FIRST_PUSH_TIMEOUT)[0]
        time.sleep(max(0.0, first.time + seconds - time.time()))
        sink.set_status(200)
        sink.wait_for(1, where=delivered(KEY), timeout=DELIVERY_TIMEOUT)
        time.sleep(0.5)  # the source's answer to RGW's last push follows the sink's 200
        attempts = sink.requests(carries(KEY))
        if source is None:
            return Outage(attempts, None)
        return Outage(attempts, received(source) - pushed_before)


def received(source: SourceProcess) -> int:
    """Events the source has received from RGW so far (one per push of a one-record body)."""
    text = httpx.get(source.url("/metrics"), timeout=5.0).text
    match = RECEIVED.search(text)
    return 0 if match is None else round(float(match.group(1)))


def storm_cell(result: Outage) -> str:
    refused = result.refused
    span = refused[-1].time - refused[0].time if len(refused) > 1 else 0.0
    rate = f", ~{len(refused) / span:,.0f}/s" if span > 0 else ""
    return f"{len(refused):,} pushes in {span:.1f} s{rate}; delivered {result.delay:.1f} s after"


def source_cell(result: Outage) -> str:
    pushes = "?" if result.pushes is None else f"{result.pushes:,}"
    noun = "push" if result.pushes == 1 else "pushes"
    return f"{pushes} {noun}; {len(result.attempts)} sink attempts; {result.delay:.1f} s"


@contextlib.contextmanager
def ceph_from(which: str) -> Iterator[None]:
    """RGW_CEPH_ROOT for the block: the cached Debian 13 root for "18", unset for "host"."""
    saved = os.environ.pop("RGW_CEPH_ROOT", None)
    try:
        if which == "18":
            done = subprocess.run(
                ["bash", str(REPO_ROOT / "scripts" / "ceph18-root.sh"), "--cached"],
                capture_output=True, text=True, check=False, timeout=60,
            )  # fmt: skip
            if done.returncode != 0 or not done.stdout.strip():
                raise SystemExit(f"no Ceph 18 root ({done.stderr.strip()}); run make ceph18-root")
            os.environ["RGW_CEPH_ROOT"] = done.stdout.strip()
        yield
    finally:
        os.environ.pop("RGW_CEPH_ROOT", None)
        if saved is not None:
            os.environ["RGW_CEPH_ROOT"] = saved


def ceph_version(data_dir: Path) -> str:
    """The version rgw-up.sh recorded for the cluster it made."""
    for line in (data_dir / "ceph-release").read_text().splitlines():
        if line.startswith("CEPH_VERSION="):
            return line.removeprefix("CEPH_VERSION=")
    return "?"


def measure(which: str, workdir: Path) -> tuple[str, list[str]]:
    """The column of one Ceph: its version and one cell per row of ROWS."""
    logs = log_dir()
    with ceph_from(which):
        cluster, gateway = start_rgw(workdir / f"rgw-{which}")
    with cluster:
        gateway.create_persistent_topic_pool(4)
        bench = Bench(gateway)
        with start_recorder(logs, f"sink-new-{which}") as sink:
            adoption = bench.first_event_delay(sink)
        with start_recorder(logs, f"sink-direct-{which}") as sink:
            cells = [storm_cell(bench.outage(sink, SHORT_OUTAGE))]
        for deadline, seconds in ((None, SHORT_OUTAGE), ("1", SHORT_OUTAGE), (None, LONG_OUTAGE)):
            env = {} if deadline is None else {"DELIVERY_DEADLINE": deadline}
            label = f"{which}-{deadline or 'default'}-{seconds:.0f}"
            with (
                start_recorder(logs, f"sink-{label}") as sink,
                running_source(
                    logs, "http", sink.url("/events"), env, name=f"source-{label}"
                ) as src,
            ):
                cells.append(source_cell(bench.outage(sink, seconds, src)))
        cells.append(f"{adoption:.1f} s")
        return f"Ceph {ceph_version(cluster.data_dir)}", cells


ROWS = (
    f"RGW straight at an endpoint answering 503 for {SHORT_OUTAGE:.0f} s",
    f"the source, sink 503 for {SHORT_OUTAGE:.0f} s (`DELIVERY_DEADLINE` default, 10 s)",
    f"the source, sink 503 for {SHORT_OUTAGE:.0f} s, `DELIVERY_DEADLINE=1`",
    f"the source, sink 503 for {LONG_OUTAGE:.0f} s (deadline 10 s)",
    "first event of a new persistent topic (made right after start), PUT to arrival",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ceph", choices=("host", "18", "both"), default="both")
    args = parser.parse_args()
    versions = ("18", "host") if args.ceph == "both" else (args.ceph,)
    columns = []
    with tempfile.TemporaryDirectory(prefix="bench-rgw-retry-") as workdir:
        for which in versions:
            columns.append(measure(which, Path(workdir)))
    headers = ["one event", *(name for name, _ in columns)]
    rows = [[what, *(cells[i] for _, cells in columns)] for i, what in enumerate(ROWS)]
    print(f"RGW retries ({machine()}; one run each)\n")
    print(table(headers, rows))


if __name__ == "__main__":
    main()
