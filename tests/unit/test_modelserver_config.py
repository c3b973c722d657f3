"""Flags and environment variables of `python -m modelserver`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.env import ConfigError
from modelserver.config import parse_config


def test_defaults_serve_the_three_models_on_tf_serving_ports() -> None:
    config = parse_config([], env={})
    assert (config.host, config.grpc_port, config.rest_port) == ("127.0.0.1", 8500, 8501)
    assert [(m.name, m.kind) for m in config.models] == [
        ("mobilenet_v2", "mobilenet_v2"),
        ("efficientnet_lite0", "efficientnet_lite0"),
        ("open_nsfw", "open_nsfw"),
    ]
    assert config.vision_api_key is None


def test_knative_port_and_env_defaults_flags_win(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    env = {"PORT": "9000", "MODELSERVER_REST_PORT": "0", "VISION_API_KEY_FILE": str(key_file)}
    config = parse_config([], env=env)
    assert (config.grpc_port, config.rest_port, config.vision_api_key) == (9000, 0, "s3cret")
    assert parse_config(["--port", "9100"], env=env).grpc_port == 9100


def test_single_model_with_kind() -> None:
    config = parse_config(["--model_name", "resnet", "--model_kind", "image_bytes"], env={})
    assert [(m.name, m.kind, m.version) for m in config.models] == [("resnet", "image_bytes", 1)]


def test_unknown_kind_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown kind 'resnet'"):
        parse_config(["--model_name", "resnet"], env={})


def test_model_config_file(tmp_path: Path) -> None:
    path = tmp_path / "models.json"
    entries: list[dict[str, object]] = [
        {"name": "a", "model_kind": "efficientnet_lite0", "version": 3},
        {"name": "b"},
    ]
    path.write_text(json.dumps({"model_config_list": {"config": entries}}))
    with pytest.raises(ConfigError, match="unknown kind 'b'"):
        parse_config(["--model_config_file", str(path)], env={})
    entries[1]["model_kind"] = "image_bytes"
    path.write_text(json.dumps({"model_config_list": {"config": entries}}))
    config = parse_config(["--model_config_file", str(path)], env={})
    assert [(m.name, m.kind, m.version) for m in config.models] == [
        ("a", "efficientnet_lite0", 3),
        ("b", "image_bytes", 1),
    ]


def test_bad_env_integer_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="MODELSERVER_REST_PORT"):
        parse_config([], env={"MODELSERVER_REST_PORT": "http"})


def test_defaults_come_from_the_declared_variables() -> None:
    from modelserver import settings

    config = parse_config([], env={"XDG_CACHE_HOME": "/var/cache/x"})
    assert config.grpc_max_workers == int(str(settings.GRPC_WORKERS.default)) == 8
    assert config.vision_model == settings.VISION_MODEL.default
    assert config.cache_dir == Path("/var/cache/x/rgw-knative-inference/models")
    assert parse_config([], env={"MODELSERVER_GRPC_WORKERS": "3"}).grpc_max_workers == 3
    assert (
        parse_config(
            ["--grpc_max_workers", "2"], env={"MODELSERVER_GRPC_WORKERS": "3"}
        ).grpc_max_workers
        == 2
    )


def test_port_wins_over_the_modelserver_variable_and_a_bad_one_is_named() -> None:
    env = {"PORT": "9001", "MODELSERVER_GRPC_PORT": "9002"}
    assert parse_config([], env=env).grpc_port == 9001
    assert parse_config([], env={"MODELSERVER_GRPC_PORT": "9002"}).grpc_port == 9002
    with pytest.raises(ConfigError, match=r"^PORT: expected an integer, got 'h2c'"):
        parse_config([], env={"PORT": "h2c"})
    with pytest.raises(ConfigError, match="must be >= 1"):
        parse_config([], env={"MODELSERVER_INTRA_OP_THREADS": "0"})


def test_vision_key_flag_wins_and_a_missing_key_file_is_a_config_error(tmp_path: Path) -> None:
    env = {"VISION_API_KEY": "from-env", "VISION_API_KEY_FILE": str(tmp_path / "none")}
    assert parse_config([], env=env).vision_api_key == "from-env"
    assert parse_config(["--vision_api_key", "flag"], env=env).vision_api_key == "flag"
    with pytest.raises(ConfigError, match="VISION_API_KEY_FILE: cannot read"):
        parse_config([], env={"VISION_API_KEY_FILE": str(tmp_path / "none")})
    (tmp_path / "empty").write_text("\n")
    assert (
        parse_config([], env={"VISION_API_KEY_FILE": str(tmp_path / "empty")}).vision_api_key
        is None
    )


def test_the_model_server_imports_nothing_its_image_lacks() -> None:
    """The modelserver image installs modelserver/requirements.txt only: no boto3 (the
    functions' S3 client) and no httpx (the Vision client). A shared module of common/ that
    starts importing either breaks the image build (`python -m modelserver convert`)."""
    import subprocess
    import sys

    probe = (
        "import sys; import modelserver.rest_api, modelserver.grpc_api, modelserver.vision_api, "
        "modelserver.convert; print(sorted(m for m in ('boto3', 'httpx') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
