"""The results service's pieces in-process: parsing result events and dead letters, thumbnails,
the SQLite store, the event hub and the settings."""

from __future__ import annotations

import asyncio
import base64
import io
from typing import Any

import pytest
from PIL import Image

from common.cloudevents_http import new_event
from common.env import ConfigError
from common.errors import NotAnImage, TooLarge
from results.records import (
    DEAD_LETTER,
    Refused,
    dead_letter_records,
    is_dead_letter,
    result_records,
)
from results.settings import ResultsSettings
from results.storage import Filters, Store
from results.stream import Hub
from results.thumbnails import make_thumbnail
from testkit.records import s3_record

RESULT = "dev.rgwinference.classification.result"


def classification(**fields: Any) -> dict[str, Any]:
    return {
        "bucket": "photos",
        "key": "chelsea.jpg",
        "version_id": None,
        "event_id": "e-1",
        "model": "mobilenet_v2",
        "labels": [{"name": "tabby", "score": 0.7, "class_id": 281}],
        "latency_ms": 31.5,
        **fields,
    }


def test_a_classifier_reply_as_the_classifiers_send_it() -> None:
    event = new_event(RESULT, "/functions/resnet", classification(etag='"e1"', result_id="r"))
    [record] = result_records(event)
    assert (record.kind, record.function, record.bucket, record.key) == (
        "classification", "resnet", "photos", "chelsea.jpg",
    )  # fmt: skip
    assert record.version == "e1" and record.etag == "e1"
    assert record.labels[0] == {"name": "tabby", "score": 0.7, "class_id": 281}
    assert record.extra == {"event_id": "e-1", "result_id": "r"}


def test_version_null_is_no_version_and_a_nan_score_may_be_null() -> None:
    data = classification(version_id="null", labels=[{"name": "x", "score": None}])
    [record] = result_records(new_event(RESULT, "/functions/vision", data))
    assert record.version_id is None and record.labels[0]["score"] is None


def test_stage_times_become_hops_in_the_order_they_happened() -> None:
    stages = {
        "model_done": 10.5,
        "rgw_event_time": 10.0,
        "function_received": "1970-01-01T00:00:10.2Z",
    }
    [record] = result_records(new_event(RESULT, "/f/x", classification(stages=stages)))
    assert record.timings == {
        "rgw_event_time → function_received": 200.0,
        "function_received → model_done": 300.0,
    }


def test_compliance_results_share_the_shape() -> None:
    data = classification(flagged=True, verdict="flagged", score=0.99)
    [record] = result_records(new_event("dev.rgwinference.compliance.result", "/f/c", data))
    assert (record.kind, record.flagged, record.score) == ("compliance", True, 0.99)


@pytest.mark.parametrize(
    ("event_type", "data", "why"),
    [
        ("dev.rgwinference.unknown.result", classification(), "unknown event type"),
        (RESULT, ["not", "an", "object"], "JSON object"),
        (RESULT, classification(bucket=""), "'bucket' is missing"),
        (RESULT, classification(key="k" * 2000), "longer than"),
        (RESULT, classification(labels="tabby"), "'labels' must be a list"),
        (RESULT, classification(labels=[{"score": 1}]), "'name' is missing"),
        (RESULT, classification(labels=[{"name": "x", "class_id": 1.5}]), "'class_id'"),
        (RESULT, classification(latency_ms=float("inf")), "finite number"),
        (RESULT, classification(latency_ms=True), "finite number"),
        (RESULT, classification(timings=[1]), "'timings'"),
        (RESULT, classification(stages={"a": "yesterday"}), "ISO 8601"),
        (RESULT, {"results": [classification()] * 101}, "the limit is 100"),
    ],
)
def test_malformed_results_are_refused_whole(event_type: str, data: Any, why: str) -> None:
    with pytest.raises(Refused, match=why.replace("(", r"\(")):
        result_records(new_event(event_type, "/functions/resnet", data))  # type: ignore[arg-type]


def test_dead_letters_name_their_objects_and_why() -> None:
    event = new_event(
        "com.amazonaws.s3.ObjectCreated:Put",
        "/rgw",
        {"Records": [s3_record("photos", "a.jpg"), s3_record("photos", "b.jpg")]},
        extensions={
            "knativeerrordest": "http://vision.rgw-inference.svc.cluster.local",
            "knativeerrorcode": "503",
            "knativeerrordata": base64.b64encode(b"model server down").decode(),
        },
    )
    assert is_dead_letter(event)
    records = dead_letter_records(event)
    assert [(r.kind, r.key, r.function) for r in records] == [
        (DEAD_LETTER, "a.jpg", "vision"), (DEAD_LETTER, "b.jpg", "vision"),
    ]  # fmt: skip
    assert records[0].error == "HTTP 503: model server down"
    assert records[0].dedup != records[1].dedup


def test_a_dead_letter_naming_no_object_is_refused() -> None:
    with pytest.raises(Refused, match="names no object"):
        dead_letter_records(new_event("x.y", "/s", {"hello": "world"}))


def test_the_store_on_sqlite_keeps_an_event_all_or_nothing() -> None:
    store = Store("sqlite:///:memory:")
    store.create()
    event = new_event(
        RESULT, "/functions/resnet", {"results": [classification(), classification(key="b")]}
    )
    records = result_records(event)
    assert len(store.add(records)) == 2
    assert store.add(records) == []
    assert {c["key"] for c in store.objects(Filters())} == {"chelsea.jpg", "b"}
    assert store.functions() == ["resnet"]
    assert store.known("photos", "b", "") is not None
    assert store.known("photos", "nope", "") is None
    store.close()


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "JPEG")
    return out.getvalue()


def test_thumbnails_keep_the_aspect_within_the_size() -> None:
    thumb = Image.open(io.BytesIO(make_thumbnail(jpeg(1200, 600), 256, 10**8)))
    assert (thumb.format, thumb.size) == ("JPEG", (256, 128))
    with pytest.raises(TooLarge):
        make_thumbnail(jpeg(1200, 600), 256, 1000)
    with pytest.raises(NotAnImage):
        make_thumbnail(b"<svg/>", 256, 10**8)


def test_the_hub_sends_each_subscriber_every_update_and_ends_at_close() -> None:
    async def scenario() -> list[str]:
        hub = Hub()
        stream = hub.stream(heartbeat=5)
        got = [await anext(stream)]  # the opening comment
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        hub.publish("result", {"bucket": "b", "key": "<k>", "version": ""})
        got.append(await waiting)
        hub.close()
        got += [part async for part in stream]
        return got

    opening, message = asyncio.run(scenario())
    assert opening.startswith("retry:")
    assert message == 'event: result\ndata: {"bucket":"b","key":"<k>","version":""}\n\n'


def test_settings() -> None:
    assert ResultsSettings.from_env({"DATABASE_URL": "postgresql://h/db"}).database_url == (
        "postgresql+psycopg://h/db"
    )
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        ResultsSettings.from_env({"DATABASE_URL": "mysql://h/db"})
    with pytest.raises(ConfigError, match="THUMBNAIL_SIZE"):
        ResultsSettings.from_env({"THUMBNAIL_SIZE": "4"})
