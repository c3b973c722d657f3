"""The local Broker's delivery to Trigger `results`: each kept event goes on to the subscriber,
but only of the type the Trigger's filter names (the compliance verdicts stay with the Broker),
between real processes."""

from __future__ import annotations

import time

import httpx

from localknative.collector import read_entries
from localknative.launch import results_trigger_type
from localknative.parts import start_collector
from testkit.processes import REPO_ROOT
from testkit.records import binary_headers
from testkit.stack import Stack

RESULT = "dev.rgwinference.classification.result"
VERDICT = "dev.rgwinference.compliance.verdict"


def test_the_results_trigger_names_the_classification_results() -> None:
    assert results_trigger_type(REPO_ROOT / "knative" / "base") == RESULT


def test_only_events_of_the_trigger_type_are_forwarded() -> None:
    with Stack() as stack:
        target_url, target_log = start_collector(stack, "results-service")
        broker_url, broker_log = start_collector(
            stack, "broker", forward=f"{target_url}/in", forward_type=RESULT
        )
        for event_type, event_id in ((VERDICT, "verdict-1"), (RESULT, "result-1")):
            answer = httpx.post(
                broker_url,
                headers=binary_headers(event_type, "/functions/test", event_id=event_id),
                content=b'{"score": 0.1}',
                timeout=10,
            )
            assert answer.status_code == 202
        deadline = time.monotonic() + 20
        while not read_entries(target_log) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # a wrongly forwarded verdict (sent first) would be in by now
        forwarded = [(e["path"], e["attributes"]["id"]) for e in read_entries(target_log)]
        assert forwarded == [("/in", "result-1")]
        kept = sorted(e["attributes"]["id"] for e in read_entries(broker_log))
        assert kept == ["result-1", "verdict-1"]
