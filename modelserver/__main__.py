"""`python -m modelserver [flags]` serves; `python -m modelserver convert` pre-builds the cache.

Models are converted (or read from the verified cache) and loaded before any port opens, so an
open port means ready, like TF Serving. SIGTERM/SIGINT stop REST first, then gRPC with a grace
period for requests in flight.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import uvicorn

from common.env import ConfigError
from modelserver.config import (
    ServerConfig,
    default_cache_dir,
    env_table_markdown,
    parse_config,
)
from modelserver.convert import ARCHITECTURES, ensure_onnx
from modelserver.grpc_api import start_grpc_server
from modelserver.registry import ModelRegistry
from modelserver.rest_api import create_app
from modelserver.vision_api import VisionStandinSettings

log = logging.getLogger("modelserver")
GRPC_GRACE_SECONDS = 5.0


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def convert_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelserver convert",
        description="Build ONNX files from the shipped weights into the cache (image build).",
    )
    parser.add_argument("--model_cache_dir", type=Path, default=default_cache_dir())
    parser.add_argument(
        "architectures", nargs="*", help=f"any of {sorted(ARCHITECTURES)} (default: all)"
    )
    args = parser.parse_args(list(argv))
    unknown = sorted(set(args.architectures) - set(ARCHITECTURES))
    if unknown:
        parser.error(f"unknown architectures {unknown}; known: {sorted(ARCHITECTURES)}")
    _setup_logging("INFO")
    for name in args.architectures or list(ARCHITECTURES):
        converted = ensure_onnx(ARCHITECTURES[name], args.model_cache_dir)
        state = "built" if converted.built else "already cached (checksum ok)"
        print(f"{name}: {converted.path} {state} in {converted.seconds:.2f}s")
    return 0


def serve(config: ServerConfig) -> int:
    started = time.perf_counter()
    registry = ModelRegistry(config.cache_dir, config.intra_op_threads, config.batching)
    for spec in config.models:
        registry.load(spec)
    grpc_server, grpc_port = start_grpc_server(
        registry, config.host, config.grpc_port, config.grpc_max_workers
    )
    log.info("gRPC PredictionService on %s:%d", config.host, grpc_port)
    stop = threading.Event()
    rest_server: _RestServer | None = None

    def request_stop(signum: int, _frame: object) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()
        if rest_server is not None:
            rest_server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, request_stop)
    try:
        if config.rest_port:
            vision = VisionStandinSettings(
                config.vision_model, config.vision_api_key, config.vision_safe_search_model
            )
            app = create_app(registry, vision)
            rest_server = _RestServer(
                uvicorn.Config(
                    app,
                    host=config.host,
                    port=config.rest_port,
                    access_log=False,
                    log_level=config.log_level.lower(),
                    timeout_graceful_shutdown=int(GRPC_GRACE_SECONDS),
                )
            )
            log.info(
                "REST API on http://%s:%d (ready %.2fs after start)",
                config.host,
                config.rest_port,
                time.perf_counter() - started,
            )
            rest_server.run()
        else:
            log.info("REST disabled; ready %.2fs after start", time.perf_counter() - started)
            stop.wait()
    finally:
        grpc_server.stop(GRPC_GRACE_SECONDS).wait()
        registry.close()
        log.info("stopped")
    return 0


class _RestServer(uvicorn.Server):
    """uvicorn without its own signal handling: it would re-raise SIGTERM after its shutdown and
    kill the process before the gRPC server drains. `serve` owns the signals instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "convert":
        return convert_main(args[1:])
    if args == ["--print-env-table"]:
        print(env_table_markdown())
        return 0
    try:
        config = parse_config(args)
    except ConfigError as exc:
        print(f"modelserver: configuration error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config.log_level)
    return serve(config)


if __name__ == "__main__":
    sys.exit(main())
