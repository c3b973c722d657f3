"""Sender authentication's parts without a server: settings, the key cache and its rate limit,
and that a function without AUTH_AUDIENCE never loads the JWT library."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from typing import Any

import pytest

from common.auth import AuthSettings, Refusal
from common.env import ConfigError
from common.jwks import KeyCache, KeySource, KeysUnavailable, usable_keys
from localknative.issuer import SigningKey
from testkit.stack import REPO_ROOT

ISSUER = "https://issuer.test"


def test_unset_audience_means_no_authentication() -> None:
    assert AuthSettings.from_env({}) is None
    assert AuthSettings.from_env({"AUTH_ISSUER": ISSUER}) is None


def test_an_audience_without_an_issuer_names_the_missing_variable() -> None:
    with pytest.raises(ConfigError, match="AUTH_ISSUER"):
        AuthSettings.from_env({"AUTH_AUDIENCE": "aud"})


@pytest.mark.parametrize("algorithms", ["HS256", "none", "RS256,HS512", ","])
def test_symmetric_or_no_algorithms_are_refused_at_start(algorithms: str) -> None:
    with pytest.raises(ConfigError, match="AUTH_ALGORITHMS"):
        AuthSettings.from_env(
            {"AUTH_AUDIENCE": "aud", "AUTH_ISSUER": ISSUER, "AUTH_ALGORITHMS": algorithms}
        )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AUTH_JWKS_URL", "file:///etc/passwd"),
        ("AUTH_OIDC_DISCOVERY_URL", "issuer.test"),
        ("AUTH_CA_FILE", "/no/such/ca.crt"),
        ("AUTH_LEEWAY_SECONDS", "3600"),
        ("AUTH_JWKS_MIN_REFRESH", "0"),
    ],
)
def test_malformed_settings_name_their_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        AuthSettings.from_env({"AUTH_AUDIENCE": "aud", "AUTH_ISSUER": ISSUER, name: value})


def test_settings_read_every_variable() -> None:
    settings = AuthSettings.from_env(
        {
            "AUTH_AUDIENCE": "serving.knative.dev/service/ns/receiver",
            "AUTH_ISSUER": ISSUER,
            "AUTH_ALGORITHMS": "es256",
            "AUTH_ALLOWED_SUBJECTS": "system:serviceaccount:ns:a, system:serviceaccount:ns:b",
            "AUTH_LEEWAY_SECONDS": "5",
        }
    )
    assert settings is not None
    assert settings.algorithms == frozenset({"ES256"})
    assert settings.allowed_subjects == frozenset(
        {"system:serviceaccount:ns:a", "system:serviceaccount:ns:b"}
    )
    assert settings.leeway == 5


def test_a_missing_token_gets_a_bare_bearer_challenge() -> None:
    missing = Refusal("missing-token", "a bearer token is required").response()
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    bad = Refusal("expired", "the token has expired").response()
    assert bad.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert json.loads(bytes(bad.body))["reason"] == "expired"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Documents:
    """Serves documents by URL and counts the requests (the key cache's fetch function)."""

    def __init__(self, documents: dict[str, Any]) -> None:
        self.documents = documents
        self.requests: list[str] = []

    def __call__(self, url: str) -> Mapping[str, Any]:
        self.requests.append(url)
        if url not in self.documents:
            raise OSError("connection refused")
        return dict(self.documents[url])


ALLOWED = frozenset({"RS256", "ES256"})


def cache(documents: Documents, clock: FakeClock, min_refresh: float = 30) -> KeyCache:
    source = KeySource(ISSUER, jwks_url=f"{ISSUER}/jwks")
    return KeyCache(source, ALLOWED, 600, min_refresh, documents, clock)


def test_unknown_kids_refresh_at_most_once_per_interval() -> None:
    key = SigningKey.generate("ES256")
    documents = Documents({f"{ISSUER}/jwks": {"keys": [key.jwk()]}})
    clock = FakeClock()
    keys = cache(documents, clock)
    assert keys.refresh(force=True)
    assert keys.get(key.kid) is not None
    # A stranger's made-up kids: the first refresh is allowed, the next 99 are not.
    refreshed = [keys.refresh() for _ in range(100)]
    assert refreshed == [False] * 100  # within 30 s of the forced fetch
    clock.now += 30
    assert [keys.refresh() for _ in range(100)].count(True) == 1
    assert len(documents.requests) == 2


def test_a_failed_fetch_keeps_the_cached_keys_and_fails_only_when_there_are_none() -> None:
    key = SigningKey.generate("RS256")
    documents = Documents({f"{ISSUER}/jwks": {"keys": [key.jwk()]}})
    clock = FakeClock()
    keys = cache(documents, clock, min_refresh=1)
    with pytest.raises(KeysUnavailable):
        cache(Documents({}), clock).refresh(force=True)
    keys.refresh(force=True)
    documents.documents.clear()
    clock.now += 5
    assert keys.refresh() is False
    assert keys.get(key.kid) is not None


def test_symmetric_and_encryption_keys_are_never_used() -> None:
    rsa = SigningKey.generate("RS256")
    document = {
        "keys": [
            {"kty": "oct", "kid": "shared", "k": "c2VjcmV0", "alg": "HS256"},
            {**SigningKey.generate("RS256").jwk(), "kid": "enc", "use": "enc"},
            {"kty": "EC", "kid": "broken", "crv": "P-256", "x": "AA", "y": "AA"},
            rsa.jwk(),
        ]
    }
    assert sorted(usable_keys(document, ALLOWED)) == [rsa.kid]
    assert usable_keys(document, frozenset({"ES256"})) == {}


def test_discovery_must_name_the_configured_issuer() -> None:
    key = SigningKey.generate("RS256")
    discovery = f"{ISSUER}/.well-known/openid-configuration"
    documents = Documents(
        {
            discovery: {"issuer": "https://someone.else", "jwks_uri": f"{ISSUER}/jwks"},
            f"{ISSUER}/jwks": {"keys": [key.jwk()]},
        }
    )
    keys = KeyCache(KeySource(ISSUER), ALLOWED, 600, 1, documents, FakeClock())
    with pytest.raises(KeysUnavailable):
        keys.refresh(force=True)
    documents.documents[discovery]["issuer"] = ISSUER
    assert keys.refresh(force=True)
    assert documents.requests[-2:] == [discovery, f"{ISSUER}/jwks"]


def test_without_an_audience_the_jwt_library_is_never_imported() -> None:
    """A function that handles an event with AUTH_* unset has not loaded PyJWT (nor the key
    cache): in a fresh interpreter, so that nothing this test session imported counts."""
    script = textwrap.dedent(
        """
        import asyncio, json, sys
        import httpx
        from common.runtime import Function, create_app
        from testkit.records import binary_event

        class Quiet(Function):
            blocking = False
            def handle(self, delivery):
                return None

        async def main():
            app = create_app(Quiet)
            headers, body = binary_event("photos", "a.jpg")
            transport = httpx.ASGITransport(app=app)
            async with app.router.lifespan_context(app):
                async with httpx.AsyncClient(transport=transport, base_url="http://f") as c:
                    status = (await c.post("/", headers=headers, content=body)).status_code
            print(json.dumps({"status": status,
                              "loaded": [m for m in ("jwt", "common.jwks") if m in sys.modules]}))

        asyncio.run(main())
        """
    )
    env = {"PATH": "/usr/bin:/bin", "LOG_LEVEL": "WARNING"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer == {"status": 200, "loaded": []}


def test_without_reachable_keys_the_answer_is_503_and_retried() -> None:
    """No key could ever be fetched: the function cannot tell a sender from a stranger, so it
    answers 503 (Knative retries) rather than 401 (dead-lettered); health stays open."""
    import asyncio

    import httpx

    from common.auth import SenderAuth
    from common.runtime import Function, RuntimeSettings, create_app
    from testkit.processes import free_port
    from testkit.records import binary_event

    class Quiet(Function):
        blocking = False

        def handle(self, delivery: Any) -> None:
            raise AssertionError("an unverified event reached the handler")

    closed = f"http://127.0.0.1:{free_port()}"
    settings = AuthSettings(audience="aud", issuer=closed, jwks_url=closed + "/jwks")
    app = create_app(Quiet, RuntimeSettings(), sender_auth=lambda: SenderAuth(settings))
    key = SigningKey.generate("RS256")
    token = key.sign({"iss": closed, "aud": "aud", "sub": "s", "exp": 2**31})

    async def scenario() -> tuple[httpx.Response, httpx.Response, str]:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://f") as client,
        ):
            headers, body = binary_event("photos", "a.jpg")
            headers["Authorization"] = f"Bearer {token}"
            answer = await client.post("/", headers=headers, content=body)
            health = await client.get("/health/readiness")
            metrics = (await client.get("/metrics")).text
            return answer, health, metrics

    answer, health, metrics = asyncio.run(scenario())
    assert answer.status_code == 503
    assert answer.json()["reason"] == "jwks-unavailable"
    assert answer.headers["retry-after"] == "1"
    assert health.status_code == 200
    assert 'cloudevents_unauthorized_total{reason="jwks-unavailable"} 1.0' in metrics
