"""The model server with TF Serving's batching flags: concurrent Predicts over gRPC and REST give
the unbatched server's answers, and a full queue is UNAVAILABLE / 503."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from common.tensors import from_numpy, to_numpy
from testkit.services import running_modelserver
from tests.fixtures.modelserver import (
    ModelServer,
    photo_jpeg,
    photo_pixels,
    write_model_config,
)

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
TIMEOUT = 60.0
# Measured bit-identical here; see tests/unit/test_modelserver_batching.py.
BATCHED_TOLERANCE = 1e-6


def _server(
    log_dir: Path, factory: pytest.TempPathFactory, name: str, parameters: str
) -> Iterator[ModelServer]:
    """A model server with batching on, under TF Serving's own flags and parameters file."""
    tmp = factory.mktemp(name)
    (tmp / "batching.txt").write_text(parameters)
    extra = (
        "--intra_op_threads", "1", "--enable_batching",
        "--batching_parameters_file", str(tmp / "batching.txt"),
    )  # fmt: skip
    with running_modelserver(log_dir, write_model_config(tmp / "models.json"), extra=extra) as s:
        yield s


Factory = pytest.TempPathFactory
BATCHING = "max_batch_size { value: 8 }\nnum_batch_threads { value: 1 }\n"
TINY_QUEUE = "max_batch_size { value: 1 }\nmax_enqueued_batches { value: 1 }\n"


@pytest.fixture(scope="module")
def batching_server(log_dir: Path, tmp_path_factory: Factory) -> Iterator[ModelServer]:
    yield from _server(log_dir, tmp_path_factory, "batching", BATCHING)


@pytest.fixture(scope="module")
def tiny_queue_server(log_dir: Path, tmp_path_factory: Factory) -> Iterator[ModelServer]:
    yield from _server(log_dir, tmp_path_factory, "tiny-queue", TINY_QUEUE)


def _predict(target: str, pixels: np.ndarray, model: str = "mobilenet_v2") -> dict[str, np.ndarray]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["images"].CopyFrom(from_numpy(pixels))
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=TIMEOUT)
    return {name: to_numpy(proto) for name, proto in response.outputs.items()}


def test_concurrent_grpc_predicts_equal_the_unbatched_server(
    modelserver: ModelServer, batching_server: ModelServer
) -> None:
    pixels = [photo_pixels(name)[np.newaxis].astype(np.float32) for name in PHOTOS]
    expected = [_predict(modelserver.grpc_target, p) for p in pixels]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda p: _predict(batching_server.grpc_target, p), pixels * 4))
    for result, want in zip(got, expected * 4, strict=True):
        np.testing.assert_array_equal(result["classes"], want["classes"])
        np.testing.assert_allclose(
            result["probabilities"], want["probabilities"], atol=BATCHED_TOLERANCE, rtol=0
        )
    # A multi-image request (larger than max_batch_size: split) keeps working, in uint8 too.
    many = np.concatenate([photo_pixels(name)[np.newaxis] for name in PHOTOS * 3])
    result = _predict(batching_server.grpc_target, many)
    np.testing.assert_array_equal(
        result["classes"], np.concatenate([w["classes"] for w in expected * 3])
    )


def test_rest_and_image_bytes_through_the_batcher(batching_server: ModelServer) -> None:
    data = base64.b64encode(photo_jpeg("chelsea")).decode()
    with ThreadPoolExecutor(4) as pool:
        responses = list(
            pool.map(
                lambda _: httpx.post(
                    batching_server.rest_url + "/v1/models/resnet:predict",
                    json={"instances": [{"b64": data}]},
                    timeout=TIMEOUT,
                ),
                range(8),
            )
        )
    for response in responses:
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["classes"] - 1 in range(281, 286)


def test_a_full_queue_is_unavailable_and_503(tiny_queue_server: ModelServer) -> None:
    # Three images need three batches of one; the queue holds one: refused whole, at once.
    three = np.stack([photo_pixels(name) for name in PHOTOS[:3]])
    with pytest.raises(grpc.RpcError) as caught:
        _predict(tiny_queue_server.grpc_target, three)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "batch scheduling queue" in str(caught.value.details())
    response = httpx.post(
        tiny_queue_server.rest_url + "/v1/models/mobilenet_v2:predict",
        json={"inputs": three.tolist()},
        timeout=TIMEOUT,
    )
    assert response.status_code == 503
    assert "batch scheduling queue" in response.json()["error"]
    # One image fits and is served.
    assert _predict(tiny_queue_server.grpc_target, three[:1])["classes"].shape == (1,)
