"""Sender authentication on a real function process: the receiver with AUTH_* set, the issuer's
discovery document and JWKS served over real HTTP by this test (RS256 and ES256 keys, rotated
mid-run), tokens made with real keys. Each bad token gets 401 with its reason counted on
/metrics; a valid one gets through; no token reaches the log."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from localknative.issuer import SigningKey, service_account_claims
from testkit.records import binary_event
from tests.fixtures.processes import ServiceProcess, free_port, python_argv, running

AUDIENCE = "serving.knative.dev/service/rgw-inference/receiver"
OTHER_AUDIENCE = "serving.knative.dev/configuration/rgw-inference/resnet"
SENDER = "system:serviceaccount:rgw-inference:receiver-oidc-messaging.knative.dev-subscription"
STRANGER = "system:serviceaccount:rgw-inference:default"


@dataclass
class JwksServer:
    """The issuer's discovery document and JWKS over HTTP; `keys` may be swapped mid-run."""

    keys: list[SigningKey]
    server: ThreadingHTTPServer | None = None
    jwks_requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def serve(self) -> JwksServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    document: dict[str, Any] = {
                        "issuer": owner.url,
                        "jwks_uri": owner.url + "/openid/v1/jwks",
                    }
                elif self.path == "/openid/v1/jwks":
                    with owner.lock:
                        owner.jwks_requests += 1
                        document = {"keys": [k.jwk() for k in owner.keys]}
                else:
                    self.send_error(404)
                    return
                body = json.dumps(document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self


@pytest.fixture(scope="module")
def issuer() -> Iterator[JwksServer]:
    server = JwksServer([SigningKey.generate("RS256"), SigningKey.generate("ES256")]).serve()
    yield server
    assert server.server is not None
    server.server.shutdown()


@dataclass
class Guarded:
    proc: ServiceProcess
    url: str
    sent: list[str] = field(default_factory=list)  # every token sent, to look for in the log

    def post(self, token: str | None = None, raw: str | None = None) -> httpx.Response:
        headers, body = binary_event("photos", "a.jpg")
        if token is not None:
            self.sent.append(token)
            headers["Authorization"] = f"Bearer {token}"
        if raw is not None:
            headers["Authorization"] = raw
        return httpx.post(self.url + "/", headers=headers, content=body, timeout=10)

    def unauthorized(self) -> dict[str, float]:
        counts: dict[str, float] = {}
        for line in httpx.get(self.url + "/metrics", timeout=10).text.splitlines():
            if line.startswith("cloudevents_unauthorized_total{"):
                labels, _, value = line.rpartition(" ")
                counts[labels.split('reason="')[1].split('"')[0]] = float(value)
        return counts


@pytest.fixture(scope="module")
def receiver(issuer: JwksServer, log_dir: Path) -> Iterator[Guarded]:
    port = free_port()
    env = {
        "PORT": str(port),
        "AUTH_AUDIENCE": AUDIENCE,
        "AUTH_ISSUER": issuer.url,  # keys found through the discovery document
        "AUTH_ALLOWED_SUBJECTS": SENDER,
        "AUTH_LEEWAY_SECONDS": "5",
        "AUTH_JWKS_MIN_REFRESH": "1",
    }
    url = f"http://127.0.0.1:{port}"
    with running(
        "receiver-auth",
        python_argv("-m", "functions.receiver"),
        log_dir,
        env,
        ready_url=f"{url}/health/readiness",
    ) as proc:
        yield Guarded(proc, url)


def claims(issuer: JwksServer, **changes: Any) -> dict[str, Any]:
    return {**service_account_claims(issuer.url, SENDER, AUDIENCE), **changes}


def b64(document: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()


def refused(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["reason"] == reason


def test_tokens_are_verified_and_each_refusal_is_counted(
    receiver: Guarded, issuer: JwksServer
) -> None:
    rsa, ec = issuer.keys
    before = receiver.unauthorized()
    # Health and metrics stay open; only POST / asks for a token.
    assert httpx.get(receiver.url + "/health/readiness", timeout=10).status_code == 200

    assert receiver.post(rsa.sign(claims(issuer))).status_code == 200
    assert receiver.post(ec.sign(claims(issuer))).status_code == 200

    expected = {
        "missing-token": 2,
        "bad-signature": 1,
        "wrong-audience": 2,
        "expired": 1,
        "unknown-key": 1,
        "disallowed-algorithm": 2,
        "wrong-issuer": 1,
        "subject-not-allowed": 1,
        "malformed-token": 1,
    }
    missing = receiver.post()
    refused(missing, "missing-token")
    assert missing.headers["www-authenticate"] == "Bearer"
    refused(receiver.post(raw="Basic dXNlcjpwYXNz"), "missing-token")
    # Signed by a key the issuer does not list, under a kid it does: a forgery.
    forger = SigningKey("forged", "RS256", SigningKey.generate("RS256").private)
    refused(receiver.post(SigningKey(rsa.kid, "RS256", forger.private).sign(claims(issuer))),
            "bad-signature")  # fmt: skip
    refused(receiver.post(rsa.sign(claims(issuer, aud=["someone-else"]))), "wrong-audience")
    # A genuine token of this issuer for another function (its audience) is no use here.
    refused(receiver.post(rsa.sign(claims(issuer, aud=[OTHER_AUDIENCE]))), "wrong-audience")
    now = int(time.time())
    refused(receiver.post(rsa.sign(claims(issuer, iat=now - 7200, exp=now - 3600))), "expired")
    # A kid nobody lists: the function fetches the JWKS again (rate-limited), still unknown.
    refused(receiver.post(forger.sign(claims(issuer))), "unknown-key")
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': rsa.kid})}.{b64(claims(issuer))}."
    refused(receiver.post(unsigned), "disallowed-algorithm")
    # The classic confusion: HS256 with the issuer's public key as the shared secret.
    public_pem = rsa.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signed = f"{b64({'alg': 'HS256', 'typ': 'JWT', 'kid': rsa.kid})}.{b64(claims(issuer))}"
    mac = hmac.new(public_pem, signed.encode(), hashlib.sha256).digest()
    confused = f"{signed}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    refused(receiver.post(confused), "disallowed-algorithm")
    refused(receiver.post(rsa.sign(claims(issuer, iss="https://other.issuer"))), "wrong-issuer")
    refused(receiver.post(rsa.sign(claims(issuer, sub=STRANGER))), "subject-not-allowed")
    refused(receiver.post("not.a.jwt"), "malformed-token")

    after = receiver.unauthorized()
    counted = {reason: after.get(reason, 0) - before.get(reason, 0) for reason in expected}
    assert counted == expected


def test_a_rotated_key_is_fetched_and_accepted(receiver: Guarded, issuer: JwksServer) -> None:
    old_rsa, ec = issuer.keys
    old_token = old_rsa.sign(claims(issuer))
    # Twice: the second is answered from the accepted-token cache.
    assert receiver.post(old_token).status_code == 200
    assert receiver.post(old_token).status_code == 200
    new_rsa = SigningKey.generate("RS256")
    fetched = issuer.jwks_requests
    issuer.keys = [new_rsa, ec]  # the issuer rotates: the old key is gone
    # The first token with the new kid makes the function fetch the JWKS again; the rate limit
    # (1 s here) may make it wait for the next allowed fetch, so ask until it is accepted.
    deadline = time.monotonic() + 30
    while (answer := receiver.post(new_rsa.sign(claims(issuer)))).status_code != 200:
        refused(answer, "unknown-key")
        assert time.monotonic() < deadline, "the rotated key was never fetched"
        time.sleep(0.2)
    assert issuer.jwks_requests > fetched
    # The old key is no longer listed: its tokens stop verifying, a cached one too.
    refused(receiver.post(old_token), "unknown-key")
    refused(receiver.post(old_rsa.sign(claims(issuer))), "unknown-key")


def test_no_token_reaches_the_log(receiver: Guarded) -> None:
    log = receiver.proc.log_text()
    assert "sender refused" in log  # the refusals were logged, by reason
    assert receiver.sent, "no token was sent"
    for token in receiver.sent:
        for part in token.split("."):
            if len(part) > 16:
                assert part not in log
