"""Start the local stack the manifests describe: RGW, the model server, every function, the
collectors, the dispatcher and the source, each on a free loopback port (testkit.stack).

The functions, their environment and the dispatcher's bindings come from `knative/base`
(`localknative.workloads`, `localknative.topology`); only the parts that are not Knative
objects of the project (RGW, the model server's models, the source's flags) are set here.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from localknative.parts import (
    AMQP_EXCHANGE,
    BUCKET,
    COMPLIANCE_MODEL,
    RESNET_MODEL,
    VISION_MODEL,
    ready_http,
    s3_client,
    setup_notifications,
    start_collector,
    start_function,
    start_issuer,
    start_modelserver,
    start_results_service,
)
from localknative.routing import Bindings, plan_channel
from localknative.topology import Ref, Topology, load_topology, triggers_to
from localknative.workloads import (
    CLASSIFIER,
    FunctionSpec,
    LocalRun,
    audit_subscriptions,
    function_roles,
    load_functions,
    namespace_of,
    render_env,
    secret_examples,
    service_ports,
)
from testkit.stack import REPO_ROOT, Rgw, Stack, free_port

DEFAULT_PHOTOS = 6
DEFAULT_TIMEOUT = 240.0
CHANNEL = "rgw-events"
AMQP_QUEUE = "photos-demo"
# The Knative objects the collectors play: the dead-letter sink and the Broker.
DEAD_LETTERS = "Service/dead-letters"
BROKER = "Broker/default"


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
    # Extra settings for the classifiers, the functions whose Subscription replies (e.g.
    # TAG_OBJECTS, ALLOWED_BUCKETS in fault runs); they win over the manifests.
    classifier_env: dict[str, str] = field(default_factory=dict)
    # Sender authentication end to end: a local OIDC issuer, tokens from the dispatcher, and
    # AUTH_* on every function the Channel delivers to (`up --auth`, docs/security.md).
    auth: bool = False


@dataclass
class Endpoints:
    """Where each part listens in this run, and what it records."""

    rgw: Rgw
    grpc: str
    rest: str
    functions: dict[str, str] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)  # function -> workloads role
    audit_subscriptions: frozenset[str] = frozenset()  # no reply: deliveries to take note of
    dispatcher: str = ""
    source: str = ""
    results: str = ""  # the Broker (a recording collector)
    results_page: str = ""  # the results service behind the Broker's Trigger: the page
    dead_letters: str = ""
    vision_key: str = ""
    record: Path = Path()  # the dispatcher's outcomes
    issuer: str = ""  # the local OIDC issuer, with DemoOptions.auth
    audiences: dict[str, str] = field(default_factory=dict)  # function -> its AUTH_AUDIENCE
    senders: dict[str, str] = field(default_factory=dict)  # function -> a subject it accepts
    results_log: Path = Path()
    dead_letters_log: Path = Path()


def function_bindings(functions: list[FunctionSpec], urls: dict[str, str]) -> dict[str, str]:
    """Service/<name> and Configuration/<name> of each function -> its local URL."""
    return {str(ref): urls[spec.name] for spec in functions for ref in spec.refs}


def check_wiring(topology: Topology, functions: list[FunctionSpec]) -> None:
    """Fail before anything starts if the Channel names an object no local process plays."""
    fake = {name: f"http://127.0.0.1/{name}" for name in (s.name for s in functions)}
    plan_channel(
        topology,
        CHANNEL,
        Bindings(
            {**function_bindings(functions, fake), DEAD_LETTERS: "http://x", BROKER: "http://x"}
        ),
    )


def sender_auth_env(
    topology: Topology, functions: list[FunctionSpec], namespace: str, issuer: str
) -> dict[str, dict[str, str]]:
    """AUTH_* for each function the Channel delivers to: its own audience (Knative's format for
    its object), the local issuer, and as allowed subjects the identities of the Subscriptions
    that reach it. Functions nothing on the Channel reaches get none: no local sender of theirs
    sends tokens."""
    from localknative.issuer import serving_audience, subscription_identity

    fake = {name: f"http://127.0.0.1/{name}" for name in (s.name for s in functions)}
    plans = plan_channel(
        topology,
        CHANNEL,
        Bindings(
            {**function_bindings(functions, fake), DEAD_LETTERS: "http://x", BROKER: "http://x"}
        ),
    )
    env: dict[str, dict[str, str]] = {}
    for spec in functions:
        names = {str(ref) for ref in spec.refs}
        senders = sorted(
            subscription_identity(namespace, plan.name)
            for plan in plans
            if any(target.name in names for target in plan.targets)
        )
        if senders:
            env[spec.name] = {
                "AUTH_AUDIENCE": serving_audience(namespace, spec.ref.kind, spec.name),
                "AUTH_ISSUER": issuer,
                "AUTH_ALLOWED_SUBJECTS": ",".join(senders),
            }
    return env


def local_run(
    directory: Path, rgw: Rgw, grpc: str, rest: str, vision_key: str, urls: dict[str, str]
) -> LocalRun:
    """What the functions' manifests may refer to, as this run has it; `urls` maps the Knative
    Services the run plays to their local base URLs."""
    by_key = {
        "AWS_ACCESS_KEY_ID": rgw.access_key,
        "AWS_SECRET_ACCESS_KEY": rgw.secret_key,
        "GOOGLE_VISION_API_KEY": vision_key,
    }
    examples = secret_examples(directory)
    # The run's own value for every key it has, whatever the Secret is called.
    secret_values = {ref: by_key.get(ref[1], value) for ref, value in examples.items()}
    model_ports = service_ports(directory, "modelserver")
    services = {
        ("modelserver", model_ports.get("grpc", 8500)): grpc,
        ("modelserver", model_ports.get("http", 8501)): rest.removeprefix("http://"),
        **{(name, 80): url.removeprefix("http://") for name, url in urls.items()},
    }
    return LocalRun(
        secrets=secret_values,
        services=services,
        s3_env=rgw.env(),
        endpoints={"modelserver-grpc": grpc, "modelserver-rest": rest, "s3-endpoint": rgw.endpoint},
        namespace=namespace_of(directory),
    )


def start_stack(stack: Stack, options: DemoOptions, say: Callable[[str], None]) -> Endpoints:
    """Every part, in dependency order; returns where each listens."""
    topology = load_topology(options.knative_dir)
    functions = load_functions(options.knative_dir)
    check_wiring(topology, functions)
    roles = function_roles(topology, functions)
    split = {
        str(t.target): t.percent
        for sub in topology.subscriptions_of(CHANNEL)
        if sub.subscriber.ref is not None and sub.subscriber.ref.kind == "Route"
        for t in topology.traffic(sub.subscriber.ref.name)
    }
    say(f"topology from {options.knative_dir}: split {split}")
    say("functions from the manifests: " + ", ".join(f"{n} ({r})" for n, r in roles.items()))

    started = time.monotonic()
    rgw = stack.start_rgw(free_port())
    say(f"RGW (Ceph radosgw) serving S3 at {rgw.endpoint} ({time.monotonic() - started:.1f} s)")
    s3_client(rgw).create_bucket(Bucket=BUCKET)

    # HTTP way: the stack holds the source's listening socket (socket activation), so RGW's
    # pushes wait in its backlog while the source is down instead of being refused: RGW
    # 16.2 retries a refused push at once, in a tight loop that can hang its queue.
    listener = None if options.amqp else stack.hold_listener()
    source_port = free_port() if listener is None else int(listener.getsockname()[1])
    amqp_url = None
    if options.amqp:
        amqp_url = stack.start_rabbitmq(free_port())
        say(f"RabbitMQ at {amqp_url}")
        setup_notifications(rgw, amqp_url, persistent=False, amqp=True)
    else:
        # Wired now, before the other parts start: RGW 16.2 picks up a new persistent
        # topic's queue on its next 30 s scan, and starting the rest uses up that time.
        setup_notifications(rgw, f"http://127.0.0.1:{source_port}/", persistent=True, amqp=False)
    say(
        f"bucket {BUCKET!r}: notifications wired by `python -m cli notifications setup` "
        f"({'AMQP' if options.amqp else 'HTTP push, persistent topic'})"
    )

    vision_key = secrets.token_urlsafe(16)
    started = time.monotonic()
    grpc, rest = start_modelserver(stack, vision_key, options.model_cache_dir)
    say(
        f"model server: gRPC {grpc}, REST {rest} ({RESNET_MODEL}, {VISION_MODEL}, "
        f"{COMPLIANCE_MODEL}; "
        f"{time.monotonic() - started:.1f} s)"
    )
    endpoints = Endpoints(
        rgw=rgw,
        grpc=grpc,
        rest=rest,
        vision_key=vision_key,
        roles=roles,
        audit_subscriptions=audit_subscriptions(topology),
    )
    # The results service first: the Broker (the results collector) delivers each result on to
    # it as Trigger `results` says, and the dead-letter sink each dead letter, so the page shows
    # both while the demo still reads the collectors' recordings.
    endpoints.results_page = start_results_service(stack, rgw)
    endpoints.dead_letters, endpoints.dead_letters_log = start_collector(
        stack, "dead-letters", forward=f"{endpoints.results_page}/dead-letters"
    )
    endpoints.results, endpoints.results_log = start_collector(
        stack,
        "results",
        forward=f"{endpoints.results_page}/",
        forward_type=results_trigger_type(options.knative_dir),
    )
    say(f"results page: {endpoints.results_page}/ (JSON: {endpoints.results_page}/api/results)")
    # Ports first, so that a function's env may name another function's address.
    ports = {spec.name: free_port() for spec in functions}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    # The Knative Services the collectors play are reachable at their cluster addresses too.
    services = {**urls, "dead-letters": endpoints.dead_letters, "results": endpoints.results}
    run = local_run(options.knative_dir, rgw, grpc, rest, vision_key, services)
    auth_env: dict[str, dict[str, str]] = {}
    if options.auth:
        endpoints.issuer = start_issuer(stack)
        namespace = namespace_of(options.knative_dir) or "default"
        auth_env = sender_auth_env(topology, functions, namespace, endpoints.issuer)
        # The Triggers `demo --compare` plays send tokens too (localknative.compare).
        from localknative.compare import played_trigger_auth_env

        auth_env.update(played_trigger_auth_env(options.knative_dir, endpoints.issuer))
        endpoints.audiences = {name: e["AUTH_AUDIENCE"] for name, e in auth_env.items()}
        # For the printed curl commands (localknative.hints): a token as one of its senders.
        endpoints.senders = {
            name: e["AUTH_ALLOWED_SUBJECTS"].split(",")[0] for name, e in auth_env.items()
        }
        say(f"sender authentication: local OIDC issuer {endpoints.issuer} (local only)")
    for spec in functions:
        env = render_env(spec, run)
        if roles[spec.name] == CLASSIFIER:
            env.update(options.classifier_env)
        env.update(auth_env.get(spec.name, {}))
        endpoints.functions[spec.name] = start_function(stack, spec, ports[spec.name], env)
    say("functions: " + ", ".join(f"{name} {url}" for name, url in endpoints.functions.items()))

    start_dispatcher(stack, options, endpoints, functions)
    say(f"channel {CHANNEL} (dispatcher) at {endpoints.dispatcher}")
    start_source(stack, options, endpoints, source_port, amqp_url, listener)
    say(f"source ({'amqp' if options.amqp else 'http'}) at {endpoints.source}")
    return endpoints


def start_dispatcher(
    stack: Stack, options: DemoOptions, endpoints: Endpoints, functions: list[FunctionSpec]
) -> None:
    port = free_port()
    endpoints.dispatcher = f"http://127.0.0.1:{port}"
    endpoints.record = stack.work_dir / "dispatch.jsonl"
    binds = {
        **function_bindings(functions, endpoints.functions),
        DEAD_LETTERS: endpoints.dead_letters,
        BROKER: endpoints.results,
    }
    argv = stack.python_module(
        "localknative.dispatcher",
        "--knative-dir", str(options.knative_dir),
        "--channel", CHANNEL,
        "--port", str(port),
        "--record", str(endpoints.record),
    )  # fmt: skip
    for ref, url in binds.items():
        argv += ["--bind", f"{ref}={url}"]
    if endpoints.issuer:
        namespace = namespace_of(options.knative_dir) or "default"
        argv += ["--oidc-issuer", endpoints.issuer, "--namespace", namespace]
        for spec in functions:
            if spec.name in endpoints.audiences:
                for name in spec.refs:
                    argv += ["--audience", f"{name}={endpoints.audiences[spec.name]}"]
    stack.start(
        "dispatcher", argv, ready_http(f"{endpoints.dispatcher}/healthz"), url=endpoints.dispatcher
    )


def start_source(
    stack: Stack,
    options: DemoOptions,
    endpoints: Endpoints,
    port: int,
    amqp_url: str | None,
    listener: socket.socket | None,
) -> None:
    # The channel answers after the classifiers did (and retried): give it time.
    delivery = ["--sink", endpoints.dispatcher, "--timeout", "120", "--deadline", "600"]
    # Unusable notifications are parked there too: answered 4xx instead, RGW's persistent
    # queue would push them again forever (and hold back the entries behind them).
    delivery += ["--dead-letter-url", endpoints.dead_letters]
    endpoints.source = f"http://127.0.0.1:{port}"
    if amqp_url is not None:
        argv = stack.python_module(
            "source", "amqp", "--url", amqp_url, "--queue", AMQP_QUEUE,
            "--exchange", AMQP_EXCHANGE, "--health-port", str(port), *delivery,
        )  # fmt: skip
    else:
        argv = stack.python_module("source", "http", *delivery)
    env = {"PORT": str(port), "HOST": "127.0.0.1", **endpoints.rgw.env()}
    if listener is not None:
        env["SOURCE_LISTEN_FD"] = str(listener.fileno())
    stack.start(
        "source",
        argv,
        ready_http(f"{endpoints.source}/health/readiness"),
        env=env,
        url=endpoints.source,
        listener=listener,
    )


def results_trigger_type(knative_dir: Path) -> str | None:
    """The event type Trigger `results` lets through to the results service (None: all)."""
    types = {t.attributes.get("type") for t in triggers_to(knative_dir, Ref("Service", "results"))}
    return types.pop() if len(types) == 1 else None
