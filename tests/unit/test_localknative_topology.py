"""The manifest reader and the routing rules the local dispatcher plays (pure logic)."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from localknative.poster import Message
from localknative.routing import (
    Bindings,
    WeightedTarget,
    choose_target,
    is_retryable,
    plan_channel,
    split_point,
)
from localknative.topology import (
    DeliverySpec,
    Destination,
    Ref,
    TopologyError,
    load_topology,
    parse_documents,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("PT0.2S", 0.2),
        ("PT1S", 1.0),
        ("PT1M30S", 90.0),
        ("PT2H", 7200.0),
        ("P1D", 86400.0),
        ("P1DT1S", 86401.0),
        ("P1W", 604800.0),
        ("PT0,5S", 0.5),
    ],
)
def test_iso8601_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "P", "PT", "0.2S", "PT0.2", "P1Y", "P1M", "PT-1S", "P1DT"])
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(TopologyError, match="duration"):
        parse_duration(text)


def test_exponential_backoff_doubles_from_the_delay() -> None:
    """Knative's sender: backoffDelay * 2^attempt, attempt 0 before the first retry."""
    spec = DeliverySpec(retry=5, backoff_policy="exponential", backoff_delay=0.2)
    assert [spec.backoff(n) for n in range(5)] == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2])


def test_linear_backoff_grows_by_the_delay() -> None:
    """backoffDelay * attempt: Knative retries the first time at once."""
    spec = DeliverySpec(retry=3, backoff_policy="linear", backoff_delay=0.5)
    assert [spec.backoff(n) for n in range(3)] == pytest.approx([0.0, 0.5, 1.0])


def test_backoff_refuses_a_negative_retry_count() -> None:
    spec = DeliverySpec(retry=3, backoff_policy="linear", backoff_delay=0.5)
    with pytest.raises(ValueError):
        spec.backoff(-1)


@pytest.mark.parametrize("status", [None, 500, 502, 503, 504, 404, 408, 409, 429])
def test_selective_retry_statuses(status: int | None) -> None:
    assert is_retryable(status)


@pytest.mark.parametrize("status", [400, 401, 403, 410, 413, 415, 422])
def test_permanent_statuses(status: int) -> None:
    assert not is_retryable(status)


