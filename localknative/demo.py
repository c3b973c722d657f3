"""The demo: the whole pipeline on this machine, real RGW, real models, real photos.

    RGW --notification--> source --CloudEvent--> dispatcher (the Channel, from knative/base)
        ├─> receiver
        └─> Route 50/50 ─> resnet (mobilenet_v2 over TF Serving gRPC) | vision (EfficientNet-Lite0
            behind the Vision REST stand-in) ─reply─> results collector (the Broker)

The functions, their environment and the channel's wiring come from knative/base
(`localknative.launch`, `localknative.workloads`): a function added there is started too.

`run(options)` starts every process on free loopback ports (testkit.stack), makes a bucket,
wires its notifications with the project's own `notifications setup` command, uploads the
photos, prints what happens as it happens and a summary table, and tears everything down. With
`keep_running` it stays up (and keeps printing) until Ctrl-C.

`run(options, compare=OVERLAY)` plays knative/overlays/evaluation instead of the manifests of
`options.knative_dir` (`localknative.overlay` writes what it builds into the run's directory):
every object goes to both classifiers, their results reach the evaluation function through the
overlay's Trigger (`localknative.compare`), and the demo prints the agreement table from the
function's report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from localknative.collector import read_entries
from localknative.compare import (
    EVALUATION,
    AgreementRow,
    Comparer,
    Totals,
    agreement_rows,
    agreement_table,
)
from localknative.hints import print_usage_hints
from localknative.launch import DEFAULT_PHOTOS, DEFAULT_TIMEOUT, DemoOptions, Endpoints, start_stack
from localknative.overlay import materialize
from localknative.parts import BUCKET, RESNET_MODEL, s3_client
from localknative.photos import Photo, load_photos
from localknative.report import Reporter, Tracker, summary_table
from localknative.topology import TopologyError
from localknative.workloads import CLASSIFIER, load_functions
from testkit.stack import Interrupted, Rgw, Stack, StackError, on_signals

# The harness, the benchmark and the CLI import these from here.
__all__ = [
    "BUCKET",
    "DEFAULT_PHOTOS",
    "DEFAULT_TIMEOUT",
    "RESNET_MODEL",
    "Demo",
    "DemoOptions",
    "Endpoints",
    "run",
    "s3_client",
]

# Parts built by the project besides the functions (which the manifests name).
REQUIRED_MODULES = ("modelserver.__main__", "source.__main__")
EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_SETUP = 3
EXIT_INTERRUPTED = 130
# RGW (16.2 and 18.2 alike) adopts a new persistent topic's queue only at its next scan of the
# queue list, every 30 s: until then an upload's event waits there. The HTTP way therefore
# uploads this probe first and waits for its event, so that the end-to-end latency the demo
# reports is the pipeline's, not that wait. The probe is not one of the photos: never counted.
PROBE_KEY = "probe/topic-adopted.jpg"
ADOPTION_WHY = "RGW adopts a new persistent topic at its next queue scan, up to 30 s"


# How long a finished run waits for the dispatcher's routing records of its last results.
ROUTE_RECORD_GRACE_S = 2.0


class DemoFailed(RuntimeError):
    pass


@dataclass
class RunOutcome:
    ok: bool = False
    code: int = EXIT_INCOMPLETE
    message: str = ""

    def set(self, ok: bool, code: int, message: str) -> None:
        self.ok, self.code, self.message = ok, code, message


def missing_parts(knative_dir: Path) -> list[str]:
    """Modules a complete checkout has: the model server, the source, each function's main."""
    modules = [*REQUIRED_MODULES]
    # A manifest error is reported with its reason when the stack starts.
    with contextlib.suppress(TopologyError):
        modules += [f"{spec.module}.__main__" for spec in load_functions(knative_dir)]
    return [name for name in modules if importlib.util.find_spec(name) is None]


