"""Object keys that the CloudEvents HTTP binding percent-encodes: one row each, as uploaded.

The source sends the key as the event's subject; in binary mode it travels percent-encoded in
`ce-subject`. The dispatcher records it decoded (through the project's binding), so the
channel's lines, the results and the dead letters all name the same object.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Mapping

import httpx
import pytest

from common.cloudevents_http import new_event, parse_request, to_binary_headers, to_structured
from localknative.delivery import Dispatcher
from localknative.dispatcher import create_app
from localknative.poster import Answer, Poster
from localknative.report import Tracker, summary_table
from localknative.routing import SubscriptionPlan, WeightedTarget
from localknative.topology import DeliverySpec

KEYS = ["my dog.jpg", "a+b.jpg", "100%.jpg", "café/ünïcödé 猫.jpg", 'say "cheese".jpg']
DEAD_LETTERS = "http://dead-letters.local"


class Subscribers(Poster):
    """Answers like the demo's functions: 202 from the receiver, 415 from the classifier for
    the one key it refuses (then the dead-letter sink takes it), 200 otherwise."""

    def __init__(self, refused: str) -> None:
        super().__init__()
        self.refused = refused
        self.dead_letters: list[tuple[Mapping[str, str], bytes]] = []

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> Answer:
        if url == DEAD_LETTERS:
            self.dead_letters.append((dict(headers), body))
            return Answer(202, {}, b"")
        if url.endswith("/resnet") and parse_request(headers, body).get_subject() == self.refused:
            return Answer(415, {}, b'{"error": "not-an-image"}')
        return Answer(202 if url.endswith("/receiver") else 200, {}, b"")


def plans() -> list[SubscriptionPlan]:
    delivery = DeliverySpec(retry=0)
    return [
        SubscriptionPlan(
            "receiver",
            (WeightedTarget("Service/receiver", 100, "http://f/receiver"),),
            None,
            DEAD_LETTERS,
            delivery,
        ),
        SubscriptionPlan(
            "classifiers",
            (WeightedTarget("Configuration/resnet", 100, "http://f/resnet"),),
            "http://broker",
            DEAD_LETTERS,
            delivery,
        ),
    ]


async def post_all(structured: bool) -> tuple[list[dict[str, object]], Subscribers]:
    record = io.StringIO()
    client = Subscribers(refused="100%.jpg")
    app = create_app(Dispatcher(plans(), client, record))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://channel") as http:
        for index, key in enumerate(KEYS):
            event = new_event(
                "com.amazonaws.s3.ObjectCreated:Put",
                "/rgw/photos",
                {"key": key},
                subject=key,
                event_id=f"e{index}",
            )
            headers, body = to_structured(event) if structured else to_binary_headers(event)
            if not structured:
                assert headers["ce-subject"] != key or key.isascii()  # encoded on the wire
            answer = await http.post("/", headers=headers, content=body)
            assert answer.status_code == 202, answer.text
    return [json.loads(line) for line in record.getvalue().splitlines()], client


@pytest.mark.parametrize("structured", [False, True], ids=["binary", "structured"])
def test_the_record_names_each_key_as_uploaded(structured: bool) -> None:
    entries, client = asyncio.run(post_all(structured))
    assert sorted({str(e["subject"]) for e in entries}) == sorted(KEYS)
    for entry in entries:
        assert entry["type"] == "com.amazonaws.s3.ObjectCreated:Put"
        assert entry["source"] == "/rgw/photos"
    # The refused one was parked with its key intact (the collector decodes it the same way).
    [(headers, body)] = client.dead_letters
    parked = parse_request(headers, body)
    assert parked.get_subject() == "100%.jpg"
    assert parked.get_extension("knativeerrorcode") == "415"

    tracker = Tracker("photos", audit_subscriptions={"receiver"})
    for key in KEYS:
        tracker.expect(key, 100.0)
    lines = [line for entry in entries for line in tracker.absorb_dispatch(entry)]
    for key in KEYS:
        if key != "100%.jpg":
            tracker.absorb_result(
                {
                    "time": 101.0,
                    "attributes": {"source": "/functions/resnet", "subject": key},
                    "data": {"key": key, "model": "m", "latency_ms": 1.0, "labels": []},
                }
            )
    tracker.absorb_dead_letter(
        {
            "time": 101.0,
            "attributes": {
                "subject": "100%.jpg",
                "knativeerrorcode": "415",
                "knativeerrordest": "http://f/resnet",
            },
        }
    )
    assert sorted(tracker.rows) == sorted(KEYS)  # one row per object, none percent-encoded
    assert [line for line in lines if "delivered to receiver" in line] == [
        f"channel   {key:<14} delivered to receiver" for key in KEYS
    ]
    table = summary_table([tracker.rows[key] for key in KEYS])
    for key in KEYS:
        assert f"| {key} |" in table
    assert tracker.rows["100%.jpg"].status == "dead-lettered"
    assert tracker.done(KEYS) == len(KEYS)