def _doc(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "x/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"apiVersion": "x/v1", "kind": kind, "name": name}


def test_channel_delivery_is_inherited_and_overridden_field_by_field() -> None:
    docs = [
        _doc("Channel", "ch", {"delivery": {"retry": 3, "backoffDelay": "PT1S"}}),
        _doc(
            "Subscription",
            "a",
            {"channel": _ref("Channel", "ch"), "subscriber": {"uri": "http://x/"}},
        ),
        _doc(
            "Subscription",
            "b",
            {
                "channel": _ref("Channel", "ch"),
                "subscriber": {"ref": _ref("Service", "s"), "uri": "/path"},
                "delivery": {"retry": 1, "backoffPolicy": "linear"},
            },
        ),
    ]
    topology = parse_documents((f"doc{i}", d) for i, d in enumerate(docs))
    a, b = topology.subscriptions_of("ch")
    assert a.delivery == DeliverySpec(retry=3, backoff_policy="exponential", backoff_delay=1.0)
    assert b.delivery == DeliverySpec(retry=1, backoff_policy="linear", backoff_delay=1.0)
    assert b.subscriber == Destination(Ref("Service", "s"), "/path")


@pytest.mark.parametrize(
    ("traffic", "message"),
    [
        ([{"configurationName": "a", "percent": 60}], "add up to 60"),
        ([{"percent": 100}], "configurationName or revisionName"),
        ([{"configurationName": "a", "percent": 101}], "0..100"),
        ([], "non-empty"),
    ],
)
def test_bad_routes_are_refused_with_the_reason(traffic: list[Any], message: str) -> None:
    with pytest.raises(TopologyError, match=message):
        parse_documents([("f", _doc("Route", "r", {"traffic": traffic}))])


def test_bad_delivery_is_refused() -> None:
    docs = [
        _doc("Channel", "ch", {}),
        _doc(
            "Subscription",
            "a",
            {
                "channel": _ref("Channel", "ch"),
                "subscriber": {"uri": "http://x/"},
                "delivery": {"backoffPolicy": "random"},
            },
        ),
    ]
    with pytest.raises(TopologyError, match="backoffPolicy"):
        parse_documents(enumerate_docs(docs))


def enumerate_docs(docs: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(f"doc{i}", d) for i, d in enumerate(docs)]


def test_split_point_is_stable_and_in_range() -> None:
    ids = [str(uuid.uuid4()) for _ in range(500)]
    points = [split_point(i) for i in ids]
    assert all(0 <= p < 100 for p in points)
    assert points == [split_point(i) for i in ids]


def test_choose_target_follows_the_percents() -> None:
    targets = [WeightedTarget("a", 70, "http://a"), WeightedTarget("b", 30, "http://b")]
    counts = Counter(choose_target(targets, str(uuid.uuid4())).name for _ in range(4000))
    # 4000 draws at p=0.7: sd ~29, so +-150 is more than 5 sd.
    assert abs(counts["a"] - 2800) < 150
    assert counts["a"] + counts["b"] == 4000


def test_a_zero_percent_target_gets_nothing() -> None:
    targets = [WeightedTarget("a", 100, "http://a"), WeightedTarget("b", 0, "http://b")]
    assert {choose_target(targets, str(uuid.uuid4())).name for _ in range(300)} == {"a"}


def test_missing_binding_is_reported_at_plan_time(tmp_path: Path) -> None:
    docs = [
        _doc("Channel", "ch", {}),
        _doc(
            "Subscription",
            "a",
            {"channel": _ref("Channel", "ch"), "subscriber": {"ref": _ref("Service", "svc")}},
        ),
    ]
    (tmp_path / "all.yaml").write_text(yaml.safe_dump_all(docs))
    topology = load_topology(tmp_path)
    with pytest.raises(TopologyError, match="Service/svc"):
        plan_channel(topology, "ch", Bindings({}))
    [plan] = plan_channel(topology, "ch", Bindings({"Service/svc": "http://127.0.0.1:1/"}))
    assert plan.targets == (WeightedTarget("Service/svc", 100, "http://127.0.0.1:1"),)


def test_extensions_go_where_the_content_mode_keeps_attributes() -> None:
    binary = Message({"ce-id": "1", "content-type": "application/json"}, b"{}")
    assert (
        binary.with_extensions({"knativeerrorcode": "400"}).headers["ce-knativeerrorcode"] == "400"
    )
    structured = Message(
        {"content-type": "application/cloudevents+json"},
        b'{"id": "1", "specversion": "1.0", "type": "t", "source": "s"}',
    )

    body = json.loads(structured.with_extensions({"knativeerrorcode": "400"}).body)
    assert body["knativeerrorcode"] == "400"
    assert body["id"] == "1"


KNATIVE_BASE = Path(__file__).resolve().parents[2] / "knative" / "base"


def test_the_real_manifests_describe_the_seed_topology() -> None:
    topology = load_topology(KNATIVE_BASE)
    assert "rgw-events" in topology.channels
    subscriptions = {s.name: s for s in topology.subscriptions_of("rgw-events")}
    assert set(subscriptions) == {"receiver", "classifiers", "compliance"}
    receiver, classifiers = subscriptions["receiver"], subscriptions["classifiers"]
    # The compliance function gets every event too, and replies to the Broker (issue 16).
    compliance = subscriptions["compliance"]
    assert compliance.subscriber == Destination(Ref("Service", "compliance"))
    assert compliance.reply == Destination(Ref("Broker", "default"))
    assert topology.roles[Ref("Service", "compliance")] == "verdict"
    assert receiver.subscriber == Destination(Ref("Service", "receiver"))
    assert receiver.reply is None
    assert classifiers.subscriber == Destination(Ref("Route", "classifiers"))
    assert classifiers.reply == Destination(Ref("Broker", "default"))
    expected = DeliverySpec(
        retry=5,
        backoff_policy="exponential",
        backoff_delay=0.2,
        dead_letter_sink=Destination(Ref("Service", "dead-letters")),
    )
    assert receiver.delivery == classifiers.delivery == compliance.delivery == expected
    split = {(t.target, t.percent) for t in topology.traffic("classifiers")}
    assert split == {(Ref("Configuration", "resnet"), 50), (Ref("Configuration", "vision"), 50)}


def test_the_real_manifests_bind_to_the_five_local_processes() -> None:
    names = (
        "Service/receiver",
        "Configuration/resnet",
        "Configuration/vision",
        "Service/dead-letters",
        "Broker/default",
        "Service/compliance",
    )
    urls = {name: f"http://127.0.0.1:{9000 + i}" for i, name in enumerate(names)}
    plans = {
        p.name: p for p in plan_channel(load_topology(KNATIVE_BASE), "rgw-events", Bindings(urls))
    }
    classifiers = plans["classifiers"]
    assert {t.url for t in classifiers.targets} == {
        urls["Configuration/resnet"],
        urls["Configuration/vision"],
    }
    assert classifiers.reply_url == urls["Broker/default"]
    assert (
        classifiers.dead_letter_url
        == plans["receiver"].dead_letter_url
        == urls["Service/dead-letters"]
    )
    assert plans["receiver"].reply_url is None
