"""Every environment variable the project reads, parsed and validated in one place.

Each variable is declared once as an `EnvVar` (name, aliases, default, help, secret or not). The
settings classes below read them into typed, frozen dataclasses at start-up; a missing or malformed
value raises `ConfigError` naming the variable, and the runtime turns that into one clear line and a
non-zero exit. `python -m common.config` prints the Markdown table that the README embeds, so the
documentation is generated from this module and never typed twice.

Secrets (`secret=True`) may also come from a file named by `<NAME>_FILE` (Kubernetes secret mounts);
their values never appear in `repr()`, logs or error messages.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class EnvVar:
    name: str
    help: str
    group: str
    default: str | None = None
    aliases: tuple[str, ...] = ()
    secret: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


REGISTRY: list[EnvVar] = []


def env_var(
    name: str,
    help: str,
    group: str,
    default: str | None = None,
    aliases: tuple[str, ...] = (),
    secret: bool = False,
) -> EnvVar:
    var = EnvVar(name, help, group, default, aliases, secret)
    REGISTRY.append(var)
    return var


class Secret:
    """A string that does not show itself in repr/str, so settings objects are safe to log."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class Env:
    """Reads variables from a mapping (os.environ by default), honouring aliases and *_FILE."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def raw(self, var: EnvVar) -> str | None:
        for name in var.names:
            value = self._environ.get(name)
            if value is not None and value != "":
                return value
            if var.secret:
                path = self._environ.get(f"{name}_FILE")
                if path:
                    try:
                        with open(path, encoding="utf-8") as handle:
                            return handle.read().strip()
                    except OSError as exc:
                        raise ConfigError(
                            f"{name}_FILE: cannot read {path!r}: {exc.strerror}"
                        ) from None
        return var.default

    def _parse(self, var: EnvVar, parse: Callable[[str], T], what: str) -> T | None:
        value = self.raw(var)
        if value is None:
            return None
        try:
            return parse(value)
        except (ValueError, ConfigError):
            shown = "<secret>" if var.secret else repr(value)
            raise ConfigError(f"{var.name}: expected {what}, got {shown}") from None

    def string(self, var: EnvVar) -> str | None:
        return self.raw(var)

    def required_str(self, var: EnvVar) -> str:
        value = self.raw(var)
        if value is None:
            raise ConfigError(f"{_names(var)}: required but not set")
        return value

    def secret(self, var: EnvVar) -> Secret | None:
        value = self.raw(var)
        return None if value is None else Secret(value)

    def integer(self, var: EnvVar, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self._parse(
            var,
            lambda s: _bounded(int(s), minimum, maximum),
            _range("an integer", minimum, maximum),
        )
        if value is None:
            raise ConfigError(f"{_names(var)}: required but not set")
        return value

    def number(self, var: EnvVar, minimum: float | None = None) -> float:
        value = self._parse(
            var, lambda s: _bounded(float(s), minimum, None), _range("a number", minimum, None)
        )
        if value is None:
            raise ConfigError(f"{_names(var)}: required but not set")
        return value

    def flag(self, var: EnvVar) -> bool:
        value = self._parse(var, _parse_bool, "true or false")
        return bool(value)

    def csv(self, var: EnvVar) -> tuple[str, ...]:
        value = self.raw(var)
        if not value:
            return ()
        return tuple(item.strip() for item in value.split(",") if item.strip())


def _names(var: EnvVar) -> str:
    return " / ".join(var.names)


def _range(what: str, minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"{what} from {minimum} to {maximum}"
    if minimum is not None:
        return f"{what} >= {minimum}"
    return what


def _bounded(value: T, minimum: float | None, maximum: float | None) -> T:
    number = float(value)  # type: ignore[arg-type]
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ValueError("out of range")
    return value


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("not a boolean")


def _parse_endpoint_url(value: str) -> str:
    """Accept a URL, or a bare host[:port] as the seed's S3_HOSTNAME was (then http://)."""
    url = value if "://" in value else f"http://{value}"
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("not an http(s) URL")
    return url.rstrip("/")


# --- the function runtime -----------------------------------------------------------------------

