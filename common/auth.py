"""Sender authentication: a function checks the OIDC token Knative's senders attach.

With Knative Eventing's `authentication-oidc` feature, the channel dispatcher and the Broker's
filter send every event with `Authorization: Bearer <JWT>`: a Kubernetes service-account token
requested for the subscriber's audience, with the Subscription's (or Trigger's) OIDC service
account as `sub`. When `AUTH_AUDIENCE` is set, the runtime verifies it on every `POST /`
itself, so a pod reaching the function around the mesh still gets 401:

- the signature against the issuer's JWKS (`AUTH_JWKS_URL`, or the `jwks_uri` of the OIDC
  discovery document), with the algorithms of `AUTH_ALGORITHMS` only (never `none`, never HMAC);
- `aud` contains `AUTH_AUDIENCE`, `iss` is `AUTH_ISSUER`, `exp` is in the future and `nbf`
  (if present) in the past, both with `AUTH_LEEWAY_SECONDS`;
- with `AUTH_ALLOWED_SUBJECTS`, `sub` is one of them.

Unset, none of this is loaded: PyJWT is imported by `common.jwks` only when `AUTH_AUDIENCE` is
set. A token is never logged, nor any of its claims: the 401 and the log line name a reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from common.env import ConfigError, Env, env_var

if TYPE_CHECKING:
    from common.jwks import KeyCache

log = logging.getLogger("function.auth")

AUTH = "Function runtime: sender authentication (Knative OIDC tokens)"
AUTH_AUDIENCE = env_var(
    "AUTH_AUDIENCE",
    "Expected `aud` of the sender's token. Set: every POST / needs `Authorization: Bearer "
    "<JWT>` (401 otherwise). Unset: no check, and no JWT library is loaded.",
    AUTH,
)
AUTH_ISSUER = env_var(
    "AUTH_ISSUER",
    "Expected `iss` (the cluster's service-account issuer); required with AUTH_AUDIENCE.",
    AUTH,
)
AUTH_JWKS_URL = env_var(
    "AUTH_JWKS_URL",
    "The issuer's JWKS. Unset: the `jwks_uri` of AUTH_OIDC_DISCOVERY_URL.",
    AUTH,
)
AUTH_OIDC_DISCOVERY_URL = env_var(
    "AUTH_OIDC_DISCOVERY_URL",
    "OIDC discovery document naming the JWKS (default: AUTH_ISSUER + "
    "/.well-known/openid-configuration); its `issuer` must equal AUTH_ISSUER.",
    AUTH,
)
AUTH_CA_FILE = env_var(
    "AUTH_CA_FILE",
    "CA bundle that verifies the JWKS/discovery HTTPS server (in a pod: the service "
    "account's ca.crt). Unset: the system's CAs.",
    AUTH,
)
AUTH_JWKS_TOKEN_FILE = env_var(
    "AUTH_JWKS_TOKEN_FILE",
    "File with a bearer token sent when fetching the JWKS (in a pod: the service account's "
    "token, which Kubernetes' /openid/v1/jwks asks for). Re-read on every fetch.",
    AUTH,
)
AUTH_ALGORITHMS = env_var(
    "AUTH_ALGORITHMS",
    "Signature algorithms accepted, comma-separated, from RS256 RS384 RS512 PS256 PS384 PS512 "
    "ES256 ES384 ES512.",
    AUTH,
    "RS256,ES256",
)
AUTH_ALLOWED_SUBJECTS = env_var(
    "AUTH_ALLOWED_SUBJECTS",
    "Comma-separated `sub` values allowed, e.g. system:serviceaccount:<ns>:<name>-oidc-"
    "messaging.knative.dev-subscription. Unset: any subject of the issuer.",
    AUTH,
)
AUTH_LEEWAY_SECONDS = env_var(
    "AUTH_LEEWAY_SECONDS", "Clock skew tolerated on `exp` and `nbf`, 0..300.", AUTH, "30"
)
AUTH_JWKS_MAX_AGE = env_var(
    "AUTH_JWKS_MAX_AGE",
    "Seconds a fetched JWKS is used before it is fetched again (60..86400).",
    AUTH,
    "600",
)
AUTH_JWKS_MIN_REFRESH = env_var(
    "AUTH_JWKS_MIN_REFRESH",
    "Least seconds between two fetches for an unknown `kid` (1..3600): a stranger's made-up "
    "key ids cannot make the function hammer the issuer.",
    AUTH,
    "30",
)

# Asymmetric only: with an HMAC algorithm a public key would be the shared secret.
SUPPORTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)


@dataclass(frozen=True)
class AuthSettings:
    audience: str
    issuer: str
    jwks_url: str | None = None
    discovery_url: str | None = None
    ca_file: Path | None = None
    token_file: Path | None = None
    algorithms: frozenset[str] = frozenset({"RS256", "ES256"})
    allowed_subjects: frozenset[str] | None = None
    leeway: int = 30
    jwks_max_age: int = 600
    jwks_min_refresh: int = 30

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AuthSettings | None:
        """None when AUTH_AUDIENCE is unset (no authentication); ConfigError naming the variable
        when it is set and the rest does not say how to verify."""
        env = Env(environ)
        audience = env.string(AUTH_AUDIENCE)
        if audience is None:
            return None
        issuer = env.string(AUTH_ISSUER)
        if issuer is None:
            raise ConfigError(f"{AUTH_ISSUER.name}: required when {AUTH_AUDIENCE.name} is set")
        algorithms = frozenset(a.upper() for a in env.csv(AUTH_ALGORITHMS))
        refused = sorted(algorithms - SUPPORTED_ALGORITHMS)
        if refused or not algorithms:
            raise ConfigError(
                f"{AUTH_ALGORITHMS.name}: expected asymmetric algorithms from "
                f"{', '.join(sorted(SUPPORTED_ALGORITHMS))}, got {', '.join(refused) or 'none'}"
            )
        subjects = env.csv(AUTH_ALLOWED_SUBJECTS)
        return cls(
            audience=audience,
            issuer=issuer,
            jwks_url=_url(env, AUTH_JWKS_URL),
            discovery_url=_url(env, AUTH_OIDC_DISCOVERY_URL),
            ca_file=_file(env, AUTH_CA_FILE),
            token_file=_file(env, AUTH_JWKS_TOKEN_FILE),
            algorithms=algorithms,
            allowed_subjects=frozenset(subjects) if subjects else None,
            leeway=env.integer(AUTH_LEEWAY_SECONDS, 0, 300),
            jwks_max_age=env.integer(AUTH_JWKS_MAX_AGE, 60, 86400),
            jwks_min_refresh=env.integer(AUTH_JWKS_MIN_REFRESH, 1, 3600),
        )


def _url(env: Env, var: Any) -> str | None:
    value: str | None = env.string(var)
    if value is not None and not value.startswith(("http://", "https://")):
        raise ConfigError(f"{var.name}: expected an http(s) URL, got {value!r}")
    return value


def _file(env: Env, var: Any) -> Path | None:
    value: str | None = env.string(var)
    if value is None:
        return None
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"{var.name}: no such file {value!r}")
    return path


@dataclass(frozen=True)
class Refusal:
    """Why a request was refused; `reason` is the metric label and says nothing secret."""

    reason: str
    message: str
    status: int = 401

    def response(self) -> JSONResponse:
        # RFC 6750, section 3: no error code when the request carried no token at all.
        challenge = "Bearer"
        if self.status == 401 and self.reason != "missing-token":
            challenge = f'Bearer error="invalid_token", error_description="{self.message}"'
        headers = {"WWW-Authenticate": challenge} if self.status == 401 else {"Retry-After": "1"}
        body = {"error": "unauthorized" if self.status == 401 else "unavailable"}
        body.update(reason=self.reason, message=self.message)
        return JSONResponse(body, status_code=self.status, headers=headers)


MISSING = Refusal("missing-token", "a bearer token is required")
UNAVAILABLE = Refusal("jwks-unavailable", "the issuer's keys cannot be fetched now", 503)


class AcceptedTokens:
    """Tokens that verified, until they expire: Knative's senders reuse one token per target
    for most of its hour, so each is verified in full once, not once per event. A hit needs
    the same token bytes (kept as their SHA-256) and the key that verified it still being the
    issuer's current one: a JWKS refresh or rotation sends every token through the full check
    again. Bounded: the oldest entries go first."""

    CAPACITY = 1024

    def __init__(self) -> None:
        self._entries: OrderedDict[bytes, tuple[float, str | None, Any]] = OrderedDict()

    def holds(self, token: str, keys: KeyCache) -> bool:
        entry = self._entries.get(_digest(token))
        if entry is None:
            return False
        expires, kid, key = entry
        if time.time() > expires or keys.stale or keys.get(kid) is not key:
            del self._entries[_digest(token)]
            return False
        return True

    def add(self, token: str, expires: float, kid: str | None, key: Any) -> None:
        self._entries[_digest(token)] = (expires, kid, key)
        while len(self._entries) > self.CAPACITY:
            self._entries.popitem(last=False)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class SenderAuth:
    """Verifies the bearer token of a request; `check` returns None or the Refusal."""

    def __init__(self, settings: AuthSettings, keys: KeyCache | None = None) -> None:
        # Here, not at the top: a function without AUTH_AUDIENCE never loads PyJWT.
        import jwt

        from common.jwks import KeyCache, KeySource

        self._jwt = jwt
        self.settings = settings
        self.keys = keys or KeyCache(
            KeySource(
                settings.issuer,
                settings.jwks_url,
                settings.discovery_url,
                settings.ca_file,
                settings.token_file,
            ),
            settings.algorithms,
            settings.jwks_max_age,
            settings.jwks_min_refresh,
        )
        self._accepted = AcceptedTokens()

    def start(self) -> None:
        """Fetch the keys before the first event (a failure is logged; events retry it)."""
        from common.jwks import KeysUnavailable

        with contextlib.suppress(KeysUnavailable):
            self.keys.refresh(force=True)

    async def check(self, authorization: str | None) -> Refusal | None:
        token = _bearer(authorization)
        if token is None:
            return MISSING
        if self._accepted.holds(token, self.keys):
            return None
        jwt = self._jwt
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            return Refusal("malformed-token", "the token is not a JWT")
        algorithm = header.get("alg")
        if algorithm not in self.settings.algorithms:
            return Refusal("disallowed-algorithm", "the token's algorithm is not accepted")
        kid = header.get("kid")
        kid = kid if isinstance(kid, str) else None
        key = self.keys.get(kid)
        # The fetch runs in a worker thread, and only when the rate limit allows one: while it
        # does not, an unknown kid is refused at once and stale keys go on being used.
        if (key is None or self.keys.stale) and self.keys.may_refresh():
            refusal = await run_in_threadpool(self._refresh)
            if refusal is not None:
                return refusal
            key = self.keys.get(kid)
        elif self.keys.empty:
            return UNAVAILABLE
        if key is None:
            return Refusal("unknown-key", "the token is signed with a key the issuer does not list")
        return self._verify(token, key, algorithm, kid)

    def _refresh(self) -> Refusal | None:
        from common.jwks import KeysUnavailable

        try:
            self.keys.refresh()
        except KeysUnavailable:
            return UNAVAILABLE
        # Rate-limited before any fetch succeeded: we cannot tell, so the sender retries.
        return UNAVAILABLE if self.keys.empty else None

    def _verify(self, token: str, key: Any, algorithm: str, kid: str | None) -> Refusal | None:
        jwt = self._jwt
        if key.algorithm_name != algorithm:
            return Refusal("disallowed-algorithm", "the token's algorithm does not fit its key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            return Refusal("expired", "the token has expired")
        except jwt.ImmatureSignatureError:
            return Refusal("not-yet-valid", "the token is not valid yet")
        except jwt.InvalidAudienceError:
            return Refusal("wrong-audience", "the token is for another audience")
        except jwt.InvalidIssuerError:
            return Refusal("wrong-issuer", "the token is from another issuer")
        except jwt.InvalidSignatureError:
            return Refusal("bad-signature", "the token's signature does not verify")
        except jwt.MissingRequiredClaimError:
            return Refusal("missing-claim", "the token lacks a required claim")
        except jwt.InvalidTokenError:
            return Refusal("invalid-token", "the token is not valid")
        allowed = self.settings.allowed_subjects
        if allowed is not None and claims.get("sub") not in allowed:
            return Refusal("subject-not-allowed", "the token's subject may not send here")
        self._accepted.add(token, float(claims["exp"]) + self.settings.leeway, kid, key)
        return None


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def sender_auth_from_env(environ: Mapping[str, str] | None = None) -> SenderAuth | None:
    """The runtime's hook: None (nothing loaded) unless AUTH_AUDIENCE is set."""
    settings = AuthSettings.from_env(environ)
    return None if settings is None else SenderAuth(settings)
