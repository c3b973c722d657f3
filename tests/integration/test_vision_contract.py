"""The Vision client against the contract stand-in (`testkit.fake_vision`) over real HTTP.

Every documented answer shape: labels, the empty slot, per-image errors, bad key, missing key,
permission denied, 429 with Retry-After, 500, 503, slow answers, garbage; retries bounded by the
deadline; size limits enforced before sending; and the API key kept out of errors and logs.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from common.classifier import Label
from common.env import Secret
from common.errors import (
    Forbidden,
    NotAnImage,
    PermanentError,
    TooLarge,
    TransientError,
)
from common.vision import RetryPolicy, VisionClient, VisionSettings
from common.vision_messages import MAX_IMAGE_BYTES, ImageFailure
from tests.fixtures.processes import free_port
from tests.fixtures.vision import VISION_KEY, FakeVision

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
CAT_LABELS = [
    {"mid": "/m/0jbk", "description": "Whiskers", "score": 0.91, "topicality": 0.91},
    {"mid": "/m/01yrx", "description": "Cat", "score": 0.98, "topicality": 0.98},
    {"mid": "/m/04rky", "description": "Mammal", "score": 0.85, "topicality": 0.85},
]

MakeClient = Callable[..., VisionClient]


@pytest.fixture
def make_client(fake_vision: FakeVision) -> Iterator[MakeClient]:
    clients: list[VisionClient] = []

    def make(
        api_key: str | None = VISION_KEY,
        endpoint: str | None = None,
        settings: VisionSettings | None = None,
        **overrides: Any,
    ) -> VisionClient:
        values: dict[str, Any] = {"max_results": 5, "timeout": 2.0, "deadline": 4.0, **overrides}
        settings = settings or VisionSettings(
            api_key=Secret(api_key) if api_key else None,
            endpoint=endpoint or fake_vision.url,
            **values,
        )
        client = VisionClient(settings, RetryPolicy(base_delay=0.05, max_delay=0.5))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def test_labels_come_back_best_first_and_the_request_follows_the_contract(
    fake_vision: FakeVision, make_client: MakeClient
) -> None:
    fake_vision.set_labels(CAT_LABELS)

    labels = make_client(max_results=2).detect_labels(JPEG)

    # The fake answers the first maxResults labels in its list; the client sorts by score.
    assert labels == [Label("Cat", 0.98), Label("Whiskers", 0.91)]
    [request] = fake_vision.requests()
    assert request["path"] == "/v1/images:annotate"
    assert request["key_header"] == VISION_KEY
    assert "key" not in request["query"], "the key must not travel in the query string"
    assert request["images"] == 1
    assert request["max_results"] == [2]


def test_an_empty_response_slot_means_no_labels(
    fake_vision: FakeVision, make_client: MakeClient
) -> None:
    assert make_client().detect_labels(PNG) == []
    assert fake_vision.request_count() == 1


def test_a_bad_image_is_not_an_image_and_is_not_retried(
    fake_vision: FakeVision, make_client: MakeClient
) -> None:
    with pytest.raises(NotAnImage) as raised:
        make_client().detect_labels(b"this is a text file, not a picture")
    assert raised.value.status == 415
    assert "Bad image data" in raised.value.message
    assert fake_vision.request_count() == 1


def test_a_wrong_key_is_permanent_names_the_variable_and_is_not_retried(
    fake_vision: FakeVision, make_client: MakeClient
) -> None:
    wrong_key = "AIzaWrong-" + VISION_KEY[-10:]
    with pytest.raises(Forbidden) as raised:
        make_client(api_key=wrong_key).detect_labels(JPEG)
    assert raised.value.status == 403
    assert "GOOGLE_VISION_API_KEY" in raised.value.message
    assert wrong_key not in str(raised.value)
    assert fake_vision.request_count() == 1


def test_a_missing_key_is_permission_denied(
    fake_vision: FakeVision, make_client: MakeClient
) -> None:
    with pytest.raises(Forbidden) as raised:
        make_client(api_key=None).detect_labels(JPEG)
    assert "PERMISSION_DENIED" in raised.value.message
    assert fake_vision.requests()[0]["key_header"] is None
    assert fake_vision.request_count() == 1


def test_permission_denied_is_permanent(fake_vision: FakeVision, make_client: MakeClient) -> None:
    fake_vision.script([{"kind": "denied"}])
    with pytest.raises(Forbidden) as raised:
        make_client().detect_labels(JPEG)
    assert "Cloud Vision API enabled" in raised.value.message
    assert fake_vision.request_count() == 1


@pytest.mark.parametrize("kind", ["quota", "internal", "unavailable", "garbage"])
def test_a_transient_failure_is_retried(
    fake_vision: FakeVision, make_client: MakeClient, kind: str
) -> None:
    fake_vision.set_labels(CAT_LABELS[1:2])
    fake_vision.script([{"kind": kind}])

    assert make_client().detect_labels(JPEG) == [Label("Cat", 0.98)]
    assert [r["answer"] for r in fake_vision.requests()] == [
        {"quota": 429, "internal": 500, "unavailable": 503, "garbage": 200}[kind],
        200,
    ]


def test_a_transient_per_image_error_is_retried(
    fake_vision: FakeVision, make_client: MakeClient
) -> None:
    fake_vision.set_labels(CAT_LABELS[1:2])
    fake_vision.script([{"kind": "image_error", "code": 14, "message": "try again"}])
    assert make_client().detect_labels(JPEG) == [Label("Cat", 0.98)]
    assert fake_vision.request_count() == 2


def test_retry_after_is_honoured(fake_vision: FakeVision, make_client: MakeClient) -> None:
    fake_vision.script([{"kind": "quota", "retry_after": 1}])
    make_client().detect_labels(JPEG)
    first, second = fake_vision.requests()
    assert (first["answer"], second["answer"]) == (429, 200)
    # The backoff alone (max_delay 0.5 s) would come back sooner; the header says 1 s.
    assert second["time"] - first["time"] >= 0.95


def test_a_retry_after_beyond_the_deadline_gives_up_at_once(
    fake_vision: FakeVision, make_client: MakeClient
) -> None:
    fake_vision.script([{"kind": "quota", "retry_after": 60}])
    with pytest.raises(TransientError) as raised:
        make_client(deadline=5.0).detect_labels(JPEG)
    assert raised.value.status == 503
    assert "RESOURCE_EXHAUSTED" in raised.value.message
    assert fake_vision.request_count() == 1


def test_persistent_unavailability_ends_in_a_transient_error_without_a_busy_loop(
    fake_vision: FakeVision, make_client: MakeClient
) -> None:
    fake_vision.script([], default={"kind": "unavailable"})
    started = time.monotonic()
    with pytest.raises(TransientError) as raised:
        make_client(deadline=1.5).detect_labels(JPEG)
    elapsed = time.monotonic() - started
    count = fake_vision.request_count()
    assert "UNAVAILABLE" in raised.value.message
    assert 2 <= count <= RetryPolicy().max_attempts
    # The deadline bounds the whole call (generous margin: a loaded CI box is slow).
    assert elapsed < 1.5 + 2.0
    times = [r["time"] for r in fake_vision.requests()]
    assert all(later > earlier for earlier, later in itertools.pairwise(times))


def test_a_slow_answer_times_out_and_is_transient(
    fake_vision: FakeVision, make_client: MakeClient
) -> None:
    fake_vision.script([], default={"kind": "slow", "seconds": 3})
    with pytest.raises(TransientError) as raised:
        make_client(timeout=0.4, deadline=1.0).detect_labels(JPEG)
    assert "timed out" in raised.value.message
    assert 1 <= fake_vision.request_count() <= 3


def test_an_unreachable_endpoint_is_transient(make_client: MakeClient) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TransientError) as raised:
        make_client(endpoint=endpoint, deadline=0.5).detect_labels(JPEG)
    assert "cannot reach" in raised.value.message


def test_an_image_over_20_mib_is_refused_without_a_call(
    fake_vision: FakeVision, make_client: MakeClient
) -> None:
    with pytest.raises(TooLarge) as raised:
        make_client().detect_labels(JPEG + b"\x00" * MAX_IMAGE_BYTES)
    assert raised.value.status == 413
    assert fake_vision.request_count() == 0


def test_an_image_whose_request_would_exceed_10_mib_is_refused_without_a_call(
    fake_vision: FakeVision, make_client: MakeClient
) -> None:
    # 8 MiB is under the image limit, but base64 makes the JSON body ~10.7 MiB.
    with pytest.raises(TooLarge) as raised:
        make_client().detect_labels(JPEG + b"\x00" * (8 * 1024 * 1024))
    assert "10485760" in raised.value.message
    assert fake_vision.request_count() == 0


def test_a_batch_answers_each_image_in_order(
    fake_vision: FakeVision, make_client: MakeClient
) -> None:
    fake_vision.set_labels(CAT_LABELS[1:2])
    results = make_client().detect_labels_batch([JPEG, b"not an image", PNG])
    assert results[0] == [Label("Cat", 0.98)]
    assert isinstance(results[1], ImageFailure)
    assert isinstance(results[1].error, NotAnImage)
    assert results[2] == [Label("Cat", 0.98)]
    [request] = fake_vision.requests()
    assert request["images"] == 3


def _everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)


def test_the_key_never_reaches_an_error_a_log_line_or_a_repr(
    fake_vision: FakeVision, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log every request at DEBUG
    # A proxy that echoes the key back, then retries (logged), then an outage.
    fake_vision.script(
        [{"kind": "unavailable"}, {"kind": "echo_key"}], default={"kind": "unavailable"}
    )
    client = make_client()
    with pytest.raises(PermanentError) as echoed:
        client.detect_labels(JPEG)
    with pytest.raises(TransientError) as outage:
        make_client(deadline=0.5).detect_labels(JPEG)

    assert fake_vision.requests()[1]["key_header"] == VISION_KEY  # the key was really sent
    assert "***" in echoed.value.message
    for text in (str(echoed.value), repr(echoed.value), str(outage.value), repr(client)):
        assert VISION_KEY not in text
    assert "retrying" in caplog.text
    assert VISION_KEY not in _everything_logged(caplog)


def test_a_key_from_a_file_works_and_stays_hidden(
    fake_vision: FakeVision,
    make_client: MakeClient,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    key_file = tmp_path / "vision-key"
    key_file.write_text(VISION_KEY + "\n")
    settings = VisionSettings.from_env(
        {
            "GOOGLE_VISION_API_KEY_FILE": str(key_file),
            "VISION_ENDPOINT": fake_vision.url,
            "VISION_DEADLINE": "2",
        }
    )
    assert VISION_KEY not in repr(settings)
    fake_vision.set_labels(CAT_LABELS[1:2])
    fake_vision.script([{"kind": "quota"}, {"kind": "echo_key"}])
    client = make_client(settings=settings)

    with pytest.raises(PermanentError) as raised:
        client.detect_labels(JPEG)

    assert fake_vision.requests()[-1]["key_header"] == VISION_KEY
    assert VISION_KEY not in str(raised.value)
    assert VISION_KEY not in _everything_logged(caplog)
    assert client.detect_labels(JPEG) == [Label("Cat", 0.98)]
