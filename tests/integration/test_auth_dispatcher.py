"""The local Channel sends tokens the way Knative's dispatcher does (authentication-oidc): real
processes for the local issuer, the dispatcher and recording subscribers.

Each delivery to a target with an audience carries a bearer token of the issuer for that
audience, with the Subscription's OIDC service account as `sub`; a target without an audience
gets none; the token the sender brought for the channel is never forwarded."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest

from localknative.issuer import subscription_identity
from testkit.records import binary_event
from testkit.sink import Recorder, start_recorder
from tests.fixtures.processes import free_port, python_argv, running
from tests.integration.test_dispatcher import manifests

NAMESPACE = "rgw-inference"
AUDIENCES = {
    "Service/receiver": "serving.knative.dev/service/rgw-inference/receiver",
    "Configuration/resnet": "serving.knative.dev/configuration/rgw-inference/resnet",
}


@dataclass
class Wired:
    issuer: str
    dispatcher: str
    recorders: dict[str, Recorder]


@pytest.fixture(scope="module")
def wired(log_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wired]:
    with ExitStack() as stack:
        port = free_port()
        issuer = f"http://127.0.0.1:{port}"
        stack.enter_context(
            running(
                "issuer",
                python_argv("-m", "localknative.issuer", "--port", str(port)),
                log_dir,
                ready_url=f"{issuer}/healthz",
            )
        )
        recorders: dict[str, Recorder] = {}
        for name in ("receiver", "resnet", "vision", "dead-letters", "broker"):
            recorders[name] = stack.enter_context(start_recorder(log_dir, f"sub-{name}"))
        binds = {
            "Service/receiver": recorders["receiver"].url(""),
            "Configuration/resnet": recorders["resnet"].url(""),
            "Configuration/vision": recorders["vision"].url(""),
            "Service/dead-letters": recorders["dead-letters"].url(""),
            "Broker/default": recorders["broker"].url(""),
        }
        port = free_port()
        args = ["--knative-dir", str(manifests(tmp_path_factory.mktemp("topology")))]
        args += ["--port", str(port), "--oidc-issuer", issuer, "--namespace", NAMESPACE]
        for ref, url in binds.items():
            args += ["--bind", f"{ref}={url}"]
        for ref, audience in AUDIENCES.items():
            args += ["--audience", f"{ref}={audience}"]
        url = f"http://127.0.0.1:{port}"
        stack.enter_context(
            running(
                "dispatcher-auth",
                python_argv("-m", "localknative.dispatcher", *args),
                log_dir,
                ready_url=f"{url}/healthz",
            )
        )
        yield Wired(issuer, url, recorders)


def verified(token: str, issuer: str, audience: str) -> dict[str, object]:
    jwks = jwt.PyJWKSet.from_dict(httpx.get(issuer + "/openid/v1/jwks", timeout=10).json())
    key = jwks[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, object] = jwt.decode(
        token, key, algorithms=["RS256"], audience=audience, issuer=issuer
    )
    return claims


def test_each_delivery_carries_a_token_for_its_target(wired: Wired) -> None:
    recorders = wired.recorders
    # Several events, so that the 70/30 split reaches both classifiers.
    keys = [f"auth-{uuid.uuid4()}.jpg" for _ in range(12)]
    for key in keys:
        headers, body = binary_event("photos", key)
        headers["Authorization"] = "Bearer the-senders-own-token-for-the-channel"
        answer = httpx.post(wired.dispatcher + "/", headers=headers, content=body, timeout=30)
        assert answer.status_code == 202
    receiver = recorders["receiver"].wait_for(len(keys))
    tokens = [r.header("authorization") for r in receiver]
    assert all(t is not None and t.startswith("Bearer ") for t in tokens)
    claims = verified(str(tokens[0])[7:], wired.issuer, AUDIENCES["Service/receiver"])
    assert claims["sub"] == subscription_identity(NAMESPACE, "receiver")
    # One token per (identity, audience), reused as Knative's token provider reuses it.
    assert len(set(tokens)) == 1

    resnet = recorders["resnet"].requests()
    vision = recorders["vision"].requests()
    assert resnet and vision and len(resnet) + len(vision) == len(keys)
    token = str(resnet[0].header("authorization"))[7:]
    claims = verified(token, wired.issuer, AUDIENCES["Configuration/resnet"])
    assert claims["sub"] == subscription_identity(NAMESPACE, "classifiers")
    # No audience for vision here: no token, as Knative sends none to a sink without one.
    assert all(r.header("authorization") is None for r in vision)
    everything = [*receiver, *resnet, *vision]
    assert all("the-senders-own" not in str(r.header("authorization")) for r in everything)
