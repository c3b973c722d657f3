"""The one environment engine: every variable the project reads is declared and parsed here.

Each variable is declared once, with `env_var`, as an `EnvVar` (name, aliases, default, help,
secret or not) in the module that uses it, next to the settings class that reads it: the
function runtime, the S3 client, the classifier, the TF Serving and Vision clients, the source,
the model server. The settings classes read them into typed, frozen dataclasses at start-up; a
missing or malformed value raises `ConfigError` naming the variable, and the program turns that
into one clear line and a non-zero exit. Every declaration lands in `REGISTRY`, from which the
README's table of variables is generated (`rgw-inference config`), so the documentation is never
typed twice.

Secrets (`secret=True`) may also come from a file named by `<NAME>_FILE` (Kubernetes secret mounts);
their values never appear in `repr()`, logs or error messages.
"""

from __future__ import annotations

import os
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
        value = self.optional_integer(var, minimum, maximum)
        if value is None:
            raise ConfigError(f"{_names(var)}: required but not set")
        return value

    def optional_integer(
        self, var: EnvVar, minimum: int | None = None, maximum: int | None = None
    ) -> int | None:
        """The integer, or None when neither the variable nor a default gives one."""
        return self._parse(
            var,
            lambda s: _bounded(int(s), minimum, maximum),
            _range("an integer", minimum, maximum),
        )

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


def parse_endpoint_url(value: str) -> str:
    """Accept a URL, or a bare host[:port] as the seed's S3_HOSTNAME was (then http://)."""
    url = value if "://" in value else f"http://{value}"
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("not an http(s) URL")
    return url.rstrip("/")
