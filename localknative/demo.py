"""The demo: the whole pipeline on this machine, real RGW, real models, real photos.

    RGW --notification--> source --CloudEvent--> dispatcher (the Channel, from knative/base)
        ├─> receiver
        └─> Route 50/50 ─> resnet (mobilenet_v2 over TF Serving gRPC) | vision (EfficientNet-Lite0
            behind the Vision REST stand-in) ─reply─> results collector (the Broker)

`run(options)` starts every process on free loopback ports (testkit.stack), makes a bucket,
wires its notifications with the project's own `notifications setup` command, uploads the
photos, prints what happens as it happens and a summary table, and tears everything down. With
`keep_running` it stays up (and keeps printing) until Ctrl-C.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from localknative.collector import read_entries
from localknative.photos import Photo, load_photos
from localknative.report import Reporter, Tracker, summary_table
from localknative.topology import TopologyError, load_topology
from testkit.stack import (
    REPO_ROOT,
    Interrupted,
    Rgw,
    Stack,
    StackError,
    free_port,
    http_ok,
    on_signals,
    tcp_open,
)

DEFAULT_PHOTOS = 6
DEFAULT_TIMEOUT = 240.0
BUCKET = "photos"
TOPIC = "photos-demo"
AMQP_EXCHANGE = "rgw-demo"
AMQP_QUEUE = "photos-demo"
RESNET_MODEL = "mobilenet_v2"
VISION_MODEL = "efficientnet_lite0"
# Parts built by the project; a missing one means the checkout is incomplete.
REQUIRED_MODULES = (
    "modelserver.__main__",
    "functions.receiver.__main__",
    "functions.resnet.__main__",
    "functions.vision.__main__",
    "source.__main__",
)
EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_SETUP = 3
EXIT_INTERRUPTED = 130


@dataclass
class DemoOptions:
    photos: int = DEFAULT_PHOTOS
    timeout: float = DEFAULT_TIMEOUT
    amqp: bool = False
    keep_running: bool = False
    summary_json: Path | None = None
    knative_dir: Path = REPO_ROOT / "knative" / "base"
    model_cache_dir: Path | None = None
    keep_logs: Path | None = None
    # Extra settings for the two classifiers (e.g. TAG_OBJECTS, ALLOWED_BUCKETS in fault runs).
    classifier_env: dict[str, str] = field(default_factory=dict)


@dataclass
class Endpoints:
    """Where each part listens in this run."""

    rgw: Rgw
    grpc: str
    rest: str
    functions: dict[str, str] = field(default_factory=dict)
    dispatcher: str = ""
    source: str = ""
    results: str = ""
    dead_letters: str = ""
    vision_key: str = ""


class DemoFailed(RuntimeError):
    pass


@dataclass
class RunOutcome:
    ok: bool = False
    code: int = EXIT_INCOMPLETE
    message: str = ""

    def set(self, ok: bool, code: int, message: str) -> None:
        self.ok, self.code, self.message = ok, code, message


def missing_parts() -> list[str]:
    return [name for name in REQUIRED_MODULES if importlib.util.find_spec(name) is None]


def _module_argv(stack: Stack, module: str, *args: str) -> list[str]:
    return stack.python_module(module, *args)


def _ready_http(url: str) -> Any:
    return lambda: http_ok(url)


def start_modelserver(stack: Stack, options: DemoOptions, vision_key: str) -> tuple[str, str]:
    grpc_port, rest_port = free_port(), free_port()
    config = stack.work_dir / "models.json"
    config.write_text(
        json.dumps(
            {
                "model_config_list": {
                    "config": [
                        {"name": RESNET_MODEL, "model_kind": RESNET_MODEL},
                        {"name": VISION_MODEL, "model_kind": VISION_MODEL},
                    ]
                }
            }
        )
    )
    args = [
        "--port", str(grpc_port),
        "--rest_api_port", str(rest_port),
        "--model_config_file", str(config),
        "--vision_model", VISION_MODEL,
    ]  # fmt: skip
    if options.model_cache_dir is not None:
        args += ["--model_cache_dir", str(options.model_cache_dir)]
    rest = f"http://127.0.0.1:{rest_port}"
    stack.start(
        "modelserver",
        _module_argv(stack, "modelserver", *args),
        # Models load before any port opens; the first run converts them (about a minute).
        ready=lambda: http_ok(f"{rest}/v1/models/{RESNET_MODEL}") and tcp_open(grpc_port),
        env={"VISION_API_KEY": vision_key},
        url=rest,
        timeout=600,
    )
    return f"127.0.0.1:{grpc_port}", rest


def start_function(stack: Stack, name: str, env: dict[str, str]) -> str:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stack.start(
        name,
        _module_argv(stack, f"functions.{name}"),
        ready=_ready_http(f"{url}/health/readiness"),
        env={"PORT": str(port), "HOST": "127.0.0.1", **env},
        url=url,
    )
    return url


def start_collector(stack: Stack, role: str) -> tuple[str, Path]:
    port = free_port()
    out = stack.work_dir / f"{role}.jsonl"
    url = f"http://127.0.0.1:{port}"
    stack.start(
        role,
        _module_argv(
            stack, "localknative.collector", "--port", str(port), "--out", str(out), "--role", role
        ),
        ready=_ready_http(f"{url}/healthz"),
        url=url,
    )
    return url, out


def setup_notifications(rgw: Rgw, endpoint: str, persistent: bool, amqp: bool) -> None:
    """The project's own set-up command, as a user would run it."""
    argv = [
        sys.executable, "-m", "cli", "notifications", "setup",
        "--bucket", BUCKET, "--topic", TOPIC, "--endpoint", endpoint,
    ]  # fmt: skip
    if persistent:
        argv.append("--persistent")
    if amqp:
        argv += ["--amqp-exchange", AMQP_EXCHANGE]
    done = subprocess.run(
        argv,
        cwd=REPO_ROOT,
        env={**os.environ, **rgw.env()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise StackError(f"`{' '.join(argv[1:])}` failed:\n{done.stderr.strip()}")


def s3_client(rgw: Rgw) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=rgw.endpoint,
        aws_access_key_id=rgw.access_key,
        aws_secret_access_key=rgw.secret_key,
        region_name=rgw.region,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


class Demo:
    def __init__(self, options: DemoOptions, out: IO[str]) -> None:
        self.options = options
        self.reporter = Reporter(out)
        self.out = out
        self.tracker = Tracker(BUCKET)
        self.keys: list[str] = []
        self.record = Path()
        self.results = Path()
        self.dead_letters = Path()
        self._offsets = {"dispatch": 0, "results": 0, "dead": 0}

    def say(self, text: str) -> None:
        self.reporter.line(text)

    def build(self, stack: Stack) -> Endpoints:
        options = self.options
        topology = load_topology(options.knative_dir)
        split = {
            str(t.target): t.percent
            for sub in topology.subscriptions_of("rgw-events")
            if sub.subscriber.ref is not None and sub.subscriber.ref.kind == "Route"
            for t in topology.traffic(sub.subscriber.ref.name)
        }
        self.say(f"topology from {options.knative_dir}: split {split}")

        started = time.monotonic()
        rgw = stack.start_rgw(free_port())
        self.say(
            f"RGW (Ceph radosgw) serving S3 at {rgw.endpoint} ({time.monotonic() - started:.1f} s)"
        )
        s3_client(rgw).create_bucket(Bucket=BUCKET)

        # HTTP way: the stack holds the source's listening socket (socket activation), so RGW's
        # pushes wait in its backlog while the source is down instead of being refused: RGW
        # 16.2 retries a refused push at once, in a tight loop that can hang its queue.
        listener = None if options.amqp else stack.hold_listener()
        source_port = free_port() if listener is None else int(listener.getsockname()[1])
        amqp_url = None
        if options.amqp:
            amqp_url = stack.start_rabbitmq(free_port())
            self.say(f"RabbitMQ at {amqp_url}")
            setup_notifications(rgw, amqp_url, persistent=False, amqp=True)
        else:
            # Wired now, before the other parts start: RGW 16.2 picks up a new persistent
            # topic's queue on its next 30 s scan, and starting the rest uses up that time.
            setup_notifications(
                rgw, f"http://127.0.0.1:{source_port}/", persistent=True, amqp=False
            )
        self.say(
            f"bucket {BUCKET!r}: notifications wired by `python -m cli notifications setup` "
            f"({'AMQP' if options.amqp else 'HTTP push, persistent topic'})"
        )

        vision_key = secrets.token_urlsafe(16)
        started = time.monotonic()
        grpc, rest = start_modelserver(stack, options, vision_key)
        self.say(
            f"model server: gRPC {grpc}, REST {rest} ({RESNET_MODEL}, {VISION_MODEL}; "
            f"{time.monotonic() - started:.1f} s)"
        )
        endpoints = Endpoints(rgw=rgw, grpc=grpc, rest=rest, vision_key=vision_key)
        endpoints.dead_letters, self.dead_letters = start_collector(stack, "dead-letters")
        endpoints.results, self.results = start_collector(stack, "results")
        s3_env = rgw.env()
        endpoints.functions["receiver"] = start_function(stack, "receiver", s3_env)
        endpoints.functions["resnet"] = start_function(
            stack,
            "resnet",
            {
                **s3_env,
                "RESNET_SERVING_ENDPOINT": grpc,
                "MODEL_NAME": RESNET_MODEL,
                **options.classifier_env,
            },
        )
        endpoints.functions["vision"] = start_function(
            stack,
            "vision",
            {
                **s3_env,
                "VISION_ENDPOINT": rest,
                "GOOGLE_VISION_API_KEY": vision_key,
                "VISION_MAX_RESULTS": "5",
                **options.classifier_env,
            },
        )
        self.say(
            "functions: " + ", ".join(f"{name} {url}" for name, url in endpoints.functions.items())
        )

        dispatcher_port = free_port()
        endpoints.dispatcher = f"http://127.0.0.1:{dispatcher_port}"
        self.record = stack.work_dir / "dispatch.jsonl"
        binds = {
            "Service/receiver": endpoints.functions["receiver"],
            "Configuration/resnet": endpoints.functions["resnet"],
            "Configuration/vision": endpoints.functions["vision"],
            "Service/dead-letters": endpoints.dead_letters,
            "Broker/default": endpoints.results,
        }
        argv = _module_argv(
            stack,
            "localknative.dispatcher",
            "--knative-dir", str(options.knative_dir),
            "--channel", "rgw-events",
            "--port", str(dispatcher_port),
            "--record", str(self.record),
        )  # fmt: skip
        for ref, url in binds.items():
            argv += ["--bind", f"{ref}={url}"]
        stack.start(
            "dispatcher",
            argv,
            _ready_http(f"{endpoints.dispatcher}/healthz"),
            url=endpoints.dispatcher,
        )
        self.say(f"channel rgw-events (dispatcher) at {endpoints.dispatcher}")

        # The channel answers after the classifiers did (and retried): give it time.
        delivery = ["--sink", endpoints.dispatcher, "--timeout", "120", "--deadline", "600"]
        # Unusable notifications are parked there too: answered 4xx instead, RGW's persistent
        # queue would push them again forever (and hold back the entries behind them).
        delivery += ["--dead-letter-url", endpoints.dead_letters]
        endpoints.source = f"http://127.0.0.1:{source_port}"
        if amqp_url is not None:
            argv = _module_argv(
                stack, "source", "amqp", "--url", amqp_url, "--queue", AMQP_QUEUE,
                "--exchange", AMQP_EXCHANGE, "--health-port", str(source_port), *delivery,
            )  # fmt: skip
        else:
            argv = _module_argv(stack, "source", "http", *delivery)
        source_env = {"PORT": str(source_port), "HOST": "127.0.0.1", **s3_env}
        if listener is not None:
            source_env["SOURCE_LISTEN_FD"] = str(listener.fileno())
        stack.start(
            "source",
            argv,
            _ready_http(f"{endpoints.source}/health/readiness"),
            env=source_env,
            url=endpoints.source,
            listener=listener,
        )
        self.say(f"source ({'amqp' if options.amqp else 'http'}) at {endpoints.source}")
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

    def poll(self) -> None:
        """Read what the recordings gained since the last call and print it."""
        for name, path, absorb in (
            ("dispatch", self.record, self.tracker.absorb_dispatch),
            ("results", self.results, self.tracker.absorb_result),
            ("dead", self.dead_letters, self.tracker.absorb_dead_letter),
        ):
            entries = read_entries(path)
            for entry in entries[self._offsets[name] :]:
                for text in absorb(entry):
                    self.say(text)
            self._offsets[name] = len(entries)

    def watch(self, stack: Stack) -> bool:
        """Until every uploaded object is classified or dead-lettered, or the deadline."""
        deadline = time.monotonic() + self.options.timeout
        while True:
            self.poll()
            done = self.tracker.done(self.keys)
            waited = self.options.timeout - (deadline - time.monotonic())
            self.reporter.progress(done, len(self.keys), f"({waited:.0f} s)")
            if done == len(self.keys):
                self.reporter.progress(done, len(self.keys))
                self.reporter.end_progress()
                return True
            dead = [p.name for p in stack.processes if not p.alive()]
            if dead:
                self.reporter.end_progress()
                raise DemoFailed(f"{', '.join(dead)} stopped unexpectedly")
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
            elif row.routed_to is not None and row.routed_to != row.function:
                problems.append(
                    f"{key}: routed to {row.routed_to} but classified by {row.function}"
                )
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
        }


def print_usage_hints(out: IO[str], endpoints: Endpoints) -> None:
    rgw = endpoints.rgw
    env = (
        f"AWS_ACCESS_KEY_ID={rgw.access_key} AWS_SECRET_ACCESS_KEY={rgw.secret_key} "
        f"AWS_DEFAULT_REGION={rgw.region}"
    )
    record = (
        '{"Records":[{"eventVersion":"2.2","eventSource":"ceph:s3","awsRegion":"default",'
        '"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"' + BUCKET + '"},'
        '"object":{"key":"chelsea.jpg"}}}]}'
    )
    lines = [
        "",
        "The stack keeps running. Upload your own photos and watch them here:",
        "",
        f"  {env} \\",
        f"    aws --endpoint-url {rgw.endpoint} s3 cp my-photo.jpg s3://{BUCKET}/",
        "",
        "  python - <<'EOF'",
        "  import boto3",
        f"  s3 = boto3.client('s3', endpoint_url='{rgw.endpoint}', region_name='{rgw.region}',",
        f"                    aws_access_key_id='{rgw.access_key}',",
        f"                    aws_secret_access_key='{rgw.secret_key}')",
        f"  s3.upload_file('my-photo.jpg', '{BUCKET}', 'my-photo.jpg')",
        "  EOF",
        "",
        "Send a CloudEvent straight to a function (it downloads the object from RGW):",
    ]
    for name, url in endpoints.functions.items():
        lines += [
            "",
            f"  curl -i {url}/ -H 'ce-specversion: 1.0' -H 'ce-id: manual-{name}-1' \\",
            "    -H 'ce-type: com.amazonaws.s3.ObjectCreated:Put' -H 'ce-source: /manual' \\",
            f"    -H 'content-type: application/json' -d '{record}'",
        ]
    lines += [
        "",
        f"or at the channel (fan-out, 50/50 split, retries): {endpoints.dispatcher}/",
        f"model server: TF Serving REST {endpoints.rest}/v1/models/{RESNET_MODEL}, "
        f"gRPC {endpoints.grpc}",
        "",
        "Ctrl-C stops everything and removes the temporary files.",
    ]
    out.write("\n".join(lines) + "\n")
    out.flush()


def run(options: DemoOptions, out: IO[str] | None = None) -> int:
    stream = out or sys.stdout
    missing = missing_parts()
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

    demo = Demo(options, stream)
    outcome = RunOutcome()
    stack = Stack()
    try:
        with on_signals(), stack:
            try:
                _run_in(stack, demo, photos, outcome)
            finally:
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
    demo.upload(endpoints.rgw, photos)
    if photos:
        arrived = demo.watch(stack)
        problems = demo.check()
        rows = [demo.tracker.rows[key] for key in demo.keys]
        stream.write("\n" + summary_table(rows) + "\n\n")
        if arrived and not problems:
            outcome.set(True, EXIT_OK, f"all {len(photos)} objects classified")
        else:
            outcome.message = "; ".join(problems) or "not every object was classified"
            _print_log_tails(stream, stack)
    else:
        outcome.set(True, EXIT_OK, "stack started")
    stream.write(("demo: " if outcome.ok else "demo FAILED: ") + outcome.message + "\n")
    stream.flush()
    if options.keep_running and outcome.ok:
        print_usage_hints(stream, endpoints)
        while True:
            demo.poll()
            dead = [p.name for p in stack.processes if not p.alive()]
            if dead:
                raise DemoFailed(f"{', '.join(dead)} stopped unexpectedly")
            time.sleep(0.2)


def _print_log_tails(out: IO[str], stack: Stack) -> None:
    for process in stack.processes:
        if process.name in ("source", "dispatcher", "resnet", "vision", "modelserver"):
            out.write(f"--- {process.name} (last lines of its log)\n{process.log_tail(8)}\n")


def _copy_logs(stack: Stack, target: Path) -> None:
    """Process logs and the three recordings, kept after the work dir is removed."""
    import shutil

    shutil.copytree(stack.log_dir, target, dirs_exist_ok=True)
    for name in ("dispatch.jsonl", "results.jsonl", "dead-letters.jsonl"):
        path = stack.work_dir / name
        if path.exists():
            shutil.copy2(path, target / name)
