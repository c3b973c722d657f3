"""The model server's environment variables, declared in the project's one registry.

Each one is the default of a TF Serving-style flag (flag > variable > built-in default);
`modelserver.config` reads them with the project's engine (`common.env`), `rgw-inference config`
documents them with all the others.
"""

from __future__ import annotations

from common.env import EnvVar, env_var

GROUP = "Model server (modelserver); `PORT`, when set, is its gRPC port"

# Knative's container port. The function runtime declares (and documents) PORT with its own
# default, 8080; here it only counts when set, so it is read without joining the registry.
KNATIVE_PORT = EnvVar("PORT", "gRPC port when set (Knative's container port).", GROUP)
# The XDG base directory the default model cache lives under (not the project's to document).
XDG_CACHE_HOME = EnvVar("XDG_CACHE_HOME", "Base of per-user caches (default ~/.cache).", GROUP)

# variable -> (the flag whose default it sets, what it means)
FLAGS: dict[str, tuple[str, str]] = {}


def _flag_var(
    name: str, flag: str, help: str, default: str | None = None, secret: bool = False
) -> EnvVar:
    FLAGS[name] = (flag, help)
    return env_var(name, f"`{flag}`: {help}", GROUP, default, secret=secret)


GRPC_PORT = _flag_var("MODELSERVER_GRPC_PORT", "--port", "gRPC port when PORT is not set.", "8500")
REST_PORT = _flag_var(
    "MODELSERVER_REST_PORT", "--rest_api_port", "REST port; 0 disables REST.", "8501"
)
HOST = _flag_var("MODELSERVER_HOST", "--host", "Address to bind; images set 0.0.0.0.", "127.0.0.1")
MODEL_CONFIG_FILE = _flag_var(
    "MODELSERVER_MODEL_CONFIG_FILE", "--model_config_file", "JSON model config list."
)
MODEL_CACHE_DIR = _flag_var(
    "MODELSERVER_MODEL_CACHE_DIR",
    "--model_cache_dir",
    "Where converted .onnx files are cached "
    "(default $XDG_CACHE_HOME/rgw-knative-inference/models).",
)
INTRA_OP_THREADS = _flag_var(
    "MODELSERVER_INTRA_OP_THREADS",
    "--intra_op_threads",
    "ONNX Runtime threads per request (default min(4, CPUs)).",
)
GRPC_WORKERS = _flag_var(
    "MODELSERVER_GRPC_WORKERS", "--grpc_max_workers", "gRPC worker threads.", "8"
)
VISION_API_KEY = _flag_var(
    "VISION_API_KEY",
    "--vision_api_key",
    "Key the Vision stand-in requires; unset means no key check.",
    secret=True,
)
VISION_MODEL = _flag_var(
    "MODELSERVER_VISION_MODEL",
    "--vision_model",
    "Model behind the Vision stand-in.",
    "efficientnet_lite0",
)
VISION_SAFE_SEARCH_MODEL = _flag_var(
    "MODELSERVER_VISION_SAFE_SEARCH_MODEL",
    "--vision_safe_search_model",
    "open_nsfw model behind the Vision stand-in's SAFE_SEARCH_DETECTION.",
    "open_nsfw",
)
ENABLE_BATCHING = _flag_var(
    "MODELSERVER_ENABLE_BATCHING",
    "--enable_batching",
    "Batch concurrent Predicts of one model into one onnxruntime run.",
    "false",
)
BATCHING_PARAMETERS_FILE = _flag_var(
    "MODELSERVER_BATCHING_PARAMETERS_FILE",
    "--batching_parameters_file",
    "BatchingParameters in protobuf text format (needs batching on; default: built-in values).",
)
LOG_LEVEL = _flag_var("MODELSERVER_LOG_LEVEL", "--log_level", "DEBUG, INFO or WARNING.", "INFO")
