"""Sender authentication end to end on the demo's stack (`rgw-inference up --auth`): real RGW,
the real model server, every function as its own process with AUTH_* pointing at the local
issuer, and the dispatcher sending each delivery with a token for the target's audience.

The pipeline's own events are classified; a forged POST straight at a function, or one with a
genuine token of the issuer minted for another function or for another subject, is refused."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from common.cloudevents_http import new_event, to_binary_headers
from localknative.issuer import TOKEN_PATH
from testkit.live_stack import S3_EVENT_TYPE, LiveStack
from testkit.records import records, s3_record
from testkit.scenarios.tally import photos_under, warm_up
from testkit.services import MODEL_CACHE_DIR
from testkit.stack import Stack

pytestmark = pytest.mark.rgw


@pytest.fixture(scope="module")
def live(log_dir: Path) -> Iterator[LiveStack]:
    with Stack() as stack:
        try:
            built = LiveStack.build(stack, model_cache_dir=MODEL_CACHE_DIR, auth=True)
            warm_up(built)
            yield built
            built.close()
        finally:
            shutil.copytree(stack.log_dir, log_dir / "auth-stack", dirs_exist_ok=True)


def mint(live: LiveStack, subject: str, audience: str) -> str:
    answer = httpx.post(
        live.endpoints.issuer + TOKEN_PATH, json={"sub": subject, "aud": audience}, timeout=10
    )
    answer.raise_for_status()
    return str(answer.json()["token"])


def post(live: LiveStack, function: str, token: str | None) -> httpx.Response:
    data = records(s3_record("photos", "warm-up/00000.jpg"))
    headers, body = to_binary_headers(new_event(S3_EVENT_TYPE, "/forged", data))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return live.http.post(live.url(function) + "/", headers=headers, content=body)


def test_every_function_the_channel_reaches_verifies_tokens(live: LiveStack) -> None:
    assert set(live.endpoints.audiences) >= {"receiver", *live.classifiers}
    assert len(set(live.endpoints.audiences.values())) == len(live.endpoints.audiences)


def test_the_pipelines_own_events_are_classified(live: LiveStack) -> None:
    uploads = live.upload_many(photos_under("auth", 4), writers=2)
    keys = [u.key for u in uploads if u.acknowledged]
    assert len(keys) == 4
    outcomes = live.wait_settled(keys, timeout=180)
    assert all(o.classified and not o.dead for o in outcomes.values()), outcomes
    handled = {
        n: live.counters(n).get("cloudevents_handled_total", 0) for n in live.endpoints.audiences
    }
    # The classifiers share the Route 50/50, so either may have got none of these few events;
    # together they classified every key. Every other function gets each event.
    assert sum(handled[n] for n in live.classifiers) >= len(keys), handled
    for name in set(handled) - set(live.classifiers):
        assert handled[name] >= len(keys), (name, handled)


def test_forged_posts_straight_at_a_function_are_refused(live: LiveStack) -> None:
    audiences = live.endpoints.audiences
    names = sorted(audiences)
    before = {n: live.counters(n) for n in names}
    minted: list[str] = []
    for index, name in enumerate(names):
        assert post(live, name, None).status_code == 401
        # A genuine token of the issuer, but for the next function's audience.
        other = audiences[names[(index + 1) % len(names)]]
        sender = "system:serviceaccount:rgw-inference:classifiers-oidc-messaging.knative.dev-"
        token = mint(live, sender + "subscription", other)
        minted.append(token)
        refused = post(live, name, token)
        assert refused.status_code == 401
        assert refused.json()["reason"] == "wrong-audience"
        # Its own audience, but a subject no Subscription of it has.
        stranger = mint(live, "system:serviceaccount:rgw-inference:default", audiences[name])
        minted.append(stranger)
        assert post(live, name, stranger).json()["reason"] == "subject-not-allowed"
    for name in names:
        after = live.counters(name)
        for reason in ("missing-token", "wrong-audience", "subject-not-allowed"):
            metric = f'cloudevents_unauthorized_total{{reason="{reason}"}}'
            assert after[metric] - before[name].get(metric, 0) == 1, (name, reason)
        # Refused before the event was read: nothing handled, nothing new classified.
        handled = "cloudevents_handled_total"
        assert after.get(handled, 0) == before[name].get(handled, 0), name
    logs = "".join(
        p.read_text(errors="replace") for p in live.stack.log_dir.glob("*.log") if p.is_file()
    )
    assert "sender refused" in logs
    for token in minted:
        assert token.split(".")[2] not in logs
    assert json.dumps(minted[0]) not in logs
