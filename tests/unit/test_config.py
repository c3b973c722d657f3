"""Configuration from the environment: typed values, aliases, *_FILE secrets, clear errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli.config_table import config_table, describe_markdown, load_all_settings_modules
from common.classifier import ResultSettings
from common.env import REGISTRY, ConfigError, Env, EnvVar
from common.runtime import RuntimeSettings
from common.s3 import S3Settings
from common.tfserving import TFServingSettings
from common.vision import VisionSettings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults() -> None:
    runtime = RuntimeSettings.from_env({})
    assert (runtime.port, runtime.host, runtime.log_level) == (8080, "127.0.0.1", "INFO")
    s3 = S3Settings.from_env({})
    assert s3.endpoint_url is None and s3.region == "default"
    assert TFServingSettings.from_env({}).endpoint == "localhost:8500"
    assert VisionSettings.from_env({}).endpoint == "https://vision.googleapis.com"


def test_standard_aws_names() -> None:
    s3 = S3Settings.from_env(
        {
            "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:7480/",
            "AWS_ACCESS_KEY_ID": "AK",
            "AWS_SECRET_ACCESS_KEY": "SK",
            "AWS_REGION": "zg1",
        }
    )
    assert s3.endpoint_url == "http://127.0.0.1:7480"
    assert s3.access_key_id is not None and s3.access_key_id.reveal() == "AK"
    assert s3.secret_access_key is not None and s3.secret_access_key.reveal() == "SK"
    assert s3.region == "zg1"


def test_seed_names_and_bare_hostname() -> None:
    s3 = S3Settings.from_env(
        {
            "S3_HOSTNAME": "rook-ceph-rgw-my-store.rook-ceph:80",
            "S3_ACCESS_KEY_ID": "AK",
            "S3_SECRET_ACCESS_KEY": "SK",
        }
    )
    assert s3.endpoint_url == "http://rook-ceph-rgw-my-store.rook-ceph:80"
    assert s3.access_key_id is not None and s3.access_key_id.reveal() == "AK"


def test_standard_name_wins_over_alias() -> None:
    s3 = S3Settings.from_env(
        {"AWS_ENDPOINT_URL": "http://a:1", "AWS_ENDPOINT_URL_S3": "http://b:2"}
    )
    assert s3.endpoint_url == "http://b:2"


def test_secret_from_file_is_read_and_never_shown(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cr3t-value\n")
    s3 = S3Settings.from_env({"AWS_SECRET_ACCESS_KEY_FILE": str(secret_file)})
    assert s3.secret_access_key is not None
    assert s3.secret_access_key.reveal() == "s3cr3t-value"
    assert "s3cr3t" not in repr(s3) and "s3cr3t" not in str(s3)


def test_unreadable_secret_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GOOGLE_VISION_API_KEY_FILE: cannot read"):
        VisionSettings.from_env({"GOOGLE_VISION_API_KEY_FILE": str(tmp_path / "missing")})


@pytest.mark.parametrize(
    ("settings", "environ", "message"),
    [
        (
            RuntimeSettings,
            {"PORT": "eighty"},
            r"^PORT: expected an integer from 1 to 65535, got 'eighty'",
        ),
        (RuntimeSettings, {"PORT": "70000"}, r"^PORT: expected an integer from 1 to 65535"),
        (RuntimeSettings, {"LOG_LEVEL": "loud"}, r"^LOG_LEVEL: expected DEBUG"),
        (S3Settings, {"AWS_ENDPOINT_URL_S3": "ftp://x"}, r"^AWS_ENDPOINT_URL_S3: expected an http"),
        (
            S3Settings,
            {"S3_MAX_OBJECT_BYTES": "-5"},
            r"^S3_MAX_OBJECT_BYTES: expected an integer >= 1",
        ),
        (ResultSettings, {"TAG_OBJECTS": "maybe"}, r"^TAG_OBJECTS: expected true or false"),
        (ResultSettings, {"TOP_K": "0"}, r"^TOP_K: expected an integer from 1 to 100"),
        (TFServingSettings, {"RESNET_SERVING_ENDPOINT": "nohost"}, r"expected host:port"),
        (VisionSettings, {"VISION_ENDPOINT": "vision"}, r"^VISION_ENDPOINT: expected an http"),
    ],
)
def test_malformed_values_name_the_variable(
    settings: type, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        settings.from_env(environ)  # type: ignore[attr-defined]


def test_malformed_secret_is_not_echoed() -> None:
    # No setting parses a secret today; the formatter still must not echo one.
    var = EnvVar("SOME_SECRET", "x", "g", secret=True)
    with pytest.raises(ConfigError) as info:
        Env({"SOME_SECRET": "hunter2"}).integer(var)
    assert "hunter2" not in str(info.value)


def test_every_variable_is_documented_once() -> None:
    names = [name for var in load_all_settings_modules() for name in var.names]
    assert len(names) == len(set(names)), "a variable is declared twice"
    assert all(var.help for var in REGISTRY)


def test_readme_table_is_generated_from_the_registry() -> None:
    readme = README.read_text()
    match = re.search(r"<!-- config-table:start -->\n(.*?)<!-- config-table:end -->", readme, re.S)
    assert match, "README.md lacks the generated configuration table markers"
    assert match.group(1).strip() == describe_markdown(load_all_settings_modules()).strip(), (
        "README's variable table is stale: regenerate it with `make docs`"
    )


def test_config_command_prints_the_readme_table() -> None:
    """`python -m cli config` (`rgw-inference config`) prints exactly the table README embeds."""
    printed = subprocess.run(
        [sys.executable, "-m", "cli", "config"],
        cwd=README.parent,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert printed == config_table()
    readme = README.read_text()
    assert f"<!-- config-table:start -->\n{printed}<!-- config-table:end -->" in readme


def test_every_settings_module_is_in_the_table() -> None:
    """A variable declared in a module the table does not import would be missing from README."""
    import modelserver.config  # noqa: F401  (reads the model server's variables)
    import source.__main__  # noqa: F401  (reads the source's variables)

    listed = {id(var) for var in load_all_settings_modules()}
    assert [var.name for var in REGISTRY if id(var) not in listed] == []
