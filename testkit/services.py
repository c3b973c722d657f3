"""The project's own servers as supervised processes, for the tests and the benchmarks alike.

- `running_modelserver`: `python -m modelserver` on two free ports, ready when its first model is
  served over REST and gRPC accepts; `write_model_config` writes the models it serves.
- `running_function`: `python -m functions.NAME` on a free port, ready on /health/readiness (or
  liveness).
- `running_source` / `start_source`: `python -m source http|amqp`, optionally on a listening
  socket the caller holds (SOURCE_LISTEN_FD), so its port accepts while the source is down.
- `running_fake_vision`: the contract stand-in for Google's Vision API (`testkit.fake_vision`).
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from testkit.processes import REPO_ROOT, Process, free_port, python_argv, running

MODEL_CACHE_DIR = REPO_ROOT / ".cache" / "models"  # git-ignored; converted ONNX files persist
IMAGES_MODELS = ("mobilenet_v2", "efficientnet_lite0")
IMAGE_BYTES_MODEL = "resnet"
MODELSERVER_TIMEOUT = 180.0  # the first run converts the models; later runs start in a second


# --- the model server -----------------------------------------------------------------------------


def write_model_config(path: Path) -> Path:
    """`mobilenet_v2`, `efficientnet_lite0` (the images signature) and `resnet` (the seed's
    DT_STRING `image_bytes` signature, 1001 classes)."""
    configs = [{"name": name, "model_kind": name} for name in IMAGES_MODELS]
    configs.append({"name": IMAGE_BYTES_MODEL, "model_kind": "image_bytes"})
    path.write_text(json.dumps({"model_config_list": {"config": configs}}, indent=2))
    return path


def modelserver_argv(grpc_port: int, rest_port: int, *args: str) -> list[str]:
    return python_argv(
        "-m", "modelserver", "--port", str(grpc_port), "--rest_api_port", str(rest_port), *args
    )


@dataclass(frozen=True)
class ModelServer:
    grpc_target: str  # "127.0.0.1:PORT", for grpc.insecure_channel
    rest_url: str  # "http://127.0.0.1:PORT", TF Serving REST and /v1/images:annotate
    vision_api_key: str
    process: Process


@contextlib.contextmanager
def running_modelserver(
    log_dir: Path,
    config_file: Path,
    vision_api_key: str | None = None,
    cache_dir: Path = MODEL_CACHE_DIR,
    extra: Sequence[str] = (),
    timeout: float = MODELSERVER_TIMEOUT,
) -> Iterator[ModelServer]:
    """The model server for the block, serving the models of `config_file` (and the Vision
    stand-in, with `vision_api_key`)."""
    grpc_port, rest_port = free_port(), free_port()
    rest_url = f"http://127.0.0.1:{rest_port}"
    argv = modelserver_argv(
        grpc_port, rest_port,
        "--model_config_file", str(config_file), "--model_cache_dir", str(cache_dir), *extra,
    )  # fmt: skip
    first_model = json.loads(config_file.read_text())["model_config_list"]["config"][0]["name"]
    with running(
        "modelserver",
        argv,
        log_dir,
        env={} if vision_api_key is None else {"VISION_API_KEY": vision_api_key},
        ready_url=f"{rest_url}/v1/models/{first_model}",
        timeout=timeout,
    ) as process:
        process.wait_tcp(grpc_port)
        yield ModelServer(f"127.0.0.1:{grpc_port}", rest_url, vision_api_key or "", process)


# --- the functions --------------------------------------------------------------------------------


@dataclass
class FunctionProcess:
    """A running function (`functions.NAME`) and the environment it was started with."""

    process: Process
    port: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_lines(self) -> list[dict[str, Any]]:
        """The function's JSON log lines so far (other output, e.g. a traceback, is skipped)."""
        lines = []
        for line in self.process.log_text().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    lines.append(entry)
        return lines


@contextlib.contextmanager
def running_function(
    log_dir: Path,
    package: str,
    env: Mapping[str, str],
    health: str = "readiness",
    timeout: float = 60.0,
    name: str | None = None,
) -> Iterator[FunctionProcess]:
    """`python -m functions.PACKAGE` on a free port for the block, /health/HEALTH answering;
    its log is `NAME-PORT.log` (NAME defaults to the package)."""
    port = free_port()
    full_env = {"HOST": "127.0.0.1", **env, "PORT": str(port)}
    url = f"http://127.0.0.1:{port}/health/{health}"
    argv = python_argv("-m", f"functions.{package}")
    label = f"{name or package}-{port}"
    with running(label, argv, log_dir, env=full_env, ready_url=url, timeout=timeout) as process:
        yield FunctionProcess(process, port, full_env)