RUNTIME = "Function runtime (every function container)"
PORT = env_var(
    "PORT", "Port the HTTP server listens on (Knative's runtime contract).", RUNTIME, "8080"
)
HOST = env_var(
    "HOST",
    "Address to bind. Loopback by default; container images set 0.0.0.0.",
    RUNTIME,
    "127.0.0.1",
)
LOG_LEVEL = env_var("LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR.", RUNTIME, "INFO")
MAX_EVENT_BYTES = env_var(
    "MAX_EVENT_BYTES",
    "Largest CloudEvent request body accepted; larger gets 413.",
    RUNTIME,
    str(1024 * 1024),
)
MAX_RECORDS_PER_EVENT = env_var(
    "MAX_RECORDS_PER_EVENT",
    "Most object records one CloudEvent may carry; more gets 413.",
    RUNTIME,
    "100",
)
DEDUP_WINDOW = env_var(
    "DEDUP_WINDOW",
    "How many recent CloudEvent ids a function remembers to drop redeliveries (0 = off).",
    RUNTIME,
    "10000",
)
K_SERVICE = env_var("K_SERVICE", "Set by Knative: service name, added to log lines.", RUNTIME)
K_REVISION = env_var("K_REVISION", "Set by Knative: revision name, added to log lines.", RUNTIME)
K_CONFIGURATION = env_var(
    "K_CONFIGURATION", "Set by Knative: configuration name, added to log lines.", RUNTIME
)


@dataclass(frozen=True)
class RuntimeSettings:
    port: int = 8080
    host: str = "127.0.0.1"
    log_level: str = "INFO"
    max_event_bytes: int = 1024 * 1024
    max_records_per_event: int = 100
    dedup_window: int = 10000
    k_service: str | None = None
    k_revision: str | None = None
    k_configuration: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RuntimeSettings:
        env = Env(environ)
        level = (env.string(LOG_LEVEL) or "INFO").upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError(f"LOG_LEVEL: expected DEBUG, INFO, WARNING or ERROR, got {level!r}")
        return cls(
            port=env.integer(PORT, 1, 65535),
            host=env.required_str(HOST),
            log_level=level,
            max_event_bytes=env.integer(MAX_EVENT_BYTES, 1024),
            max_records_per_event=env.integer(MAX_RECORDS_PER_EVENT, 1),
            dedup_window=env.integer(DEDUP_WINDOW, 0),
            k_service=env.string(K_SERVICE),
            k_revision=env.string(K_REVISION),
            k_configuration=env.string(K_CONFIGURATION),
        )


# --- S3 / Ceph RGW ------------------------------------------------------------------------------

S3 = "S3 / Ceph RGW (resnet, vision, source)"
S3_ENDPOINT = env_var(
    "AWS_ENDPOINT_URL_S3",
    "RGW endpoint URL. The only place objects are read from, never a URL found in an event. "
    "A bare host[:port] (the seed's S3_HOSTNAME) means http://.",
    S3,
    aliases=("AWS_ENDPOINT_URL", "S3_HOSTNAME"),
)
S3_ACCESS_KEY = env_var(
    "AWS_ACCESS_KEY_ID", "Access key id.", S3, aliases=("S3_ACCESS_KEY_ID",), secret=True
)
S3_SECRET_KEY = env_var(
    "AWS_SECRET_ACCESS_KEY",
    "Secret access key.",
    S3,
    aliases=("S3_SECRET_ACCESS_KEY",),
    secret=True,
)
S3_REGION = env_var(
    "AWS_REGION",
    "Region name; RGW's default zonegroup answers to 'default'.",
    S3,
    "default",
    aliases=("AWS_DEFAULT_REGION",),
)
S3_MAX_OBJECT_BYTES = env_var(
    "S3_MAX_OBJECT_BYTES",
    "Largest object a function downloads; larger is refused with 413 before reading it.",
    S3,
    str(20 * 1024 * 1024),
)
S3_CONNECT_TIMEOUT = env_var("S3_CONNECT_TIMEOUT", "Seconds to connect to RGW.", S3, "2")
S3_READ_TIMEOUT = env_var("S3_READ_TIMEOUT", "Seconds to wait for RGW to answer.", S3, "10")
S3_MAX_ATTEMPTS = env_var(
    "S3_MAX_ATTEMPTS", "Attempts per S3 call (bounded retries on transient errors).", S3, "3"
)
ALLOWED_BUCKETS = env_var(
    "ALLOWED_BUCKETS",
    "Comma-separated buckets a function may read; an event naming another gets 403. "
    "Empty: any bucket the credentials can read.",
    S3,
)


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str | None = None
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    region: str = "default"
    max_object_bytes: int = 20 * 1024 * 1024
    connect_timeout: float = 2.0
    read_timeout: float = 10.0
    max_attempts: int = 3
    allowed_buckets: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Settings:
        env = Env(environ)
        raw_endpoint = env.string(S3_ENDPOINT)
        endpoint = None
        if raw_endpoint is not None:
            try:
                endpoint = _parse_endpoint_url(raw_endpoint)
            except ValueError:
                raise ConfigError(
                    f"{S3_ENDPOINT.name}: expected an http(s) URL or host[:port], "
                    f"got {raw_endpoint!r}"
                ) from None
        return cls(
            endpoint_url=endpoint,
            access_key_id=env.secret(S3_ACCESS_KEY),
            secret_access_key=env.secret(S3_SECRET_KEY),
            region=env.required_str(S3_REGION),
            max_object_bytes=env.integer(S3_MAX_OBJECT_BYTES, 1),
            connect_timeout=env.number(S3_CONNECT_TIMEOUT, 0.01),
            read_timeout=env.number(S3_READ_TIMEOUT, 0.01),
            max_attempts=env.integer(S3_MAX_ATTEMPTS, 1, 10),
            allowed_buckets=env.csv(ALLOWED_BUCKETS),
        )