class Demo:
    def __init__(self, options: DemoOptions, out: IO[str], compare: bool = False) -> None:
        self.options = options
        # Every object to both classifiers (the evaluation overlay): the agreement table too.
        self.compare = compare
        self.comparer: Comparer | None = None
        self.agreement: list[AgreementRow] = []
        self.evaluation_report: dict[str, Any] = {}
        self.reporter = Reporter(out)
        self.out = out
        self.tracker = Tracker(BUCKET)
        self.keys: list[str] = []
        self.record = Path()
        self.results = Path()
        self.dead_letters = Path()
        self._offsets = {"dispatch": 0, "results": 0, "dead": 0}
        self.roles: dict[str, str] = {}  # function -> role, once the stack is up

    def say(self, text: str) -> None:
        self.reporter.line(text)

    def build(self, stack: Stack) -> Endpoints:
        """Start the stack the manifests describe (localknative.launch) and follow its records."""
        endpoints = start_stack(stack, self.options, self.say)
        self.tracker.audit_subscriptions = endpoints.audit_subscriptions
        self.record = endpoints.record
        self.results = endpoints.results_log
        self.dead_letters = endpoints.dead_letters_log
        self.roles = endpoints.roles
        if self.compare:
            url = endpoints.functions.get(EVALUATION)
            if url is None:
                raise DemoFailed(f"--compare: the manifests run no {EVALUATION} function")
            # With --auth the played Trigger sends tokens for the function's audience.
            self.comparer = Comparer(
                self.options.knative_dir,
                url,
                self.results,
                endpoints.issuer,
                endpoints.audiences.get(EVALUATION),
            )
            for player in self.comparer.players:
                self.say(
                    f"trigger {player.trigger.name}: the Broker's results to {EVALUATION} at {url} "
                    f"(filter {dict(player.trigger.attributes)})"
                )
        return endpoints

    def upload(self, rgw: Rgw, photos: list[Photo]) -> None:
        s3 = s3_client(rgw)
        for photo in photos:
            self.tracker.expect(photo.key, time.time())
            s3.put_object(Bucket=BUCKET, Key=photo.key, Body=photo.jpeg, ContentType="image/jpeg")
            self.keys.append(photo.key)
            self.say(
                f"{'upload':<9} {photo.key:<14} {len(photo.jpeg):>7} bytes  ({photo.description})"
            )

    def wait_for_adoption(self, stack: Stack, rgw: Rgw, body: bytes) -> None:
        """Upload the probe and wait, visibly, until its event reaches the channel."""
        started = time.monotonic()
        s3_client(rgw).put_object(Bucket=BUCKET, Key=PROBE_KEY, Body=body, ContentType="image/jpeg")
        self.say(
            f"{'probe':<9} {PROBE_KEY}: waiting for its event before the photos ({ADOPTION_WHY})"
        )
        while not any(_about_probe(entry) for entry in read_entries(self.record)):
            waited = time.monotonic() - started
            if self.reporter.tty:
                self.out.write(f"\r\033[Kwaiting for RGW to adopt the topic ({waited:.0f} s)")
                self.out.flush()
            if _stopped(stack) or waited > self.options.timeout:
                why = f"{_stopped(stack)} stopped" if _stopped(stack) else "no event in time"
                raise DemoFailed(f"the probe's event never reached the channel: {why}")
            time.sleep(0.1)
        waited = time.monotonic() - started
        self.out.write("\r\033[K" if self.reporter.tty else "")
        self.say(f"{'probe':<9} {PROBE_KEY}: event arrived after {waited:.1f} s; RGW pushes now")

    def poll(self) -> None:
        """Read what the recordings gained since the last call and print it (not the probe)."""
        for name, path, absorb in (
            ("dispatch", self.record, self.tracker.absorb_dispatch),
            ("results", self.results, self.tracker.absorb_result),
            ("dead", self.dead_letters, self.tracker.absorb_dead_letter),
        ):
            entries = read_entries(path)
            for entry in entries[self._offsets[name] :]:
                if _about_probe(entry):
                    continue
                for text in absorb(entry):
                    self.say(text)
            self._offsets[name] = len(entries)
        if self.comparer is not None:
            self.comparer.poll()

    def compare_results(self, stack: Stack) -> bool:
        """Until the evaluation function paired every uploaded object, or the deadline; the
        rows (from its report) are in `self.agreement` either way."""
        assert self.comparer is not None
        deadline = time.monotonic() + self.options.timeout
        while True:
            self.poll()
            try:
                self.evaluation_report = self.comparer.report()
            except httpx.HTTPError as exc:
                raise DemoFailed(f"{EVALUATION}'s report: {exc}") from None
            self.agreement = agreement_rows(self.evaluation_report, BUCKET, self.keys)
            if len(self.agreement) == len(self.keys):
                return True
            if _stopped(stack):
                raise DemoFailed(f"{_stopped(stack)} stopped unexpectedly")
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)

    def watch(self, stack: Stack) -> bool:
        """Until every uploaded object is classified or dead-lettered, or the deadline."""
        deadline = time.monotonic() + self.options.timeout
        all_done_at: float | None = None
        while True:
            self.poll()
            done = self.tracker.done(self.keys)
            waited = self.options.timeout - (deadline - time.monotonic())
            self.reporter.progress(done, len(self.keys), f"({waited:.0f} s)")
            if done == len(self.keys):
                # The dispatcher records a delivery once the reply has reached the Broker, so a
                # result can be read a moment before the record of where the Route sent it:
                # wait briefly for those records, which `check` compares with the results.
                all_done_at = all_done_at or time.monotonic()
                unrouted = [k for k in self.keys if self.tracker.rows[k].awaiting_route]
                if unrouted and time.monotonic() - all_done_at < ROUTE_RECORD_GRACE_S:
                    time.sleep(0.05)
                    continue
                self.reporter.progress(done, len(self.keys))
                self.reporter.end_progress()
                return True
            if _stopped(stack):
                self.reporter.end_progress()
                raise DemoFailed(f"{_stopped(stack)} stopped unexpectedly")
            if time.monotonic() > deadline:
                self.reporter.end_progress()
                return False
            time.sleep(0.1)

    def check(self) -> list[str]:
        """What is wrong with the outcome (empty when every object was classified as routed)."""
        problems = []
        for key in self.keys:
            row = self.tracker.rows[key]
            if row.status == "pending":
                where = (
                    f"routed to {row.routed_to}" if row.routed_to else "never reached the channel"
                )
                problems.append(f"{key}: no result within {self.options.timeout:.0f} s ({where})")
            elif row.status == "dead-lettered":
                problems.append(f"{key}: dead-lettered ({row.dead_letter})")
            elif not self.compare and row.routed_to is not None and row.routed_to != row.function:
                # (With --compare every object goes to both: the pairs are checked instead.)
                problems.append(
                    f"{key}: routed to {row.routed_to} but classified by {row.function}"
                )
        if self.compare:
            paired = {row.key for row in self.agreement}
            unpaired = [key for key in self.keys if key not in paired]
            problems += [f"{key}: not answered by both classifiers" for key in unpaired]
            if self.comparer is not None:
                problems += [f"evaluation refused {f}" for f in self.comparer.failures()]
        return problems

    def summary(self, ok: bool, message: str, stack: Stack) -> dict[str, Any]:
        return {
            "ok": ok,
            "message": message,
            "bucket": BUCKET,
            "transport": "amqp" if self.options.amqp else "http",
            "objects": [self.tracker.rows[key].as_json() for key in self.keys],
            "pids": stack.all_pids(),
            "ready_after_s": {
                p.name: round(p.ready_after, 3)
                for p in stack.processes
                if p.ready_after is not None
            },
            "work_dir": str(stack.work_dir),
            **({"agreement": self.agreement_summary()} if self.compare else {}),
        }

    def evaluation_line(self) -> str:
        """The evaluation function's own count, which includes the topic probe's pair."""
        report = self.evaluation_report
        url = self.comparer.url if self.comparer else "?"
        return (
            f"evaluation function: {report.get('pairs')} pairs since it started (the probe's too), "
            f"{report.get('pending')} waiting, unpaired {report.get('unpaired') or 'none'} "
            f"({url}/report, {url}/metrics)"
        )

    def agreement_summary(self) -> dict[str, Any]:
        totals = Totals.of(self.agreement)
        report = self.evaluation_report
        return {
            "rows": [dataclasses.asdict(row) for row in self.agreement],
            "pairs": totals.pairs,
            "top1_agree": totals.agree,
            "mean_top5_overlap": totals.mean_overlap,
            # The function's own totals: every pair since it started (the probe's too).
            "evaluation": {
                k: report.get(k) for k in ("pairs", "top1_agree", "pending", "unpaired")
            },
        }


