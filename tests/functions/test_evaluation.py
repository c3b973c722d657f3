"""The evaluation function, in-process: result CloudEvents in, the report and the Prometheus
counters out, through the real app (binding, status codes) over httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from common.auth import AuthSettings, SenderAuth
from common.cloudevents_http import new_event, to_binary_headers, to_structured
from common.runtime import RuntimeSettings, create_app
from functions.evaluation.app import RESULT_EVENT_TYPE, EvaluationFunction
from functions.evaluation.settings import EvaluationSettings
from testkit.records import binary_event


def result_event(function: str, key: str, labels: list[dict[str, Any]], **extra: Any) -> Any:
    model = {"resnet": "mobilenet_v2@1", "vision": "google-cloud-vision"}[function]
    data = {
        "bucket": "photos",
        "key": key,
        "version_id": None,
        "etag": f"etag-{key}",
        "model": model.split("@")[0],
        "model_id": model,
        "labels": labels,
        **extra,
    }
    return new_event(RESULT_EVENT_TYPE, f"/functions/{function}", data, subject=key)


RESNET_CAT = [
    {"name": "tabby", "score": 0.61, "class_id": 281},
    {"name": "tiger cat", "score": 0.2, "class_id": 282},
    {"name": "Egyptian cat", "score": 0.1, "class_id": 285},
]
VISION_CAT = [
    {"name": "tabby", "score": 0.55, "class_id": None},
    {"name": "Egyptian cat", "score": 0.2, "class_id": None},
    {"name": "Whiskers", "score": 0.1, "class_id": None},
]


async def exchange(
    requests: list[tuple[dict[str, str], bytes]], auth: SenderAuth | None = None, **settings: Any
) -> list[Any]:
    app = create_app(
        lambda: EvaluationFunction(EvaluationSettings(**settings)), RuntimeSettings(), lambda: auth
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://evaluation") as client,
    ):
        answers = [await client.post("/", headers=h, content=b) for h, b in requests]
        report = (await client.get("/report")).json()
        metrics = (await client.get("/metrics")).text
        ready = (await client.get("/health/readiness")).status_code
    return [answers, report, metrics, ready]


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one series in a /metrics answer (0 when it is absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_two_classifiers_results_for_one_object_become_one_comparison() -> None:
    events = [
        to_binary_headers(result_event("vision", "chelsea.jpg", VISION_CAT)),
        to_structured(result_event("resnet", "chelsea.jpg", RESNET_CAT)),
        to_binary_headers(result_event("resnet", "coffee.jpg", RESNET_CAT)),
    ]
    answers, report, metrics, ready = asyncio.run(exchange(events))
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert ready == 200
    assert report["pairs"] == 1 and report["top1_agree"] == 1 and report["pending"] == 1
    assert report["mean_top_k_overlap"] == 2  # tabby and Egyptian cat; Whiskers matches nothing
    (row,) = report["comparisons"]
    assert (row["key"], row["version"]) == ("chelsea.jpg", "e:etag-chelsea.jpg")
    assert row["first"]["function"] == "resnet" and row["second"]["function"] == "vision"
    assert (row["first"]["label"], row["first"]["score"]) == ("tabby", 0.61)
    assert row["second"]["imagenet_classes"] == [281]
    assert report["disagreements"] == []
    pair = {"first": "mobilenet_v2@1", "second": "google-cloud-vision"}
    assert metric(metrics, "evaluation_pairs_total", **pair) == 1
    assert metric(metrics, "evaluation_top1_agree_total", **pair) == 1
    assert metric(metrics, "evaluation_top5_overlap_total", **pair, overlap="2") == 1
    assert metric(metrics, "evaluation_pending") == 1
    assert metric(metrics, "cloudevents_handled_total") == 3


def test_a_disagreement_is_listed_with_both_labels_and_scores() -> None:
    vision_cup = [{"name": "espresso", "score": 0.7, "class_id": None}]
    events = [
        to_binary_headers(result_event("resnet", "coffee.jpg", RESNET_CAT)),
        to_binary_headers(result_event("vision", "coffee.jpg", vision_cup)),
    ]
    _, report, _, _ = asyncio.run(exchange(events))
    (row,) = report["disagreements"]
    assert (row["first"]["label"], row["second"]["label"]) == ("tabby", "espresso")
    assert (row["first"]["score"], row["second"]["score"]) == (0.61, 0.7)
    assert report["top1_agreement"] == 0.0


def test_redeliveries_count_once() -> None:
    event = result_event("resnet", "a.jpg", RESNET_CAT)
    again = result_event("resnet", "a.jpg", RESNET_CAT)  # a new event id, the same result
    requests = [to_binary_headers(event), to_binary_headers(event), to_binary_headers(again)]
    answers, report, metrics, _ = asyncio.run(exchange(requests))
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert report["pending"] == 1 and report["duplicates"] == 1
    assert metric(metrics, "cloudevents_duplicates_total") == 1  # the same event id
    assert (
        metric(metrics, "evaluation_results_total", function="resnet", model="mobilenet_v2@1") == 1
    )


def test_pending_results_are_bounded_and_the_dropped_ones_counted() -> None:
    events = [to_binary_headers(result_event("resnet", f"{i}.jpg", RESNET_CAT)) for i in range(5)]
    _, report, metrics, _ = asyncio.run(exchange(events, max_pending=2))
    assert report["pending"] == 2 and report["unpaired"] == {"capacity": 3}
    labels = {"function": "resnet", "model": "mobilenet_v2@1", "reason": "capacity"}
    assert metric(metrics, "evaluation_unpaired_total", **labels) == 3


def test_what_is_not_a_result_is_refused_as_the_runtime_refuses_it() -> None:
    object_event = binary_event("photos", "cats/tabby.jpg", size=1234)
    no_version = to_binary_headers(result_event("resnet", "x.jpg", RESNET_CAT, etag=None))
    not_json = ({"content-type": "application/json"}, b"{}")
    answers, report, metrics, _ = asyncio.run(exchange([object_event, no_version, not_json]))
    assert [a.status_code for a in answers] == [422, 422, 400]
    assert answers[0].json()["error"] == "unsupported-payload"
    assert "no version to join by" in answers[1].json()["message"]
    assert answers[2].json()["error"] == "invalid-cloudevent"
    assert report["pairs"] == 0 and report["pending"] == 0
    assert (
        metric(metrics, "cloudevents_failed_total", status="422", reason="unsupported-payload") == 2
    )


def test_report_is_json_with_no_pairs_yet() -> None:
    _, report, _, _ = asyncio.run(exchange([]))
    assert json.loads(json.dumps(report)) == report
    assert report["top1_agreement"] is None and report["mean_top_k_overlap"] is None


def test_with_sender_authentication_an_event_without_a_token_is_refused() -> None:
    """The runtime's AUTH_* check (common.auth) guards this app's POST / too."""
    settings = AuthSettings.from_env({"AUTH_AUDIENCE": "evaluation", "AUTH_ISSUER": "https://i"})
    assert settings is not None
    event = to_binary_headers(result_event("resnet", "a.jpg", RESNET_CAT))
    answers, report, metrics, _ = asyncio.run(exchange([event], auth=SenderAuth(settings)))
    assert answers[0].status_code == 401
    assert report["pending"] == 0
    assert metric(metrics, "cloudevents_unauthorized_total", reason="missing-token") == 1