# --- what a classifier does with its result -----------------------------------------------------

RESULTS = "Classification results (resnet, vision)"
TOP_K = env_var("TOP_K", "How many classes to log and reply with.", RESULTS, "5")
TAG_OBJECTS = env_var(
    "TAG_OBJECTS",
    "Write the top label back to the object as S3 object tags (needs s3:PutObjectTagging).",
    RESULTS,
    "false",
)
REPLY_EVENTS = env_var(
    "REPLY_EVENTS",
    "Answer each event with a classification.result CloudEvent (Knative forwards it to `reply`).",
    RESULTS,
    "true",
)
MAX_IMAGE_PIXELS = env_var(
    "MAX_IMAGE_PIXELS",
    "Largest decoded image (width x height) accepted; more is a decompression bomb and gets 413.",
    RESULTS,
    str(40_000_000),
)


@dataclass(frozen=True)
class ResultSettings:
    top_k: int = 5
    tag_objects: bool = False
    reply_events: bool = True
    max_image_pixels: int = 40_000_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ResultSettings:
        env = Env(environ)
        return cls(
            top_k=env.integer(TOP_K, 1, 100),
            tag_objects=env.flag(TAG_OBJECTS),
            reply_events=env.flag(REPLY_EVENTS),
            max_image_pixels=env.integer(MAX_IMAGE_PIXELS, 1),
        )


# --- TensorFlow Serving (resnet) ----------------------------------------------------------------

TFSERVING = "TensorFlow Serving client (resnet)"
SERVING_ENDPOINT = env_var(
    "RESNET_SERVING_ENDPOINT",
    "host:port of the TF Serving gRPC API (the seed's name).",
    TFSERVING,
    "localhost:8500",
)
MODEL_NAME = env_var("MODEL_NAME", "Model name on the server.", TFSERVING, "resnet")
MODEL_SIGNATURE = env_var("MODEL_SIGNATURE", "Signature to call.", TFSERVING, "serving_default")
MODEL_TIMEOUT = env_var("MODEL_TIMEOUT", "Seconds per Predict call.", TFSERVING, "10")


@dataclass(frozen=True)
class TFServingSettings:
    endpoint: str = "localhost:8500"
    model_name: str = "resnet"
    signature: str = "serving_default"
    timeout: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TFServingSettings:
        env = Env(environ)
        endpoint = env.required_str(SERVING_ENDPOINT)
        host, _, port = endpoint.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"{SERVING_ENDPOINT.name}: expected host:port, got {endpoint!r}")
        return cls(
            endpoint=endpoint,
            model_name=env.required_str(MODEL_NAME),
            signature=env.required_str(MODEL_SIGNATURE),
            timeout=env.number(MODEL_TIMEOUT, 0.01),
        )