def run(options: DemoOptions, out: IO[str] | None = None, compare: Path | None = None) -> int:
    """The demo; with `compare` (an overlay such as knative/overlays/evaluation) the stack
    follows that overlay and the agreement table is printed too."""
    if compare is None:
        return _run(options, out or sys.stdout, compare=False)
    with tempfile.TemporaryDirectory(prefix="rgw-inference-overlay-") as directory:
        try:
            built = materialize(compare, Path(directory))
        except (TopologyError, OSError) as exc:
            (out or sys.stdout).write(f"demo: --compare {compare}: {exc}\n")
            return EXIT_SETUP
        return _run(dataclasses.replace(options, knative_dir=built), out or sys.stdout, True)


def _run(options: DemoOptions, stream: IO[str], compare: bool) -> int:
    missing = missing_parts(options.knative_dir)
    if missing:
        stream.write(
            f"demo: these parts of the project are missing: {', '.join(missing)}. "
            "Run `make venv` (or `pip install -e '.[pipeline]'`) in a complete checkout.\n"
        )
        return EXIT_SETUP
    try:
        photos = load_photos(options.photos) if options.photos > 0 else []
    except ValueError as exc:
        stream.write(f"demo: {exc}\n")
        return EXIT_SETUP

    demo = Demo(options, stream, compare)
    outcome = RunOutcome()
    stack = Stack()
    try:
        with on_signals(), stack:
            try:
                _run_in(stack, demo, photos, outcome)
            finally:
                if demo.comparer is not None:
                    demo.comparer.close()
                if options.keep_logs is not None:
                    _copy_logs(stack, options.keep_logs)
    except (KeyboardInterrupt, Interrupted):
        demo.reporter.end_progress()
        if not (options.keep_running and outcome.ok):
            outcome.set(False, EXIT_INTERRUPTED, "interrupted")
        stream.write("\nstopped; everything was shut down and removed\n")
    except (StackError, DemoFailed, TopologyError) as exc:
        demo.reporter.end_progress()
        code = EXIT_SETUP if isinstance(exc, StackError | TopologyError) else EXIT_INCOMPLETE
        outcome.set(False, code, str(exc))
        stream.write(f"demo FAILED: {exc}\n")
    if options.summary_json is not None:
        summary = demo.summary(outcome.ok, outcome.message, stack)
        options.summary_json.write_text(json.dumps(summary, indent=2))
    return outcome.code


