"""The issuer's signing keys: fetched over HTTP(S), cached, refreshed when a token names a key we
do not have, at most once per `min_refresh` seconds, so a stranger sending made-up key ids cannot
make a function hammer the issuer.

Imported only when sender authentication is on (`common.auth`): it needs PyJWT and
`cryptography`, which a function without `AUTH_AUDIENCE` never loads.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

log = logging.getLogger("function.auth")

DISCOVERY_PATH = "/.well-known/openid-configuration"
MAX_DOCUMENT_BYTES = 1024 * 1024
FETCH_TIMEOUT = 5.0


class KeysUnavailable(Exception):
    """The issuer's keys could not be fetched (and none are cached)."""


@dataclass(frozen=True)
class KeySource:
    """Where the keys come from: a JWKS URL, or one named by an OIDC discovery document."""

    issuer: str
    jwks_url: str | None = None
    discovery_url: str | None = None
    ca_file: Path | None = None
    token_file: Path | None = None  # a bearer token for the fetch (Kubernetes' API server)


Fetch = Callable[[str], Mapping[str, Any]]


class HttpFetch:
    """GET a JSON document, verifying TLS with `ca_file` when given; the bearer token file is
    read on every fetch, since Kubernetes rotates projected tokens."""

    def __init__(self, ca_file: Path | None, token_file: Path | None) -> None:
        self._context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self._token_file = token_file

    def __call__(self, url: str) -> Mapping[str, Any]:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        if self._token_file is not None:
            token = self._token_file.read_text(encoding="utf-8").strip()
            request.add_header("Authorization", f"Bearer {token}")
        context = self._context if url.startswith("https://") else None
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT, context=context) as answer:
            body = answer.read(MAX_DOCUMENT_BYTES + 1)
        if len(body) > MAX_DOCUMENT_BYTES:
            raise ValueError(f"{url}: document over {MAX_DOCUMENT_BYTES} bytes")
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError(f"{url}: expected a JSON object")
        return document


def usable_keys(document: Mapping[str, Any], allowed: frozenset[str]) -> dict[str, jwt.PyJWK]:
    """kid -> key for every signing key of the JWKS whose algorithm is allowed. Symmetric (`oct`)
    keys are dropped whatever they claim: a public JWKS never holds a shared secret, and
    accepting one would let anyone who can read the JWKS sign."""
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document.get("keys", []):
        if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC"):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError):
            continue  # an unsupported curve or a malformed entry: skip it, keep the others
        if key.algorithm_name in allowed:
            keys[str(entry.get("kid", ""))] = key
    return keys


class KeyCache:
    """The cached JWKS. `get` is the hot path (a dict lookup); `refresh` does the I/O and is
    called from a worker thread by `common.auth`."""

    def __init__(
        self,
        source: KeySource,
        allowed: frozenset[str],
        max_age: float,
        min_refresh: float,
        fetch: Fetch | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._allowed = allowed
        self._max_age = max_age
        self._min_refresh = min_refresh
        self._fetch = fetch or HttpFetch(source.ca_file, source.token_file)
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._jwks_url = source.jwks_url
        self._lock = threading.Lock()
        self.fetches = 0  # how many times the JWKS was requested (tests, logs)

    def get(self, kid: str | None) -> jwt.PyJWK | None:
        keys = self._keys
        if kid is None:
            # A token without a kid is accepted only when the issuer has a single key.
            return next(iter(keys.values())) if len(keys) == 1 else None
        return keys.get(kid)

    @property
    def empty(self) -> bool:
        return not self._keys

    @property
    def stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at > self._max_age

    def may_refresh(self) -> bool:
        """Whether a refresh for an unknown kid is allowed now (the rate limit)."""
        last = self._attempted_at
        return last is None or self._clock() - last >= self._min_refresh

    def refresh(self, force: bool = False) -> bool:
        """Fetch the JWKS again if the rate limit allows (or `force`); True when it was fetched.
        Raises KeysUnavailable when it fails and no keys are cached."""
        with self._lock:
            if not force and not self.may_refresh():
                return False
            self._attempted_at = self._clock()
            self.fetches += 1
            try:
                keys = usable_keys(self._fetch(self._jwks_location()), self._allowed)
            except Exception as exc:  # any failure of the fetch: keep what we have
                log.warning(
                    "could not fetch the issuer's keys",
                    extra={"why": f"{type(exc).__name__}: {exc}"[:300]},
                )
                if not self._keys:
                    raise KeysUnavailable(str(exc)) from None
                return False
            self._keys = keys
            self._fetched_at = self._clock()
            log.info("issuer keys fetched", extra={"kids": sorted(keys)})
            return True

    def _jwks_location(self) -> str:
        if self._jwks_url is not None:
            return self._jwks_url
        url = self._source.discovery_url or self._source.issuer.rstrip("/") + DISCOVERY_PATH
        document = self._fetch(url)
        # OpenID Connect Discovery 1.0, section 4.3: the document must name the same issuer.
        if document.get("issuer") != self._source.issuer:
            raise ValueError(f"{url} names another issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("http://", "https://")):
            raise ValueError(f"{url} has no usable jwks_uri")
        self._jwks_url = jwks_uri
        return jwks_uri
