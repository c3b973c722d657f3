"""TFServingClient over real gRPC against a small in-process PredictionService.

The server here is scripted (answers, errors, delays) so every client path can be driven; the
integration tests run the same client against the real model server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from common.errors import NotAnImage, PermanentError, TooLarge, TransientError
from common.tfserving import (
    TFServingClient,
    TFServingSettings,
    pixels_tensor,
    shared_channel,
    tensor_to_array,
)
from testkit.samples import photo_jpeg, png_bomb, truncated_jpeg
from tests.fixtures.processes import free_port
from tests.unit.test_tfserving import PIXELS_MODEL, SEED_RESNET

LIMIT = 40_000_000


@dataclass
class Script:
    """What the scripted server answers; tests change it between calls."""

    metadata: get_model_metadata_pb2.GetModelMetadataResponse = field(
        default_factory=lambda: PIXELS_MODEL
    )
    scores: np.ndarray[Any, Any] = field(
        default_factory=lambda: np.eye(1, 1000, 285, dtype=np.float32)
    )
    abort: tuple[grpc.StatusCode, str] | None = None
    delay: float = 0.0
    requests: list[predict_pb2.PredictRequest] = field(default_factory=list)


class ScriptedService(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    def __init__(self, script: Script) -> None:
        self.script = script

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        if self.script.abort:
            context.abort(*self.script.abort)
        return self.script.metadata

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.script.requests.append(request)
        time.sleep(self.script.delay)
        if self.script.abort:
            context.abort(*self.script.abort)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = 3
        response.outputs["probabilities"].CopyFrom(pixels_tensor(self.script.scores))
        return response


@dataclass
class Served:
    target: str
    script: Script
    server: grpc.Server | None = None

    def start(self) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            ScriptedService(self.script), server
        )
        server.add_insecure_port(self.target)
        server.start()
        self.server = server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(grace=None)


@pytest.fixture
def served() -> Iterator[Served]:
    instance = Served(f"127.0.0.1:{free_port()}", Script())
    instance.start()
    yield instance
    instance.stop()


def client_for(target: str, model: str = "m", timeout: float = 5.0) -> TFServingClient:
    return TFServingClient(TFServingSettings(target, model, "serving_default", timeout), LIMIT)


def wait_until(condition: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_pixels_are_sent_as_the_signature_asks(served: Served) -> None:
    client = client_for(served.target)
    client.start()
    try:
        assert wait_until(lambda: client.ready)
        prediction = client.classify(photo_jpeg("chelsea"), 5)
    finally:
        client.stop()
    assert prediction.labels[0].class_id == 285 and prediction.labels[0].name == "Egyptian cat"
    assert prediction.model_version == 3 and prediction.scores_known
    [request] = served.script.requests
    assert request.model_spec.name == "m"
    assert request.model_spec.signature_name == "serving_default"
    tensor = request.inputs["images"]
    assert tensor.dtype == types_pb2.DT_FLOAT
    pixels = tensor_to_array(tensor)
    assert pixels.shape == (1, 224, 224, 3) and pixels.dtype == np.float32
    assert float(pixels.min()) >= 0.0 and float(pixels.max()) <= 255.0


def test_the_seed_model_gets_the_uploaded_bytes(served: Served) -> None:
    served.script.metadata = SEED_RESNET
    scores = np.zeros((1, 1001), np.float32)
    scores[0, 286] = 1.0
    served.script.scores = scores
    client = client_for(served.target)
    client.connect()
    jpeg = photo_jpeg("chelsea")
    prediction = client.classify(jpeg, 3)
    [request] = served.script.requests
    assert list(request.inputs["image_bytes"].string_val) == [jpeg]
    assert request.inputs["image_bytes"].dtype == types_pb2.DT_STRING
    # Column 286 of a 1001-wide answer is ImageNet class 285: not off by one.
    assert prediction.labels[0].class_id == 285


@pytest.mark.parametrize(
    ("payload", "error"),
    [(png_bomb(4000), TooLarge), (truncated_jpeg(), NotAnImage), (b"plain text", NotAnImage)],
)
def test_bad_images_are_refused_before_any_predict(
    served: Served, payload: bytes, error: type[Exception]
) -> None:
    for metadata in (PIXELS_MODEL, SEED_RESNET):
        served.script.metadata = metadata
        client = TFServingClient(TFServingSettings(served.target, "m"), max_image_pixels=1_000_000)
        client.connect()
        with pytest.raises(error):
            client.classify(payload, 5)
    assert served.script.requests == []


def test_not_ready_until_the_server_answers_then_ready() -> None:
    target = f"127.0.0.1:{free_port()}"
    client = client_for(target)
    client.start()
    late = Served(target, Script())
    try:
        assert wait_until(lambda: client.last_error is not None)
        assert not client.ready
        assert "unavailable" in (client.last_error or "")
        late.start()
        assert wait_until(lambda: client.ready), client.last_error
        assert client.signature is not None and client.signature.input.name == "images"
    finally:
        client.stop()
        late.stop()


def test_retry_loop_gives_up_at_its_deadline() -> None:
    client = client_for(f"127.0.0.1:{free_port()}", timeout=0.5)
    client.connect()
    assert client.wait_for_signature(deadline=time.monotonic() + 0.5) is None
    assert not client.ready


def test_unreachable_server_is_transient() -> None:
    client = client_for(f"127.0.0.1:{free_port()}", timeout=2.0)
    client.connect()
    with pytest.raises(TransientError, match="unavailable") as caught:
        client.classify(photo_jpeg("coffee"), 5)
    assert caught.value.status == 503


def test_invalid_argument_is_permanent_with_the_server_message(served: Served) -> None:
    client = client_for(served.target)
    client.fetch_signature()
    served.script.abort = (grpc.StatusCode.INVALID_ARGUMENT, "input 'images' must be 4-D")
    with pytest.raises(PermanentError, match="input 'images' must be 4-D") as caught:
        client.classify(photo_jpeg("coffee"), 5)
    assert caught.value.status == 422


def test_model_not_found_is_transient_and_says_so(served: Served) -> None:
    served.script.abort = (grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(m)")
    client = client_for(served.target)
    with pytest.raises(TransientError, match="may still be loading"):
        client.fetch_signature()
    assert not client.ready


def test_deadline_exceeded_is_transient(served: Served) -> None:
    client = client_for(served.target, timeout=0.3)
    client.fetch_signature()
    served.script.delay = 1.0
    with pytest.raises(TransientError, match="deadline_exceeded"):
        client.classify(photo_jpeg("coffee"), 5)


def test_one_channel_per_target() -> None:
    target = f"127.0.0.1:{free_port()}"
    assert shared_channel(target) is shared_channel(target)


def test_concurrent_classify_calls_share_the_client(served: Served) -> None:
    client = client_for(served.target)
    client.fetch_signature()
    jpeg = photo_jpeg("coffee")
    results: list[int | None] = []
    lock = threading.Lock()

    def work() -> None:
        label = client.classify(jpeg, 1).labels[0]
        with lock:
            results.append(label.class_id)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [285] * 6
    assert len(served.script.requests) == 6
