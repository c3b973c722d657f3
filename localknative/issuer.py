"""A local OIDC issuer: the stand-in for the cluster's service-account issuer. LOCAL ONLY.

    python -m localknative.issuer --port 8099 [--algorithm ES256]

It plays the two parts of Kubernetes that Knative's OIDC sender identity uses: the issuer's
public keys (`GET /.well-known/openid-configuration`, `GET /openid/v1/jwks`, as the API server
serves them) and the TokenRequest API (`POST /token` with `{"sub": ..., "aud": ...}`: a JWT for
that subject and audience, valid one hour, as Knative requests for a Subscription's service
account). The signing key is generated at start and lives in memory only.

It binds loopback and answers `/token` to anyone who can reach it: it exists so that the local
stack (`rgw-inference up --auth`) runs the token checks end to end. Never expose it; in a
cluster the issuer is the API server.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from localknative.poster import Poster, Unanswered

DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/openid/v1/jwks"  # where Kubernetes' API server serves it
TOKEN_PATH = "/token"
TOKEN_SECONDS = 3600  # Knative requests one-hour tokens
ALGORITHMS = ("RS256", "ES256")

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class SigningKey:
    """One asymmetric key pair with its key id."""

    kid: str
    algorithm: str
    private: PrivateKey

    @classmethod
    def generate(cls, algorithm: str = "RS256") -> SigningKey:
        if algorithm == "RS256":
            private: PrivateKey = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif algorithm == "ES256":
            private = ec.generate_private_key(ec.SECP256R1())
        else:
            raise ValueError(f"algorithm {algorithm!r}: expected one of {', '.join(ALGORITHMS)}")
        return cls(secrets.token_hex(8), algorithm, private)

    def jwk(self) -> dict[str, Any]:
        """The public half as a JWK, as a JWKS lists it."""
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        public = json.loads(algorithm.to_jwk(self.private.public_key()))
        return {**public, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def sign(self, claims: Mapping[str, Any], headers: Mapping[str, Any] | None = None) -> str:
        return jwt.encode(
            dict(claims),
            self.private,
            algorithm=self.algorithm,
            headers={"kid": self.kid, **(headers or {})},
        )


def service_account_claims(
    issuer: str, subject: str, audience: str, seconds: int = TOKEN_SECONDS, now: float | None = None
) -> dict[str, Any]:
    """The claims of a Kubernetes service-account token (TokenRequest) for `audience`."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": [audience],
        "iat": issued,
        "nbf": issued,
        "exp": issued + seconds,
        "jti": secrets.token_hex(8),
    }
    parts = subject.split(":")
    if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
        claims["kubernetes.io"] = {"namespace": parts[2], "serviceaccount": {"name": parts[3]}}
    return claims


@dataclass
class Issuer:
    """Keys and tokens of one issuer URL; `rotate` starts signing with a new key."""

    url: str
    algorithm: str = "RS256"
    keys: list[SigningKey] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.keys:
            self.keys.append(SigningKey.generate(self.algorithm))

    @property
    def current(self) -> SigningKey:
        return self.keys[-1]

    def rotate(self, keep_previous: bool = True) -> SigningKey:
        key = SigningKey.generate(self.algorithm)
        self.keys = [*self.keys[-1:], key] if keep_previous else [key]
        return key

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "jwks_uri": self.url + JWKS_PATH,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": sorted({k.algorithm for k in self.keys}),
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk() for key in self.keys]}

    def mint(self, subject: str, audience: str, seconds: int = TOKEN_SECONDS) -> str:
        return self.current.sign(service_account_claims(self.url, subject, audience, seconds))


def subscription_identity(namespace: str, subscription: str) -> str:
    """The `sub` Knative's channel dispatcher sends with: the Subscription's OIDC service account
    (`.status.auth.serviceAccountName`, named `<name>-oidc-<group>-<kind>` by Knative)."""
    return (
        f"system:serviceaccount:{namespace}:{subscription}-oidc-messaging.knative.dev-subscription"
    )


def serving_audience(namespace: str, kind: str, name: str) -> str:
    """An audience in Knative's format, `<group>/<kind>/<namespace>/<name>` in lower case."""
    return f"serving.knative.dev/{kind}/{namespace}/{name}".lower()


def trigger_identity(namespace: str, trigger: str) -> str:
    """The `sub` Knative's Broker filter sends with for a Trigger: its OIDC service account,
    `<name>-oidc-eventing.knative.dev-trigger`."""
    return f"system:serviceaccount:{namespace}:{trigger}-oidc-eventing.knative.dev-trigger"


