"""`demo --compare --auth`'s Trigger player on real processes: the evaluation function with the
AUTH_* `played_trigger_auth_env` gives it, the local issuer, and `Comparer` delivering the
Broker's recorded results over HTTP with a token for the function's audience, as the Trigger's
OIDC identity. Without a token, the same deliveries are refused (401, not retried)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from localknative.compare import OVERLAY, Comparer, played_trigger_auth_env
from localknative.overlay import materialize
from tests.fixtures.processes import free_port, python_argv, running
from tests.functions.test_evaluation import RESNET_CAT, VISION_CAT

RESULT = "dev.rgwinference.classification.result"


def recorded(function: str, key: str, labels: list[dict[str, object]]) -> dict[str, object]:
    """A result as the local Broker (the results collector) records it."""
    model = {"resnet": "mobilenet_v2@1", "vision": "google-cloud-vision"}[function]
    return {
        "attributes": {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": f"/functions/{function}",
            "type": RESULT,
            "subject": key,
            "datacontenttype": "application/json",
        },
        "data": {
            "bucket": "photos",
            "key": key,
            "version_id": None,
            "etag": f"etag-{key}",
            "model": model.split("@")[0],
            "model_id": model,
            "labels": labels,
        },
    }


@pytest.fixture(scope="module")
def knative_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return materialize(OVERLAY, tmp_path_factory.mktemp("evaluation-overlay"))


def test_the_played_trigger_sends_tokens_the_evaluation_function_accepts(
    knative_dir: Path, tmp_path: Path, log_dir: Path
) -> None:
    issuer_port, port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{issuer_port}"
    url = f"http://127.0.0.1:{port}"
    env = played_trigger_auth_env(knative_dir, issuer)["evaluation"]
    # As knative/components/verify-tokens sets them for the overlay's Trigger `evaluation`.
    assert env["AUTH_AUDIENCE"] == "serving.knative.dev/service/rgw-inference/evaluation"
    assert env["AUTH_ALLOWED_SUBJECTS"] == (
        "system:serviceaccount:rgw-inference:evaluation-oidc-eventing.knative.dev-trigger"
    )
    broker_log = tmp_path / "results.jsonl"
    entries = [recorded("resnet", "a.jpg", RESNET_CAT), recorded("vision", "a.jpg", VISION_CAT)]
    broker_log.write_text("".join(json.dumps(e) + "\n" for e in entries))
    with (
        running(
            "compare-issuer",
            python_argv("-m", "localknative.issuer", "--port", str(issuer_port)),
            log_dir,
            ready_url=f"{issuer}/healthz",
        ),
        running(
            "compare-evaluation",
            python_argv("-m", "functions.evaluation"),
            log_dir,
            {"PORT": str(port), **env},
            ready_url=f"{url}/health/readiness",
        ),
    ):
        stranger = Comparer(knative_dir, url, broker_log)  # no issuer: no token
        try:
            stranger.poll()
            assert [p.delivered for p in stranger.players] == [0]
            assert [f.split(": ")[1] for f in stranger.failures()] == ["401", "401"]
            assert stranger.report()["pairs"] == 0
        finally:
            stranger.close()

        comparer = Comparer(knative_dir, url, broker_log, issuer, env["AUTH_AUDIENCE"])
        try:
            comparer.poll()
            assert comparer.failures() == []
            assert [p.delivered for p in comparer.players] == [2]
            report = comparer.report()
            assert report["pairs"] == 1
            assert [c["key"] for c in report["comparisons"]] == ["a.jpg"]
        finally:
            comparer.close()
