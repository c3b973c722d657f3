"""Server settings from TF Serving-style flags, with environment variables as defaults (Knative).

Precedence: command-line flag > environment variable > built-in default. `ENV_VARS` is the one list
of variables this server reads (docs/modelserver.md's table is printed from it by
`python -m modelserver --print-env-table`).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.env import ConfigError, Env
from modelserver import settings
from modelserver.batching import BatchingParameters, read_batching_parameters
from modelserver.registry import KINDS, ModelSpec

DEFAULT_MODELS = (
    ModelSpec("mobilenet_v2", "mobilenet_v2"),
    ModelSpec("efficientnet_lite0", "efficientnet_lite0"),
    ModelSpec("open_nsfw", "open_nsfw"),
)


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    base = Env(environ).string(settings.XDG_CACHE_HOME) or str(Path.home() / ".cache")
    return Path(base) / "rgw-knative-inference" / "models"


def default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


# name -> (flag it defaults, meaning), for `--print-env-table`; declared in modelserver.settings.
ENV_VARS: dict[str, tuple[str, str]] = {
    "PORT": ("--port", "gRPC port; Knative sets it to the container port (declare it `h2c`)"),
    **settings.FLAGS,
    "VISION_API_KEY_FILE": ("--vision_api_key", "file holding that key (for mounted secrets)"),
}


@dataclass(frozen=True)
class ServerConfig:
    """What `parse_config` made of flags and variables (the defaults are modelserver.settings')."""

    host: str
    grpc_port: int
    rest_port: int
    models: tuple[ModelSpec, ...]
    cache_dir: Path
    intra_op_threads: int
    grpc_max_workers: int
    vision_api_key: str | None
    vision_model: str
    log_level: str
    vision_safe_search_model: str = "open_nsfw"
    batching: BatchingParameters | None = None


def _port(value: int, what: str) -> int:
    if not 0 <= value <= 65535:
        raise ConfigError(f"{what} {value} is not a TCP port")
    return value


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The flags, each defaulting to its variable (read now, so a malformed one fails here)."""
    env = Env(environ)
    grpc_port = env.optional_integer(settings.KNATIVE_PORT)
    threads = env.optional_integer(settings.INTRA_OP_THREADS)
    parser = argparse.ArgumentParser(
        prog="python -m modelserver",
        description="TensorFlow Serving-compatible model server (gRPC + REST) on onnxruntime. "
        "Subcommand: `python -m modelserver convert` builds the ONNX cache ahead of time.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=env.integer(settings.GRPC_PORT) if grpc_port is None else grpc_port,
        help=f"gRPC port ({settings.GRPC_PORT.default})",
    )
    parser.add_argument(
        "--rest_api_port",
        type=int,
        default=env.integer(settings.REST_PORT),
        help=f"REST port ({settings.REST_PORT.default}); 0 disables the REST API",
    )
    parser.add_argument("--host", default=env.required_str(settings.HOST))
    parser.add_argument("--model_name", help="serve one model under this name")
    parser.add_argument(
        "--model_kind", choices=KINDS, help="kind of --model_name (default: the name)"
    )
    parser.add_argument(
        "--model_base_path",
        type=Path,
        help="weights for --model_name: a legacy .pth, or an open_nsfw .onnx",
    )
    parser.add_argument("--model_version", type=int, default=1, help="version of --model_name")
    parser.add_argument(
        "--model_config_file",
        type=Path,
        default=env.string(settings.MODEL_CONFIG_FILE),
        help='JSON: {"model_config_list": {"config": [{"name", "model_kind", '
        '"base_path"?, "version"?}, ...]}}',
    )
    parser.add_argument(
        "--model_cache_dir",
        type=Path,
        default=env.string(settings.MODEL_CACHE_DIR) or default_cache_dir(environ),
    )
    parser.add_argument(
        "--intra_op_threads", type=int, default=default_threads() if threads is None else threads
    )
    parser.add_argument("--grpc_max_workers", type=int, default=env.integer(settings.GRPC_WORKERS))
    parser.add_argument(
        "--vision_api_key", default=None, help="require this key on images:annotate"
    )
    parser.add_argument("--vision_model", default=env.required_str(settings.VISION_MODEL))
    parser.add_argument(
        "--vision_safe_search_model", default=env.required_str(settings.VISION_SAFE_SEARCH_MODEL)
    )
    parser.add_argument("--log_level", default=env.required_str(settings.LOG_LEVEL))
    parser.add_argument(
        "--enable_batching",
        nargs="?",
        const=True,
        default=env.flag(settings.ENABLE_BATCHING),
        type=_flag_value,
        metavar="true|false",
        help="batch concurrent Predicts of one model (TF Serving's flag; bare = true)",
    )
    parser.add_argument(
        "--batching_parameters_file",
        type=Path,
        default=env.string(settings.BATCHING_PARAMETERS_FILE),
        help="BatchingParameters text proto: max_batch_size, batch_timeout_micros, "
        "max_enqueued_batches, num_batch_threads, allowed_batch_sizes",
    )
    return parser


def _flag_value(value: str) -> bool:
    """TF Serving's boolean flags: `--enable_batching`, `--enable_batching=false`."""
    lowered = value.strip().lower()
    if lowered in {"true", "1", "yes"}:
        return True
    if lowered in {"false", "0", "no"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _batching(args: argparse.Namespace) -> BatchingParameters | None:
    if not args.enable_batching:
        if args.batching_parameters_file:
            raise ConfigError(
                "--batching_parameters_file is only read with --enable_batching "
                "(MODELSERVER_ENABLE_BATCHING=true)"
            )
        return None
    if args.batching_parameters_file:
        return read_batching_parameters(Path(args.batching_parameters_file))
    return BatchingParameters()


def _vision_key(flag: str | None, environ: Mapping[str, str]) -> str | None:
    if flag:
        return flag
    # VISION_API_KEY, else the file VISION_API_KEY_FILE names (the engine reads both).
    key = Env(environ).secret(settings.VISION_API_KEY)
    return (key.reveal() or None) if key is not None else None


def read_model_config_file(path: Path) -> tuple[ModelSpec, ...]:
    """Models from a JSON file shaped like TF Serving's ModelServerConfig in its JSON form."""
    try:
        document = json.loads(path.read_text())
        entries = document["model_config_list"]["config"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f'--model_config_file {path}: expected JSON {{"model_config_list": {{"config": '
            f"[...]}}}} ({exc})"
        ) from exc
    specs = []
    for entry in entries:
        try:
            name = str(entry["name"])
            kind = str(entry.get("model_kind") or name)
            base_path = entry.get("base_path")
            spec = ModelSpec(
                name,
                kind,
                int(entry.get("version", 1)),
                Path(base_path) if base_path else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"--model_config_file {path}: bad entry {entry!r}: {exc}") from exc
        specs.append(spec)
    if not specs:
        raise ConfigError(f"--model_config_file {path} lists no models")
    return tuple(specs)


def parse_config(argv: Sequence[str], env: Mapping[str, str] | None = None) -> ServerConfig:
    """Flags > environment variables > defaults; ConfigError names what is wrong."""
    env = os.environ if env is None else env
    args = build_parser(env).parse_args(list(argv))
    if args.model_config_file and args.model_name:
        raise ConfigError("give either --model_config_file or --model_name, not both")
    models: tuple[ModelSpec, ...]
    try:
        if args.model_config_file:
            models = read_model_config_file(Path(args.model_config_file))
        elif args.model_name:
            models = (
                ModelSpec(
                    args.model_name,
                    args.model_kind or args.model_name,
                    args.model_version,
                    args.model_base_path,
                ),
            )
        else:
            models = DEFAULT_MODELS
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    names = [m.name for m in models]
    if len({(m.name, m.version) for m in models}) != len(models):
        raise ConfigError(f"model names/versions repeat: {names}")
    if args.intra_op_threads < 1 or args.grpc_max_workers < 1:
        raise ConfigError("--intra_op_threads and --grpc_max_workers must be >= 1")
    return ServerConfig(
        host=args.host,
        grpc_port=_port(args.port, "--port"),
        rest_port=_port(args.rest_api_port, "--rest_api_port"),
        models=models,
        cache_dir=Path(args.model_cache_dir),
        intra_op_threads=args.intra_op_threads,
        grpc_max_workers=args.grpc_max_workers,
        vision_api_key=_vision_key(args.vision_api_key, env),
        vision_model=args.vision_model,
        vision_safe_search_model=args.vision_safe_search_model,
        log_level=str(args.log_level).upper(),
        batching=_batching(args),
    )


def env_table_markdown() -> str:
    rows = ["| Variable | Flag | Meaning |", "| --- | --- | --- |"]
    rows += [f"| `{name}` | `{flag}` | {meaning} |" for name, (flag, meaning) in ENV_VARS.items()]
    return "\n".join(rows)
