"""The parts of the local stack that are not Knative objects of the project, and the start of
one process per function or collector: each on a free loopback port, ready when it answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localknative.workloads import FunctionSpec
from testkit.stack import REPO_ROOT, Rgw, Stack, StackError, free_port, http_ok, tcp_open

BUCKET = "photos"
TOPIC = "photos-demo"
AMQP_EXCHANGE = "rgw-demo"
RESNET_MODEL = "mobilenet_v2"
VISION_MODEL = "efficientnet_lite0"
COMPLIANCE_MODEL = "open_nsfw"  # the compliance function's (knative/base/compliance.yaml)


def ready_http(url: str) -> Callable[[], bool]:
    return lambda: http_ok(url)


def start_modelserver(
    stack: Stack, vision_key: str, model_cache_dir: Path | None = None
) -> tuple[str, str]:
    """The model server with the demo's models; returns its gRPC host:port and REST URL."""
    grpc_port, rest_port = free_port(), free_port()
    config = stack.work_dir / "models.json"
    models = [{"name": m, "model_kind": m} for m in (RESNET_MODEL, VISION_MODEL, COMPLIANCE_MODEL)]
    config.write_text(json.dumps({"model_config_list": {"config": models}}))
    args = [
        "--port", str(grpc_port),
        "--rest_api_port", str(rest_port),
        "--model_config_file", str(config),
        "--vision_model", VISION_MODEL,
    ]  # fmt: skip
    if model_cache_dir is not None:
        args += ["--model_cache_dir", str(model_cache_dir)]
    rest = f"http://127.0.0.1:{rest_port}"
    stack.start(
        "modelserver",
        stack.python_module("modelserver", *args),
        # Models load before any port opens; the first run converts them (about a minute).
        ready=lambda: http_ok(f"{rest}/v1/models/{RESNET_MODEL}") and tcp_open(grpc_port),
        env={"VISION_API_KEY": vision_key},
        url=rest,
        timeout=600,
    )
    return f"127.0.0.1:{grpc_port}", rest


def start_function(stack: Stack, spec: FunctionSpec, port: int, env: dict[str, str]) -> str:
    url = f"http://127.0.0.1:{port}"
    stack.start(
        spec.name,
        stack.python_module(spec.module),
        ready=ready_http(f"{url}/health/readiness"),
        # Last: the manifests' HOST is the pod's 0.0.0.0; here only loopback is served.
        env={**env, "PORT": str(port), "HOST": "127.0.0.1"},
        url=url,
    )
    return url


def start_collector(
    stack: Stack, role: str, forward: str | None = None, forward_type: str | None = None
) -> tuple[str, Path]:
    """A recording sink (the Broker, the dead-letter sink); `forward` is where it delivers each
    event (of type `forward_type`, if given) on to, as the Broker delivers to its Trigger's
    subscriber."""
    port = free_port()
    out = stack.work_dir / f"{role}.jsonl"
    url = f"http://127.0.0.1:{port}"
    argv = stack.python_module(
        "localknative.collector", "--port", str(port), "--out", str(out), "--role", role
    )
    if forward is not None:
        argv += ["--forward", forward]
    if forward_type is not None:
        argv += ["--forward-type", forward_type]
    stack.start(role, argv, ready=ready_http(f"{url}/healthz"), url=url)
    return url, out


def start_issuer(stack: Stack) -> str:
    """The local OIDC issuer (`localknative.issuer`, local only): the functions fetch its JWKS,
    the dispatcher asks it for tokens. Returns its URL, which is also its `iss`."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stack.start(
        "issuer",
        stack.python_module("localknative.issuer", "--port", str(port)),
        ready=ready_http(f"{url}/healthz"),
        url=url,
    )
    return url


def start_results_service(stack: Stack, rgw: Rgw) -> str:
    """The results service (`python -m results`), the Knative Service `results`: its database
    is an SQLite file of this run, its thumbnails come from the run's RGW."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **rgw.env(),
        "DATABASE_URL": f"sqlite:///{stack.work_dir / 'results.db'}",
        "PORT": str(port),
        "HOST": "127.0.0.1",
    }
    stack.start(
        "results-service",
        stack.python_module("results"),
        ready=ready_http(f"{url}/health/readiness"),
        env=env,
        url=url,
    )
    return url


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
