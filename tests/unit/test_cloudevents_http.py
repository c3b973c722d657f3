"""The CloudEvents HTTP binding: both content modes in, binary out, clear errors."""

from __future__ import annotations

import json

import pytest

from common.cloudevents_http import new_event, parse_request, to_binary_headers, to_structured
from common.errors import InvalidCloudEvent

BINARY = {
    "ce-specversion": "1.0",
    "ce-id": "abc",
    "ce-source": "ceph:s3.default.photos",
    "ce-type": "com.amazonaws.s3.ObjectCreated:Put",
    "ce-subject": "dir/hello%20world.jpg",
    "ce-time": "2026-11-28T21:38:19.047572Z",
    "Content-Type": "application/json",
}


def test_binary_mode() -> None:
    event = parse_request(BINARY, b'{"Records": []}')
    assert event.get_id() == "abc"
    assert event.get_subject() == "dir/hello world.jpg"
    assert event.get_data() == {"Records": []}


def test_structured_mode() -> None:
    body = {
        "specversion": "1.0",
        "id": "s1",
        "source": "/x",
        "type": "t",
        "datacontenttype": "application/json",
        "data": {"Records": []},
    }
    event = parse_request(
        {"content-type": "application/cloudevents+json; charset=utf-8"}, json.dumps(body).encode()
    )
    assert (event.get_id(), event.get_data()) == ("s1", {"Records": []})


@pytest.mark.parametrize("missing", ["id", "source", "type", "specversion"])
def test_binary_missing_attribute(missing: str) -> None:
    headers = {k: v for k, v in BINARY.items() if k != f"ce-{missing}"}
    with pytest.raises(
        InvalidCloudEvent, match=f"missing required CloudEvent attribute.*{missing}"
    ):
        parse_request(headers, b"{}")


@pytest.mark.parametrize("missing", ["id", "source", "type", "specversion"])
def test_structured_missing_attribute(missing: str) -> None:
    body = {"specversion": "1.0", "id": "s1", "source": "/x", "type": "t"}
    del body[missing]
    with pytest.raises(InvalidCloudEvent, match=missing):
        parse_request({"content-type": "application/cloudevents+json"}, json.dumps(body).encode())


@pytest.mark.parametrize(
    ("headers", "body", "message"),
    [
        ({"content-type": "application/json"}, b"{}", "no ce-\\* headers"),
        ({}, b"{}", "Content-Type is 'missing'"),
        ({"content-type": "application/cloudevents+json"}, b"{", "not valid JSON"),
        ({"content-type": "application/cloudevents+json"}, b"[1]", "must be a JSON object"),
        ({"content-type": "application/cloudevents+json"}, b"\xff", "not valid UTF-8"),
        ({"content-type": "application/cloudevents-batch+json"}, b"[]", "batched"),
        (BINARY, b"{not json", "not valid JSON"),
        ({**BINARY, "ce-specversion": "9.9"}, b"{}", "invalid CloudEvent"),
        ({**BINARY, "ce-time": "not-a-time"}, b"{}", "invalid CloudEvent"),
    ],
)
def test_invalid_requests(headers: dict[str, str], body: bytes, message: str) -> None:
    with pytest.raises(InvalidCloudEvent, match=message):
        parse_request(headers, body)


def test_reply_round_trips_in_both_modes() -> None:
    event = new_event("dev.x.result", "/functions/f", {"k": "é"}, subject="a b/c.jpg")
    headers, body = to_binary_headers(event)
    assert headers["ce-type"] == "dev.x.result" and headers["content-type"] == "application/json"
    again = parse_request(headers, body)
    assert again.get_subject() == "a b/c.jpg" and again.get_data() == {"k": "é"}
    headers, body = to_structured(event)
    assert parse_request(headers, body).get_id() == event.get_id()
