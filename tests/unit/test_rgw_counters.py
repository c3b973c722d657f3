"""Reading RGW's notification counters (the sign of a hung persistent queue)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testkit.rgw_counters import (
    CountersUnavailable,
    describe,
    missing_events_hint,
    parse_perf_dump,
)

# The shape of radosgw 16.2.15's `perf dump` (other sections and counters trimmed).
PERF_DUMP = {
    "AsyncMessenger::Worker-0": {"msgr_recv_messages": 12},
    "rgw": {
        "req": 130,
        "pubsub_event_triggered": 0,
        "pubsub_push_ok": 6,
        "pubsub_push_failed": 0,
        "pubsub_push_pending": 1,
    },
}


def test_only_the_pubsub_counters_are_kept() -> None:
    assert parse_perf_dump(json.dumps(PERF_DUMP)) == {
        "pubsub_event_triggered": 0,
        "pubsub_push_ok": 6,
        "pubsub_push_failed": 0,
        "pubsub_push_pending": 1,
    }


@pytest.mark.parametrize("text", ["", "not json", "{}", '{"rgw": 3}'])
def test_a_dump_without_an_rgw_section_is_refused(text: str) -> None:
    with pytest.raises(CountersUnavailable):
        parse_perf_dump(text)


def test_a_pending_push_names_the_hung_queue() -> None:
    hint = describe({"pubsub_push_pending": 1, "pubsub_push_ok": 6})
    assert "pubsub_push_pending=1" in hint and "hung" in hint and "restart" in hint


def test_nothing_pending_is_just_the_figures() -> None:
    hint = describe({"pubsub_push_pending": 0, "pubsub_push_ok": 6})
    assert hint == "RGW pubsub_push_pending=0, pubsub_push_ok=6"


def test_no_gateway_is_said_so(tmp_path: Path) -> None:
    assert "unavailable" in missing_events_hint(tmp_path)
