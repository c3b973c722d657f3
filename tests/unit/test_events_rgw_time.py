"""RGW's numeric event times: "0.000000" (unset) must not make a record unusable."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from common.errors import UnsupportedPayload
from common.events import parse_object_events


def record(event_time: str) -> dict[str, object]:
    return {
        "eventSource": "ceph:s3",
        "eventName": "ObjectCreated:Put",
        "eventTime": event_time,
        "s3": {"bucket": {"name": "photos"}, "object": {"key": "k.jpg"}},
    }


def test_unset_rgw_time_is_no_time() -> None:
    # RGW 16.2 sends this for a PUT that failed after its notification was reserved; refusing
    # it would make RGW's persistent queue push it again forever.
    (event,) = parse_object_events({"Records": [record("0.000000")]}, "x")
    assert event.event_time is None and event.key == "k.jpg"


def test_epoch_seconds_are_read() -> None:
    (event,) = parse_object_events({"Records": [record("1700000000.5")]}, "x")
    assert event.event_time == datetime.fromtimestamp(1700000000.5, UTC)


@pytest.mark.parametrize("value", ["yesterday", "inf", "nan", "1e300"])
def test_other_times_are_refused(value: str) -> None:
    with pytest.raises(UnsupportedPayload, match="invalid event time"):
        parse_object_events({"Records": [record(value)]}, "x")
