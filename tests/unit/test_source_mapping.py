"""RGW record -> CloudEvent: the adapter-spec attributes, the id rule, key decoding, overrides."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from common.cloudevents_http import parse_request, to_binary_headers
from common.env import ConfigError
from common.errors import UnsupportedPayload
from source.mapping import event_id, parse_body, records_of, to_cloudevent, with_overrides
from source.settings import parse_events, parse_overrides

# One real RGW 16.2 HTTP push body, captured verbatim.
SAMPLE_BODY = (
    b'{"Records":[{"eventVersion":"2.2","eventSource":"ceph:s3","awsRegion":"","eventTime":"2026'
    b'-11-28T21:38:19.047572Z","eventName":"ObjectCreated:Put","userIdentity":{"principalId":"te'
    b'st"},"requestParameters":{"sourceIPAddress":""},"responseElements":{"x-amz-request-id":"29'
    b'a3e1a5-1bd7-41c0-aeb9-75a6e5b89b31.4103.15529224489236044131","x-amz-id-2":"1007-default-d'
    b'efault"},"s3":{"s3SchemaVersion":"1.0","configurationId":"n1","bucket":{"name":"nbkt-false'
    b'","ownerIdentity":{"principalId":"test"},"arn":"arn:aws:s3:::nbkt-false","id":"29a3e1a5-1b'
    b'd7-41c0-aeb9-75a6e5b89b31.4105.3"},"object":{"key":"dir/hello world.txt","size":12,"eTag":'
    b'"464112632546a9e393a2fd8dde8000e7","versionId":"","sequencer":"CB490B6B7CC10B03","metadata'
    b'":[{"key":"x-amz-meta-foo","val":"bar"}],"tags":[]}},"eventId":"1795901899.051102.46411263'
    b'2546a9e393a2fd8dde8000e7","opaqueData":"opaque-123"}]}'
)


def rgw_record() -> dict[str, Any]:
    record: dict[str, Any] = json.loads(SAMPLE_BODY)["Records"][0]
    return record


def with_key(record: dict[str, Any], key: str) -> dict[str, Any]:
    changed = copy.deepcopy(record)
    changed["s3"]["object"]["key"] = key
    return changed


def test_attributes_follow_the_aws_s3_adapter() -> None:
    record = rgw_record()
    event = to_cloudevent(record)
    assert event.get_specversion() == "1.0"
    assert event.get_type() == "com.amazonaws.s3.ObjectCreated:Put"
    # RGW's default zonegroup leaves awsRegion empty: the configured region stands in.
    assert event.get_source() == "ceph:s3.default.nbkt-false"
    assert event.get_subject() == "dir/hello world.txt"
    assert event.get_time() == datetime(2026, 11, 28, 21, 38, 19, 47572, tzinfo=UTC)
    assert event.get_datacontenttype() == "application/json"
    assert event.get_data() == record


def test_region_from_the_record_wins() -> None:
    record = rgw_record()
    record["awsRegion"] = "eu-1"
    assert to_cloudevent(record, default_region="x").get_source() == "ceph:s3.eu-1.nbkt-false"


def test_s3_prefix_in_event_name_is_not_doubled() -> None:
    record = rgw_record()
    record["eventName"] = "s3:ObjectRemoved:Delete"
    assert to_cloudevent(record).get_type() == "com.amazonaws.s3.ObjectRemoved:Delete"


@pytest.mark.parametrize(
    "key", ["a b.jpg", "a+b.jpg", "ünï/cödé/猫.png", "d1/d2/d3/d4/d5/x.jpg", "100%.txt"]
)
def test_rgw_keys_are_passed_as_they_are(key: str) -> None:
    assert to_cloudevent(with_key(rgw_record(), key)).get_subject() == key


def test_aws_encoded_keys_are_decoded() -> None:
    record = with_key(rgw_record(), "dir/hello+world%2B1+%C3%BC.txt")
    record["eventSource"] = "aws:s3"
    assert to_cloudevent(record).get_subject() == "dir/hello world+1 ü.txt"


def test_subject_survives_the_binary_http_binding() -> None:
    key = "dir/ä b+c%d.jpg"
    headers, body = to_binary_headers(to_cloudevent(with_key(rgw_record(), key)))
    assert parse_request(headers, body).get_subject() == key


def test_id_is_stable_across_redeliveries() -> None:
    record = rgw_record()
    redelivered = json.loads(json.dumps(record, sort_keys=True))  # same record, other byte order
    assert to_cloudevent(record).get_id() == to_cloudevent(redelivered).get_id()
    assert len(event_id(record)) == 32


def test_multi_object_delete_records_get_distinct_ids() -> None:
    """One DeleteObjects request: same request id, eventId and eTag; only the key differs."""
    base = rgw_record()
    base["eventName"] = "ObjectRemoved:Delete"
    records = [with_key(base, f"k{i}") for i in range(10)]
    assert len({event_id(record) for record in records}) == 10


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("s3", "object", "versionId"), "v2"),
        (("s3", "object", "sequencer"), "FFFF"),
        (("eventName",), "ObjectCreated:Copy"),
        (("eventId",), "other"),
        (("responseElements", "x-amz-request-id"), "other"),
        (("s3", "configurationId"), "other-notification"),
        (("s3", "bucket", "name"), "other-bucket"),
    ],
)
def test_each_identifying_field_changes_the_id(path: tuple[str, ...], value: str) -> None:
    record = rgw_record()
    changed = copy.deepcopy(record)
    target = changed
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    assert event_id(changed) != event_id(record)


def test_field_boundaries_cannot_collide() -> None:
    first, second = with_key(rgw_record(), "ab"), with_key(rgw_record(), "a")
    first["s3"]["object"]["versionId"], second["s3"]["object"]["versionId"] = "", "b"
    assert event_id(first) != event_id(second)


def test_overrides_become_extensions() -> None:
    overrides = parse_overrides('{"extensions": {"team": "vision", "shard": 3, "on": true}}')
    event = to_cloudevent(rgw_record(), overrides=overrides)
    assert event.get_extension("team") == "vision"
    assert event.get_extension("shard") == "3"
    assert event.get_extension("on") == "true"
    headers, _ = to_binary_headers(event)
    assert headers["ce-team"] == "vision"


def test_overrides_apply_to_events_rgw_made_itself() -> None:
    rgw_made = parse_request(
        {
            "ce-specversion": "1.0",
            "ce-id": "req.id2",
            "ce-type": "com.amazonaws.ObjectCreated:Put",
            "ce-source": "ceph:s3.default.b",
            "content-type": "application/json",
        },
        SAMPLE_BODY,
    )
    event = with_overrides(rgw_made, {"team": "vision"})
    assert event.get_extension("team") == "vision"
    assert (event.get_id(), event.get_type()) == ("req.id2", "com.amazonaws.ObjectCreated:Put")


@pytest.mark.parametrize(
    "value",
    [
        "not json",
        '["extensions"]',
        '{"extensions": []}',
        '{"extensions": {"id": "x"}}',
        '{"extensions": {"Bad-Name": "x"}}',
        '{"extensions": {"nested": {"a": 1}}}',
    ],
)
def test_bad_overrides_are_config_errors(value: str) -> None:
    with pytest.raises(ConfigError, match="K_CE_OVERRIDES"):
        parse_overrides(value)


def test_no_overrides() -> None:
    assert parse_overrides(None) == {}
    assert parse_overrides('{"extensions": {}}') == {}


def test_push_bodies() -> None:
    assert len(parse_body(SAMPLE_BODY)) == 1
    assert records_of(rgw_record()) == [rgw_record()]
    for body in (b"{", b'{"Records": []}', b'{"Records": [1]}', b'{"hello": 1}', b"[]"):
        with pytest.raises(UnsupportedPayload):
            parse_body(body)


def test_invalid_records_are_refused() -> None:
    record = rgw_record()
    record["eventName"] = "Bogus"
    with pytest.raises(UnsupportedPayload):
        to_cloudevent(record)
    with pytest.raises(UnsupportedPayload):
        to_cloudevent(with_key(rgw_record(), ""))


def test_event_shorthands() -> None:
    assert parse_events("created,removed") == ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")
    assert parse_events("s3:ObjectCreated:Put, created") == (
        "s3:ObjectCreated:Put",
        "s3:ObjectCreated:*",
    )
