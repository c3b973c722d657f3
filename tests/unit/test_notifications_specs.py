"""Validation and wire format of TopicSpec / NotificationSpec (no RGW needed)."""

from __future__ import annotations

import re

import pytest

from source.notification_specs import (
    OBJECT_EVENTS,
    NotificationSpec,
    SpecError,
    TopicSpec,
    suffixes_regex,
    topic_arn,
)


def test_http_topic_attributes() -> None:
    spec = TopicSpec("images", "http://127.0.0.1:8080/events", persistent=True, opaque_data="x")
    assert spec.attributes() == {
        "push-endpoint": "http://127.0.0.1:8080/events",
        "persistent": "true",
        "OpaqueData": "x",
        "cloudevents": "false",
    }
    assert spec.arn == topic_arn("images") == "arn:aws:sns:default::images"


def test_amqp_topic_attributes_default_to_broker_ack() -> None:
    spec = TopicSpec("images", "amqp://127.0.0.1:5672", amqp_exchange="rgw")
    assert spec.attributes() == {
        "push-endpoint": "amqp://127.0.0.1:5672",
        "persistent": "false",
        "OpaqueData": "",
        "amqp-exchange": "rgw",
        "amqp-ack-level": "broker",
    }


def test_https_topic_can_skip_certificate_checks() -> None:
    spec = TopicSpec("t", "https://user:pw@sink.example/x", verify_ssl=False)
    assert spec.attributes()["verify-ssl"] == "false"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "", "endpoint": "http://h/"}, "topic name"),
        ({"name": "has space", "endpoint": "http://h/"}, "topic name"),
        ({"name": "t", "endpoint": "ftp://h/"}, "expected http"),
        ({"name": "t", "endpoint": "kafka://h:9092"}, "expected http"),
        ({"name": "t", "endpoint": "http:///nohost"}, "expected http"),
        ({"name": "t", "endpoint": "amqp://h:5672"}, "needs amqp_exchange"),
        ({"name": "t", "endpoint": "http://h/", "amqp_exchange": "x"}, "need an amqp://"),
        (
            {"name": "t", "endpoint": "amqp://h", "amqp_exchange": "x", "amqp_ack_level": "all"},
            "amqp_ack_level",
        ),
        (
            {"name": "t", "endpoint": "amqp://h", "amqp_exchange": "x", "cloudevents": True},
            "http(s) endpoints only",
        ),
    ],
)
def test_invalid_topics_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        TopicSpec(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("scheme", ["amqp", "http"])
def test_password_over_plain_transport_is_refused_without_echoing_it(scheme: str) -> None:
    with pytest.raises(SpecError) as refused:
        TopicSpec(
            "t",
            f"{scheme}://guest:hunter2@127.0.0.1:5672/",
            amqp_exchange="x" if scheme == "amqp" else None,
        )
    text = str(refused.value)
    assert "unencrypted" in text
    assert "hunter2" not in text
    assert "guest:***@127.0.0.1:5672" in text


def test_password_over_tls_is_allowed() -> None:
    TopicSpec("t", "amqps://user:pw@broker:5671", amqp_exchange="x")


def test_notification_defaults_to_object_created() -> None:
    spec = NotificationSpec("n", "t")
    assert spec.configuration("arn:aws:sns:default::t") == {
        "Id": "n",
        "TopicArn": "arn:aws:sns:default::t",
        "Events": ["s3:ObjectCreated:*"],
    }


def test_prefix_and_one_suffix_use_standard_rules() -> None:
    spec = NotificationSpec("n", "t", prefix="in/", suffixes=(".jpg",))
    assert spec.filter_rules() == [
        {"Name": "prefix", "Value": "in/"},
        {"Name": "suffix", "Value": ".jpg"},
    ]


def test_several_suffixes_become_one_regex_rule() -> None:
    spec = NotificationSpec("n", "t", suffixes=(".jpg", ".tar.gz"))
    [rule] = spec.filter_rules()
    assert rule == {"Name": "regex", "Value": r".*(\.jpg|\.tar\.gz)"}


@pytest.mark.parametrize(
    ("key", "matches"),
    [
        ("a.jpg", True),
        ("dir/b.tar.gz", True),
        ("c.jpeg", False),
        ("d-xtarxgz", False),
        ("e.jpg.txt", False),
        ("f(1)+[x].jpg", True),
    ],
)
def test_suffix_regex_matches_whole_keys(key: str, matches: bool) -> None:
    # RGW uses std::regex_match (ECMAScript); for this subset Python's fullmatch agrees.
    pattern = suffixes_regex([".jpg", ".tar.gz"])
    assert (re.fullmatch(pattern, key) is not None) is matches


def test_suffix_regex_escapes_every_special_character() -> None:
    odd = "a^$.|?*+()[]{}/\\z"
    assert re.fullmatch(suffixes_regex([odd, ".x"]), "key" + odd)
    assert not re.fullmatch(suffixes_regex([odd, ".x"]), "key" + odd.replace(".", "_"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"id": "", "topic": "t"}, "notification id"),
        ({"id": "n", "topic": "bad topic"}, "topic name"),
        ({"id": "n", "topic": "t", "events": ()}, "at least one event"),
        ({"id": "n", "topic": "t", "events": ("s3:ObjectCreated",)}, "unknown event"),
        ({"id": "n", "topic": "t", "events": ("ObjectCreated:*",)}, "unknown event"),
        ({"id": "n", "topic": "t", "prefix": ""}, "prefix must not be empty"),
        ({"id": "n", "topic": "t", "suffixes": ("",)}, "suffix must not be empty"),
    ],
)
def test_invalid_notifications_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        NotificationSpec(**kwargs)  # type: ignore[arg-type]


def test_every_known_event_is_accepted() -> None:
    spec = NotificationSpec("n", "t", events=tuple(sorted(OBJECT_EVENTS)))
    assert len(spec.configuration("arn")["Events"]) == len(OBJECT_EVENTS)
