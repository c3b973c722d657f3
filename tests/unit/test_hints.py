"""What `up` prints (localknative.hints): with `--auth`, each function the pipeline reaches gets
a curl command that first asks the local issuer for a token for its audience, as one of its
senders, and sends it; without `--auth`, or for a function no sender reaches, plain curl."""

from __future__ import annotations

import io
import json
import re
import shlex

from localknative.hints import print_usage_hints
from localknative.launch import Endpoints
from testkit.rgw import RgwGateway

RECEIVER = "serving.knative.dev/service/rgw-inference/receiver"
SENDER = "system:serviceaccount:rgw-inference:receiver-oidc-messaging.knative.dev-subscription"


def endpoints(issuer: str = "") -> Endpoints:
    found = Endpoints(
        rgw=RgwGateway("http://127.0.0.1:7480", "access", "secret"),
        grpc="127.0.0.1:8500",
        rest="http://127.0.0.1:8501",
        functions={"receiver": "http://127.0.0.1:9001", "evaluation": "http://127.0.0.1:9002"},
        dispatcher="http://127.0.0.1:9000",
    )
    if issuer:
        found.issuer = issuer
        found.audiences = {"receiver": RECEIVER}
        found.senders = {"receiver": SENDER}
    return found


def printed(found: Endpoints) -> str:
    out = io.StringIO()
    print_usage_hints(out, found)
    return out.getvalue()


def block_of(text: str, url: str) -> list[str]:
    """The shell lines (indent removed) from the blank line before `curl -i <url>/` to the next."""
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if f"curl -i {url}/" in line)
    start = max(i for i in range(at) if not lines[i].strip()) + 1
    end = next(i for i in range(at, len(lines)) if not lines[i].strip())
    return [line[2:] for line in lines[start:end]]


def test_without_auth_there_is_no_token() -> None:
    text = printed(endpoints())
    assert "TOKEN" not in text and "Authorization" not in text and "issuer" not in text


def test_with_auth_the_receiver_is_sent_a_token_minted_for_its_audience() -> None:
    issuer = "http://127.0.0.1:8099"
    text = printed(endpoints(issuer))
    assert f"local issuer {issuer}, local only" in text
    token, request, curl, *_ = block_of(text, "http://127.0.0.1:9001")
    assert token == f"TOKEN=$(curl -s {issuer}/token -H 'content-type: application/json' \\"
    # The request body, as the shell passes it, is the issuer's {"sub", "aud"}.
    body = re.search(r"-d '([^']*)'", request)
    assert body and json.loads(body.group(1)) == {"sub": SENDER, "aud": RECEIVER}
    assert request.endswith(")")
    assert shlex.split(curl.removesuffix("\\"))[:5] == [
        "curl",
        "-i",
        "http://127.0.0.1:9001/",
        "-H",
        "Authorization: Bearer $TOKEN",
    ]


def test_a_function_no_sender_reaches_gets_plain_curl() -> None:
    text = printed(endpoints("http://127.0.0.1:8099"))
    lines = block_of(text, "http://127.0.0.1:9002")
    assert lines[0].startswith("curl -i http://127.0.0.1:9002/ -H 'ce-specversion: 1.0'")
    assert not any("TOKEN" in line for line in lines)