# --- the source -----------------------------------------------------------------------------------


@dataclass
class SourceProcess:
    process: Process
    port: int

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _source_process(
    log_dir: Path,
    way: str,
    sink: str,
    env: Mapping[str, str] | None,
    args: Sequence[str],
    port: int | None,
    listener: socket.socket | None,
    name: str | None,
) -> tuple[Process, int]:
    """How to start the source. With `listener` (HTTP way), the source serves the socket the
    caller holds, so the port keeps accepting while the source is down (SOURCE_LISTEN_FD)."""
    full_env = {"K_SINK": sink, "LOG_LEVEL": "INFO", **(env or {})}
    if listener is None:
        port = port or free_port()
        flag = "--listen" if way == "http" else "--health-port"
        value = f"127.0.0.1:{port}" if way == "http" else str(port)
        argv = python_argv("-m", "source", way, flag, value, *args)
    else:
        assert way == "http", "only the HTTP way listens for RGW"
        full_env["SOURCE_LISTEN_FD"] = str(listener.fileno())
        port = int(listener.getsockname()[1])
        argv = python_argv("-m", "source", "http", *args)
    label = name or f"source-{way}-{port}"
    process = Process(label, argv, log_dir / f"{label}.log", full_env, listener=listener)
    return process, port


@contextlib.contextmanager
def running_source(
    log_dir: Path,
    way: str,
    sink: str,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    port: int | None = None,
    name: str | None = None,
    listener: socket.socket | None = None,
) -> Iterator[SourceProcess]:
    """The source on `port` (a free one by default) or on the held `listener`, ready
    (readiness 200) for the block."""
    process, port = _source_process(log_dir, way, sink, env, args, port, listener, name)
    try:
        process.start()
        process.wait_http_ok(f"http://127.0.0.1:{port}/health/readiness", 60.0)
        yield SourceProcess(process, port)
    finally:
        process.stop()


def start_source(
    log_dir: Path,
    way: str,
    sink: str,
    env: Mapping[str, str],
    args: Sequence[str],
    port: int | None,
    listener: socket.socket | None = None,
) -> SourceProcess:
    """Like `running_source`, for tests that kill and restart it themselves (stop() it!)."""
    process, port = _source_process(log_dir, way, sink, env, args, port, listener, None)
    try:
        process.start()
        process.wait_http_ok(f"http://127.0.0.1:{port}/health/readiness", 60.0)
    except BaseException:
        process.stop()
        raise
    return SourceProcess(process, port)


# --- the Vision stand-in --------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeVision:
    """Handle on a running `testkit.fake_vision` process (its /_control endpoints)."""

    process: Process
    port: int
    api_key: str | None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _control(self, method: str, name: str, value: Any = None) -> Any:
        response = httpx.request(
            method,
            f"{self.url}/_control/{name}",
            content=None if value is None else json.dumps(value),
            timeout=5.0,
        )
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self._control("POST", "reset")

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._control("GET", "stats")
        return result

    def request_count(self) -> int:
        return int(self.stats()["requests"])

    def requests(self) -> list[dict[str, Any]]:
        return list(self.stats()["log"])

    def set_labels(self, labels: list[dict[str, Any]]) -> None:
        self._control("PUT", "labels", labels)

    def script(self, steps: list[dict[str, Any]], default: dict[str, Any] | None = None) -> None:
        self._control("PUT", "script", {"steps": steps, "default": default})


@contextlib.contextmanager
def running_fake_vision(log_dir: Path, api_key: str | None) -> Iterator[FakeVision]:
    port = free_port()
    argv = python_argv("-m", "testkit.fake_vision", "--port", str(port))
    if api_key is not None:
        argv += ["--api-key", api_key]
    ready = f"http://127.0.0.1:{port}/_control/health"
    with running(f"fake-vision-{port}", argv, log_dir, ready_url=ready, timeout=15.0) as process:
        yield FakeVision(process, port, api_key)