# --- Google Cloud Vision (vision) ---------------------------------------------------------------

VISION = "Google Cloud Vision client (vision)"
VISION_API_KEY = env_var(
    "GOOGLE_VISION_API_KEY", "API key (the seed's name). Never logged.", VISION, secret=True
)
VISION_ENDPOINT = env_var(
    "VISION_ENDPOINT",
    "Base URL of the Vision API; point it at the model server's stand-in for offline runs.",
    VISION,
    "https://vision.googleapis.com",
)
VISION_MAX_RESULTS = env_var(
    "VISION_MAX_RESULTS", "Labels asked for per image (the seed's --num-annotations).", VISION, "1"
)
VISION_TIMEOUT = env_var("VISION_TIMEOUT", "Seconds per HTTP attempt.", VISION, "10")
VISION_DEADLINE = env_var(
    "VISION_DEADLINE", "Seconds for all attempts of one call, retries included.", VISION, "30"
)


@dataclass(frozen=True)
class VisionSettings:
    api_key: Secret | None = None
    endpoint: str = "https://vision.googleapis.com"
    max_results: int = 1
    timeout: float = 10.0
    deadline: float = 30.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> VisionSettings:
        env = Env(environ)
        endpoint = env.required_str(VISION_ENDPOINT)
        try:
            endpoint = _parse_endpoint_url(endpoint) if "://" in endpoint else ""
        except ValueError:
            endpoint = ""
        if not endpoint:
            raise ConfigError(f"{VISION_ENDPOINT.name}: expected an http(s) URL")
        return cls(
            api_key=env.secret(VISION_API_KEY),
            endpoint=endpoint,
            max_results=env.integer(VISION_MAX_RESULTS, 1, 1000),
            timeout=env.number(VISION_TIMEOUT, 0.01),
            deadline=env.number(VISION_DEADLINE, 0.01),
        )


# --- the source ---------------------------------------------------------------------------------

SOURCE = "Source (RGW notifications to CloudEvents)"
K_SINK = env_var(
    "K_SINK",
    "Where CloudEvents go (injected by Knative ContainerSource / SinkBinding; or --sink).",
    SOURCE,
)
K_CE_OVERRIDES = env_var(
    "K_CE_OVERRIDES",
    'JSON {"extensions": {...}} applied to every outgoing event (Knative source contract).',
    SOURCE,
)
DEAD_LETTER_URL = env_var(
    "DEAD_LETTER_URL", "Where events the sink refuses for good (4xx) are sent.", SOURCE
)


def describe_markdown(registry: list[EnvVar] | None = None) -> str:
    """The README's table of variables, grouped as declared."""
    rows: list[str] = []
    group = None
    for var in registry if registry is not None else REGISTRY:
        if var.group != group:
            group = var.group
            rows += [
                "",
                f"**{group}**",
                "",
                "| variable | default | meaning |",
                "| --- | --- | --- |",
            ]
        names = " / ".join(f"`{n}`" for n in var.names)
        if var.secret:
            names += " (or `*_FILE`)"
        default = f"`{var.default}`" if var.default is not None else ""
        rows.append(f"| {names} | {default} | {var.help.replace('|', '/')} |")
    return "\n".join(rows).strip() + "\n"


# Containers with variables of their own declare them with `env_var` in these modules; the table
# generator imports them so one registry documents every variable the project reads.
EXTRA_SETTINGS_MODULES = ("source.settings", "modelserver.settings")


def load_all_settings_modules() -> list[EnvVar]:
    """Every declared variable: this module's, then each extra module's, each in declaration
    order. Not import order, which differs between a CLI run and a test session."""
    import importlib

    modules = [sys.modules[__name__]]
    for name in EXTRA_SETTINGS_MODULES:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    ordered: list[EnvVar] = []
    for module in modules:
        declared = {id(var) for var in vars(module).values() if isinstance(var, EnvVar)}
        ordered += [var for var in REGISTRY if id(var) in declared and var not in ordered]
    return ordered


def main() -> int:
    # Run as `python -m common.config`, this file is `__main__`, while the settings modules
    # register into the imported `common.config`: read that one.
    import common.config as registry

    sys.stdout.write(registry.describe_markdown(registry.load_all_settings_modules()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
