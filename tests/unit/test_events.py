"""The object-event normalizer: every payload flavour, key decoding, and hostile input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import EventError, TooLarge, UnsupportedPayload
from common.events import ObjectEvent, parse_object_events
from testkit.records import rgw_legacy_event

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TRICKY_KEY = "dir/hello world+1 é.jpg"


def rgw_record(key: str = "photo.jpg", bucket: str = "photos", **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "eventVersion": "2.2",
        "eventSource": "ceph:s3",
        "eventTime": "2026-11-28T21:38:19.047572Z",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "bucket": {"name": bucket},
            "object": {"key": key, "size": 12, "eTag": "abc", "versionId": ""},
        },
    }
    record.update(extra)
    return record


def aws_record(encoded_key: str) -> dict[str, Any]:
    record = rgw_record(encoded_key)
    record["eventSource"] = "aws:s3"
    record["s3"]["object"]["eTag"] = '"abc"'
    return record


def test_real_rgw_push_body() -> None:
    data = json.loads((EXAMPLES / "rgw-put-event.json").read_text())
    [event] = parse_object_events(data, "ce-1")
    assert event == ObjectEvent(
        bucket="nbkt-false",
        key="dir/hello world.txt",
        event_name="ObjectCreated:Put",
        event_id="ce-1",
        version_id=None,
        size=12,
        etag="464112632546a9e393a2fd8dde8000e7",
        event_time=datetime(2026, 11, 28, 21, 38, 19, 47572, tzinfo=UTC),
    )
    assert event.created and not event.removed


def test_rgw_keys_are_taken_as_they_are() -> None:
    [event] = parse_object_events({"Records": [rgw_record(TRICKY_KEY)]}, "id")
    assert event.key == TRICKY_KEY


def test_aws_keys_are_url_decoded_with_plus_for_space() -> None:
    encoded = "dir/hello+world%2B1+%C3%A9.jpg"
    [event] = parse_object_events({"Records": [aws_record(encoded)]}, "id")
    assert event.key == TRICKY_KEY
    assert event.etag == "abc"


def test_several_records_get_distinct_ids() -> None:
    records = [rgw_record(f"k{i}") for i in range(3)]
    events = parse_object_events({"Records": records}, "ce")
    assert [e.key for e in events] == ["k0", "k1", "k2"]
    assert [e.event_id for e in events] == ["ce/0", "ce/1", "ce/2"]


def test_bare_record_as_the_source_sends_it() -> None:
    [event] = parse_object_events(rgw_record("a/b.png"), "x")
    assert (event.bucket, event.key) == ("photos", "a/b.png")


def test_event_name_prefix_is_dropped() -> None:
    [event] = parse_object_events(rgw_record(eventName="s3:ObjectRemoved:Delete"), "x")
    assert event.event_name == "ObjectRemoved:Delete" and event.removed


def test_version_id_and_bytes_payload() -> None:
    record = rgw_record()
    record["s3"]["object"]["versionId"] = "v42"
    [event] = parse_object_events(json.dumps({"Records": [record]}).encode(), "x")
    assert event.version_id == "v42"


def test_legacy_rgw_pubsub_pull_body() -> None:
    body = {
        "next_marker": "",
        "is_truncated": "false",
        "events": [rgw_legacy_event("psbkt", "pulled-object-2.txt")],
    }
    [event] = parse_object_events(body, "x")
    assert (event.bucket, event.key, event.event_name) == (
        "psbkt",
        "pulled-object-2.txt",
        "ObjectCreated:*",
    )
    [single] = parse_object_events(body["events"][0], "y")
    assert single.key == "pulled-object-2.txt" and single.event_id == "y"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "no data"),
        ("not json", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        ([1, 2], "JSON object"),
        ({"foo": 1}, "not an S3/RGW object notification"),
        ({"Records": "x"}, "must be a list"),
        ({"Records": []}, "no records"),
        ({"Records": [1]}, "not a JSON object"),
        ({"Records": [{"eventName": "ObjectCreated:Put"}]}, "record has no 's3\\."),
        ({"Records": [rgw_record(key="")]}, "empty object key"),
        ({"Records": [rgw_record(key="k" * 1025)]}, "S3 allows 1024"),
        ({"Records": [rgw_record(bucket="http://evil/")]}, "invalid bucket name"),
        ({"Records": [rgw_record(bucket="../etc")]}, "invalid bucket name"),
        ({"Records": [rgw_record(eventName="Hello")]}, "unknown S3 event name"),
        ({"Records": [rgw_record(eventTime="yesterday")]}, "invalid event time"),
        ({"event": "WHATEVER", "info": {}}, "unknown RGWEvent type"),
    ],
)
def test_malformed_payloads_are_refused_with_a_reason(data: Any, message: str) -> None:
    with pytest.raises(UnsupportedPayload, match=message):
        parse_object_events(data, "x")


def test_too_many_records() -> None:
    with pytest.raises(TooLarge, match="3 records; the limit is 2"):
        parse_object_events({"Records": [rgw_record()] * 3}, "x", max_records=2)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["Records", "s3", "eventName", "bucket", "object", "key", "name", "info"]
            )
            | st.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_any_json_gives_events_or_an_event_error(data: Any) -> None:
    try:
        events = parse_object_events(data, "id")
    except EventError as exc:
        assert 400 <= exc.status < 500
    else:
        assert events and all(isinstance(e, ObjectEvent) for e in events)


@settings(max_examples=300, deadline=None)
@given(
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=400),
    st.sampled_from(["ceph:s3", "aws:s3"]),
)
def test_any_key_survives_its_flavour_of_encoding(key: str, source: str) -> None:
    from urllib.parse import quote_plus

    record = rgw_record(quote_plus(key) if source == "aws:s3" else key)
    record["eventSource"] = source
    try:
        [event] = parse_object_events({"Records": [record]}, "id")
    except UnsupportedPayload:
        assert len(key.encode("utf-8")) > 1024
    else:
        assert event.key == key