def token_request(subject: str, audience: str) -> tuple[dict[str, str], bytes]:
    """Headers and body of a `POST /token` for `subject` and `audience`."""
    body = json.dumps({"sub": subject, "aud": audience}).encode()
    return {"content-type": "application/json"}, body


class Tokens:
    """One token per (identity, audience), kept until five minutes before it expires, as
    Knative's token provider keeps them. How a token is asked for is the subclass's."""

    RENEW_BEFORE = 300.0

    def __init__(self, issuer_url: str) -> None:
        self.url = issuer_url.rstrip("/") + TOKEN_PATH
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}

    def cached(self, subject: str, audience: str) -> str | None:
        kept = self._tokens.get((subject, audience))
        return kept[0] if kept is not None and kept[1] > time.monotonic() else None

    def keep(self, subject: str, audience: str, status: int, body: bytes) -> str:
        """The token of the issuer's answer, cached; Unanswered when it gave none."""
        if status != 200:
            raise Unanswered(f"the issuer gave no token (status {status})")
        document = json.loads(body)
        keep = float(document.get("expires_in", TOKEN_SECONDS)) - self.RENEW_BEFORE
        self._tokens[(subject, audience)] = (document["token"], time.monotonic() + keep)
        return str(document["token"])


class TokenClient(Tokens):
    """The dispatcher's side of the TokenRequest API, on its event loop's Poster."""

    def __init__(self, issuer_url: str, poster: Poster) -> None:
        super().__init__(issuer_url)
        self._poster = poster

    async def token(self, subject: str, audience: str) -> str:
        """Raises Unanswered when the issuer gives none (the delivery attempt then fails)."""
        cached = self.cached(subject, audience)
        if cached is not None:
            return cached
        headers, body = token_request(subject, audience)
        answer = await self._poster.post(self.url, headers, body, 10.0)
        return self.keep(subject, audience, answer.status, answer.body)


class BlockingTokenClient(Tokens):
    """The same for a caller without an event loop (`demo --compare` playing a Trigger), on an
    httpx.Client."""

    def __init__(self, issuer_url: str, client: httpx.Client) -> None:
        super().__init__(issuer_url)
        self._client = client

    def token(self, subject: str, audience: str) -> str:
        """Raises Unanswered when the issuer gives none (the delivery attempt then fails)."""
        cached = self.cached(subject, audience)
        if cached is not None:
            return cached
        headers, body = token_request(subject, audience)
        try:
            answer = self._client.post(self.url, headers=headers, content=body, timeout=10.0)
        except httpx.HTTPError as exc:
            raise Unanswered(f"{type(exc).__name__}: the issuer did not answer") from None
        return self.keep(subject, audience, answer.status_code, answer.content)


def create_app(issuer: Issuer) -> Starlette:
    async def discovery(_: Request) -> Response:
        return JSONResponse(issuer.discovery())

    async def jwks(_: Request) -> Response:
        return JSONResponse(issuer.jwks())

    async def token(request: Request) -> Response:
        try:
            asked = json.loads(await request.body())
            subject, audience = asked["sub"], asked["aud"]
            seconds = int(asked.get("seconds", TOKEN_SECONDS))
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'expected {"sub": ..., "aud": ...}'}, 400)
        if not (isinstance(subject, str) and isinstance(audience, str) and 0 < seconds <= 86400):
            return JSONResponse({"error": "sub and aud must be strings"}, 400)
        return JSONResponse(
            {"token": issuer.mint(subject, audience, seconds), "expires_in": seconds}
        )

    async def health(_: Request) -> Response:
        return JSONResponse({"ready": True})

    return Starlette(
        routes=[
            Route(DISCOVERY_PATH, discovery, methods=["GET"]),
            Route(JWKS_PATH, jwks, methods=["GET"]),
            Route(TOKEN_PATH, token, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ]
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m localknative.issuer",
        description="A local-only OIDC issuer: JWKS, discovery and tokens for the local stack.",
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--algorithm", choices=ALGORITHMS, default="RS256")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    args = build_parser().parse_args(argv)
    # Loopback only, whatever the caller wishes: /token signs for anyone who asks.
    issuer = Issuer(f"http://127.0.0.1:{args.port}", args.algorithm)
    uvicorn.run(
        create_app(issuer), host="127.0.0.1", port=args.port, log_config=None, access_log=False
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