def _run_in(stack: Stack, demo: Demo, photos: list[Photo], outcome: RunOutcome) -> None:
    stream, options = demo.out, demo.options
    endpoints = demo.build(stack)
    if photos and not options.amqp:  # the AMQP way's topic is not persistent: nothing to adopt
        demo.wait_for_adoption(stack, endpoints.rgw, photos[0].jpeg)
    demo.upload(endpoints.rgw, photos)
    if photos:
        arrived = demo.watch(stack)
        if demo.compare:
            arrived = demo.compare_results(stack) and arrived
        problems = demo.check()
        rows = [demo.tracker.rows[key] for key in demo.keys]
        stream.write("\n" + summary_table(rows) + "\n\n")
        if demo.compare:
            stream.write(agreement_table(demo.agreement) + "\n" + demo.evaluation_line() + "\n\n")
        if arrived and not problems:
            outcome.set(True, EXIT_OK, f"all {len(photos)} objects classified")
        else:
            outcome.message = "; ".join(problems) or "not every object was classified"
            _print_log_tails(stream, stack, demo.roles)
    else:
        outcome.set(True, EXIT_OK, "stack started")
    stream.write(("demo: " if outcome.ok else "demo FAILED: ") + outcome.message + "\n")
    stream.flush()
    if options.keep_running and outcome.ok:
        print_usage_hints(stream, endpoints)
        while True:
            demo.poll()
            if _stopped(stack):
                raise DemoFailed(f"{_stopped(stack)} stopped unexpectedly")
            time.sleep(0.2)


def _stopped(stack: Stack) -> str:
    return ", ".join(p.name for p in stack.processes if not p.alive())


def _about_probe(entry: dict[str, Any]) -> bool:
    # Its key is in a dispatch's or dead letter's subject, in a result's data; never elsewhere.
    return PROBE_KEY in json.dumps(entry, ensure_ascii=False)


def _print_log_tails(out: IO[str], stack: Stack, roles: dict[str, str]) -> None:
    """The logs that explain a missing result: the way in, the channel, the classifiers."""
    classifiers = [name for name, role in roles.items() if role == CLASSIFIER]
    for process in stack.processes:
        if process.name in ("source", "dispatcher", *classifiers, "modelserver"):
            out.write(f"--- {process.name} (last lines of its log)\n{process.log_tail(8)}\n")


def _copy_logs(stack: Stack, target: Path) -> None:
    """Process logs and the three recordings, kept after the work dir is removed."""
    import shutil

    shutil.copytree(stack.log_dir, target, dirs_exist_ok=True)
    for name in ("dispatch.jsonl", "results.jsonl", "dead-letters.jsonl"):
        path = stack.work_dir / name
        if path.exists():
            shutil.copy2(path, target / name)
