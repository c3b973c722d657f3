"""RGW's push to the HTTP receive adapter, authenticated by a secret in the push endpoint's path.

RGW 16.2 and 18.2 push to an HTTP endpoint with no credentials of their own: no signature, no
Authorization header they make. What both keep exactly is the push endpoint's URL, path included,
which the topic stores and every queued entry copies. So one secret (SOURCE_PUSH_SECRET, or a
file named by SOURCE_PUSH_SECRET_FILE) serves both ends: the set-up appends it to the endpoint's
path as its last segment (`http://rgw-source/<secret>`), and the adapter refuses, with 401, any
push whose path does not end in it, before reading the body. It is compared in constant time
and never logged; `endpoint_for_logs` and `redact` take it out of what is shown.

A second, older secret (SOURCE_PUSH_SECRET_PREVIOUS) is accepted too while a rotation is under
way: RGW's persistent queue keeps each entry's endpoint as it was when the entry was queued, so
entries queued before the topic was re-pointed still carry the old one.

The same secret is also accepted as the password of `Authorization: Basic` (any user name): RGW
16.2 and 18.2 send an endpoint's `user:password@` that way, but store such a topic only when the
request creating it reached RGW over TLS (docs/source.md, "Push authentication").
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from common.env import ConfigError, Env
from source.settings import SOURCE_PUSH_SECRET, SOURCE_PUSH_SECRET_PREVIOUS

# A path segment as it is, with no percent-encoding to disagree about: RFC 3986 unreserved.
_SECRET = re.compile(r"^[A-Za-z0-9._~-]{24,256}$")
REDACTED = "***"


@dataclass(frozen=True)
class PushAuth:
    """The secret the push endpoint's path must end in (and, during a rotation, the old one)."""

    secret: str
    previous: str | None = None

    def __post_init__(self) -> None:
        for name, value in (
            (SOURCE_PUSH_SECRET.name, self.secret),
            (SOURCE_PUSH_SECRET_PREVIOUS.name, self.previous),
        ):
            if value is not None and not _SECRET.match(value):
                # Never echo the value: the message goes to stderr and the pod's log.
                raise ConfigError(
                    f"{name}: expected 24-256 letters, digits or '._~-' (it becomes a URL path "
                    "segment), e.g. from `python -c 'import secrets; print(secrets."
                    "token_urlsafe(32))'`"
                )

    @classmethod
    def from_env(cls, env: Env) -> PushAuth | None:
        """None when SOURCE_PUSH_SECRET is unset: the adapter then accepts every push."""
        secret = env.secret(SOURCE_PUSH_SECRET)
        if secret is None:
            if env.secret(SOURCE_PUSH_SECRET_PREVIOUS) is not None:
                raise ConfigError(
                    f"{SOURCE_PUSH_SECRET_PREVIOUS.name} is set but {SOURCE_PUSH_SECRET.name} "
                    "is not"
                )
            return None
        previous = env.secret(SOURCE_PUSH_SECRET_PREVIOUS)
        return cls(secret.reveal(), previous.reveal() if previous is not None else None)

    def accepts(self, path: str) -> bool:
        """Whether the (decoded) request path's last segment is an accepted secret."""
        return self.matches(path.rstrip("/").rsplit("/", 1)[-1])

    def matches(self, presented: str) -> bool:
        """Whether `presented` is an accepted secret, compared in constant time."""
        value = presented.encode()
        # Both comparisons always run, so timing tells nothing about which one matched.
        current = hmac.compare_digest(value, self.secret.encode())
        old = hmac.compare_digest(value, (self.previous or self.secret).encode())
        return current or old

    def accepts_request(self, path: str, authorization: str | None) -> bool:
        """The path's last segment, or else the password of `Authorization: Basic`, is an
        accepted secret."""
        if self.accepts(path):
            return True
        scheme, _, credentials = (authorization or "").partition(" ")
        if scheme.lower() != "basic" or not credentials:
            return False
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        return self.matches(decoded.partition(":")[2])

    def endpoint(self, endpoint: str) -> str:
        """`endpoint` with the secret appended as the last path segment (what RGW is given)."""
        parts = urlsplit(endpoint)
        return parts._replace(path=f"{parts.path.rstrip('/')}/{self.secret}").geturl()

    def redact(self, text: str) -> str:
        """`text` with every accepted secret replaced by ***."""
        for value in (self.secret, self.previous):
            if value:
                text = text.replace(value, REDACTED)
        return text


def endpoint_for_logs(endpoint: str) -> str:
    """An endpoint whose last path segment is a push secret, as it may be shown: *** instead."""
    parts = urlsplit(endpoint)
    head = parts.path.rstrip("/").rsplit("/", 1)[0]
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return parts._replace(netloc=netloc, path=f"{head}/{REDACTED}").geturl()


def applies_to(endpoint: str) -> bool:
    """Only HTTP(S) pushes carry the secret: an AMQP topic authenticates RGW to the broker with
    the broker's own credentials, and the source then consumes a queue, not a push."""
    return urlsplit(endpoint).scheme in ("http", "https")
