"""The results service as it runs (`python -m results` behind uvicorn), on SQLite and on a real
PostgreSQL server (Debian's, started on loopback by the fixture): what it keeps, what it refuses,
the filters, the agreement figures, the OpenAPI schema and the live stream."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from common.cloudevents_http import new_event, to_binary_headers, to_structured
from testkit.postgres import postgres_server
from testkit.processes import free_port, python_argv, running
from testkit.records import s3_record

RESULT = "dev.rgwinference.classification.result"


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with postgres_server(tmp_path_factory.mktemp("postgres-logs")) as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    work = tmp_path_factory.mktemp(f"results-{request.param}")
    if request.param == "sqlite":
        database = f"sqlite:///{work / 'results.db'}"
    else:
        database = request.getfixturevalue("postgres_url")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"PORT": str(port), "HOST": "127.0.0.1", "DATABASE_URL": database}
    with running(
        "results", python_argv("-m", "results"), work, env, ready_url=f"{url}/health/readiness"
    ):
        yield url


def post(
    url: str, event_type: str, data: Any, path: str = "/", **extensions: str
) -> httpx.Response:
    event = new_event(event_type, "/functions/resnet", data, extensions=extensions or None)
    headers, body = to_binary_headers(event)
    return httpx.post(url + path, headers=headers, content=body, timeout=10)


def result(bucket: str, key: str, top: str, score: float = 0.9, **fields: Any) -> dict[str, Any]:
    labels = [{"name": top, "score": score, "class_id": 1}, {"name": "other", "score": 0.01}]
    return {"bucket": bucket, "key": key, "version_id": None, "model": "m", "labels": labels,
            "latency_ms": 12.5, **fields}  # fmt: skip


def cards(url: str, **query: Any) -> list[dict[str, Any]]:
    answer = httpx.get(url + "/api/results", params=query, timeout=10)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["objects"])


def fresh_bucket() -> str:
    return f"b-{uuid.uuid4().hex[:12]}"


def test_keeps_a_result_once_per_object_version_with_unknown_fields(service: str) -> None:
    bucket = fresh_bucket()
    data = result(bucket, "cat.jpg", "tabby", etag='"abc"', trace_id="t1", future={"x": [1]})
    data["stages"] = {
        "rgw_event_time": "2030-01-01T00:00:00.000Z",
        "source_received": "2030-01-01T00:00:00.250Z",
        "function_received": "2030-01-01T00:00:00.300Z",
        "model_done": None,
    }
    event = new_event(RESULT, "/functions/resnet", data, event_id="result-1")
    headers, body = to_binary_headers(event)
    assert httpx.post(service + "/", headers=headers, content=body).json()["stored"] == 1
    # The same event again (a redelivery), and structured mode: kept once.
    assert httpx.post(service + "/", headers=headers, content=body).json()["stored"] == 0
    headers, body = to_structured(event)
    assert httpx.post(service + "/", headers=headers, content=body).json()["stored"] == 0
    [card] = cards(service, bucket=bucket)
    assert (card["key"], card["version"], card["etag"]) == ("cat.jpg", "abc", "abc")
    [kept] = card["results"]
    assert kept["function"] == "resnet" and kept["labels"][0]["name"] == "tabby"
    assert kept["extra"] == {"trace_id": "t1", "future": {"x": [1]}}
    assert kept["timings"] == {
        "rgw_event_time → source_received": 250.0,
        "source_received → function_received": 50.0,
    }
    assert card["thumbnail"].startswith("/thumbnails?bucket=")


def test_multi_result_event_and_the_filters(service: str) -> None:
    bucket = fresh_bucket()
    both = {
        "results": [result(bucket, "a.jpg", "Egyptian cat"), result(bucket, "b.jpg", "espresso")]
    }
    assert post(service, RESULT, both).status_code == 202
    vision = new_event(RESULT, "/functions/vision", result(bucket, "b.jpg", "Espresso"))
    headers, body = to_binary_headers(vision)
    assert httpx.post(service + "/", headers=headers, content=body).status_code == 202
    flagged = result(bucket, "c.jpg", "tabby", flagged=True, verdict="unsafe", score=0.97)
    assert post(service, "dev.rgwinference.compliance.result", flagged).status_code == 202
    dead = {"Records": [s3_record(bucket, "d.jpg")]}
    answer = post(
        service, "com.amazonaws.s3.ObjectCreated:Put", dead, "/dead-letters",
        knativeerrordest="http://resnet.rgw-inference.svc.cluster.local",
        knativeerrorcode="415",
        knativeerrordata=base64.b64encode(b'{"error":"not-an-image"}').decode(),
    )  # fmt: skip
    assert answer.status_code == 202, answer.text

    keys = lambda **q: sorted(c["key"] for c in cards(service, bucket=bucket, **q))  # noqa: E731
    assert keys() == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert keys(label="CAT") == ["a.jpg"]  # a top label contains it, any case
    assert keys(label="espresso") == ["b.jpg"]
    assert keys(label="other") == []  # not a top label
    assert keys(label="%") == []  # SQL wildcards are literal
    assert keys(function="vision") == ["b.jpg"]
    assert keys(flagged=True) == ["c.jpg"]
    assert keys(flagged=False) == ["a.jpg", "b.jpg", "d.jpg"]
    assert keys(dead_lettered=True) == ["d.jpg"]
    # A dead letter counts for the function whose delivery failed.
    assert keys(dead_lettered=True, function="resnet") == ["d.jpg"]
    assert keys(dead_lettered=True, function="vision") == []
    [card] = cards(service, bucket=bucket, key="d.jpg")
    assert card["dead_lettered"] and card["results"] == []
    assert card["dead_letters"][0]["function"] == "resnet"
    assert "HTTP 415" in card["dead_letters"][0]["error"]
    assert "not-an-image" in card["dead_letters"][0]["error"]
    [card] = cards(service, bucket=bucket, key="c.jpg")
    assert card["flagged"] and card["results"][0]["verdict"] == "unsafe"
    assert {"resnet", "vision"} <= set(httpx.get(service + "/api/functions").json())


def test_agreement_counts_objects_two_classifiers_saw(service: str) -> None:
    before = httpx.get(service + "/api/agreement").json()
    bucket = fresh_bucket()
    for function, key, top in (
        ("resnet", "same.jpg", "tabby"), ("vision", "same.jpg", "Tabby"),
        ("resnet", "differ.jpg", "espresso"), ("vision", "differ.jpg", "cup"),
        ("resnet", "alone.jpg", "rocket"),
    ):  # fmt: skip
        event = new_event(RESULT, f"/functions/{function}", result(bucket, key, top))
        headers, body = to_binary_headers(event)
        assert httpx.post(service + "/", headers=headers, content=body).status_code == 202
    after = httpx.get(service + "/api/agreement").json()
    assert after["objects"] - before["objects"] == 3
    assert after["compared"] - before["compared"] == 2
    assert after["agree"] - before["agree"] == 1
    pair = next(p for p in after["pairs"] if p["functions"] == ["resnet", "vision"])
    assert pair["compared"] >= 2


@pytest.mark.parametrize(
    ("event_type", "data", "status", "why"),
    [
        ("dev.example.unknown", {"bucket": "b", "key": "k"}, 422, "unknown event type"),
        (RESULT, {"key": "k"}, 422, "'bucket' is missing"),
        (RESULT, {"bucket": "b", "key": 7}, 422, "'key' must be a string"),
        (RESULT, {"bucket": "b", "key": "k", "labels": [{"name": "x", "score": "high"}]}, 422,
         "finite number"),
        (RESULT, {"results": [{"bucket": "b", "key": "ok"}, {"bucket": "b"}]}, 422,
         "results[1]: 'key' is missing"),
        (RESULT, {"results": []}, 422, "non-empty list"),
        (RESULT, {"bucket": "b", "key": "k", "flagged": "yes"}, 422, "true or false"),
    ],
)  # fmt: skip
def test_refuses_bad_events_and_keeps_nothing_of_them(
    service: str, event_type: str, data: Any, status: int, why: str
) -> None:
    total = len(cards(service, limit=1000))
    answer = post(service, event_type, data)
    assert answer.status_code == status, answer.text
    assert why in answer.json()["message"]
    assert len(cards(service, limit=1000)) == total  # not even the valid half


def test_refuses_what_is_not_a_cloudevent(service: str) -> None:
    answer = httpx.post(
        service + "/", content=b'{"bucket":"b"}', headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400
    answer = post(service, "com.amazonaws.s3.ObjectCreated:Put", {"no": "records"}, "/dead-letters")
    assert answer.status_code == 422


def test_hostile_key_is_kept_and_answered_as_data(service: str) -> None:
    bucket = fresh_bucket()
    key = '<script>alert("x")</script><img src=x onerror=alert(1)>.jpg'
    assert post(service, RESULT, result(bucket, key, "<b>bold</b>")).status_code == 202
    [card] = cards(service, bucket=bucket)
    assert card["key"] == key and card["results"][0]["labels"][0]["name"] == "<b>bold</b>"
    assert cards(service, bucket=bucket, label="<b>")[0]["key"] == key
    page = httpx.get(service + "/")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert key not in page.text  # the page has no data in it: the script fetches it as JSON


def test_openapi_documents_the_queries(service: str) -> None:
    schema = httpx.get(service + "/openapi.json").json()
    parameters = {p["name"] for p in schema["paths"]["/api/results"]["get"]["parameters"]}
    assert {"label", "function", "flagged", "dead_lettered", "limit"} <= parameters
    assert {"/", "/dead-letters", "/api/agreement", "/api/stream", "/thumbnails"} <= set(
        schema["paths"]
    )
    assert "Card" in schema["components"]["schemas"]


def test_thumbnail_only_for_objects_it_has_results_for(service: str) -> None:
    answer = httpx.get(service + "/thumbnails", params={"bucket": "secret", "key": "any.jpg"})
    assert answer.status_code == 404


def test_stream_announces_each_new_result(service: str) -> None:
    bucket = fresh_bucket()
    seen: list[dict[str, Any]] = []
    opened = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", service + "/api/stream", timeout=20) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            opened.set()
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    seen.append(json.loads(line[5:]))
                    if any(item["bucket"] == bucket for item in seen):
                        return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert opened.wait(10)
    time.sleep(0.2)
    assert post(service, RESULT, result(bucket, "live.jpg", "tabby")).status_code == 202
    thread.join(10)
    assert {"bucket": bucket, "key": "live.jpg", "version": ""} in seen


def test_postgres_holds_what_the_store_keeps(postgres_url: str) -> None:
    """The PostgreSQL instance is a real one: the rows are there, read back with plain SQL."""
    from results.records import Record
    from results.storage import Filters, Store

    store = Store(postgres_url)
    try:
        store.create()
        bucket = fresh_bucket()
        record = Record("classification", "pg-1", "/functions/resnet", RESULT, bucket, "k.jpg")
        record.labels = [{"name": "tabby", "score": 0.5, "class_id": None}]
        assert store.add([record]) == [record]
        assert store.add([record]) == []
        assert [c["key"] for c in store.objects(Filters(bucket=bucket, label="tab"))] == ["k.jpg"]
        with store.engine.connect() as connection:
            version = connection.execute(sa.text("SELECT version()")).scalar_one()
            names = (
                connection.execute(
                    sa.text(
                        "SELECT name FROM labels JOIN results ON results.id = result_id "
                        "WHERE bucket = :bucket"
                    ),
                    {"bucket": bucket},
                )
                .scalars()
                .all()
            )
    finally:
        store.close()
    assert "PostgreSQL" in version
    assert names == ["tabby"]


def test_settings_read_postgres_urls_as_psycopg() -> None:
    from results.settings import ResultsSettings

    settings = ResultsSettings.from_env({"DATABASE_URL": "postgres://u:p@h/db"})
    assert settings.database_url == "postgresql+psycopg://u:p@h/db"
    assert Path(ResultsSettings.from_env({}).database_url.removeprefix("sqlite:///")).is_absolute()
