"""The model server over real gRPC, driven the way TF Serving's own example clients do it."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from common.tensors import from_numpy, to_numpy
from tests.fixtures.modelserver import ModelServer, photo_jpeg, photo_pixels

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
CUP_CLASSES = {504, 968}  # coffee mug, cup
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def stub(modelserver: ModelServer) -> Iterator[prediction_service_pb2_grpc.PredictionServiceStub]:
    with grpc.insecure_channel(modelserver.grpc_target) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _request(model: str, images: np.ndarray) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "serving_default"
    request.inputs["images"].CopyFrom(from_numpy(images))
    return request


def _top5(probabilities: np.ndarray) -> set[int]:
    return {int(i) for i in np.argsort(-probabilities)[:5]}


@pytest.mark.parametrize("model", ["mobilenet_v2", "efficientnet_lite0"])
def test_predict_real_photos_batch_of_two(
    stub: prediction_service_pb2_grpc.PredictionServiceStub, model: str
) -> None:
    images = np.stack([photo_pixels("chelsea"), photo_pixels("coffee")]).astype(np.float32)
    response = stub.Predict(_request(model, images), timeout=TIMEOUT)
    probabilities = to_numpy(response.outputs["probabilities"])
    classes = to_numpy(response.outputs["classes"])
    assert probabilities.shape == (2, 1000) and probabilities.dtype == np.float32
    assert classes.shape == (2,) and classes.dtype == np.int64
    assert _top5(probabilities[0]) & CAT_CLASSES
    assert _top5(probabilities[1]) & CUP_CLASSES
    assert classes.tolist() == np.argmax(probabilities, axis=1).tolist()
    assert response.model_spec.name == model
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"


def test_uint8_and_float32_inputs_give_the_same_answer(
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    pixels = photo_pixels("chelsea")[None]
    as_uint8 = stub.Predict(_request("mobilenet_v2", pixels), timeout=TIMEOUT)
    as_float = stub.Predict(_request("mobilenet_v2", pixels.astype(np.float32)), timeout=TIMEOUT)
    np.testing.assert_allclose(
        to_numpy(as_uint8.outputs["probabilities"]),
        to_numpy(as_float.outputs["probabilities"]),
        atol=1e-6,
    )
    assert int(to_numpy(as_uint8.outputs["classes"])[0]) in CAT_CLASSES


def test_official_client_path(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    """Like TF Serving's resnet_client_grpc.py, with the TensorProto built field by field
    (tf.make_tensor_proto needs TensorFlow) and the values in float_val, not tensor_content."""
    pixels = photo_pixels("coffee").astype(np.float32)
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=n) for n in (1, 224, 224, 3)]
        ),
        float_val=pixels.reshape(-1).tolist(),
    )
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "efficientnet_lite0"
    request.model_spec.signature_name = "serving_default"
    request.inputs["images"].CopyFrom(tensor)
    result = stub.Predict(request, 10.0)  # 10 secs timeout, as in the example client
    probabilities = to_numpy(result.outputs["probabilities"])
    assert _top5(probabilities[0]) & CUP_CLASSES


def test_image_bytes_model_has_1001_classes_with_background(
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "resnet"
    request.model_spec.signature_name = "serving_default"
    request.inputs["image_bytes"].CopyFrom(
        from_numpy(np.array([photo_jpeg("chelsea"), photo_jpeg("coffee")], dtype=object))
    )
    response = stub.Predict(request, timeout=TIMEOUT)
    probabilities = to_numpy(response.outputs["probabilities"])
    classes = to_numpy(response.outputs["classes"])
    assert probabilities.shape == (2, 1001)
    assert np.all(probabilities[:, 0] == 0.0)  # background
    assert int(classes[0]) - 1 in CAT_CLASSES  # output i+1 is ImageNet class i
    assert {i - 1 for i in _top5(probabilities[1])} & CUP_CLASSES
    assert classes.tolist() == np.argmax(probabilities, axis=1).tolist()


def signature_defs(
    stub: prediction_service_pb2_grpc.PredictionServiceStub, model: str
) -> tuple[get_model_metadata_pb2.GetModelMetadataResponse, get_model_metadata_pb2.SignatureDefMap]:
    """GetModelMetadata for `model`'s signature_def, unpacked as TF Serving's clients do."""
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = model
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, timeout=TIMEOUT)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    return response, signature_map


def test_metadata_is_a_real_signature_def_map(
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    response, signature_map = signature_defs(stub, "mobilenet_v2")
    signature = signature_map.signature_def["serving_default"]
    images = signature.inputs["images"]
    assert images.dtype == types_pb2.DT_FLOAT
    assert [d.size for d in images.tensor_shape.dim] == [-1, 224, 224, 3]
    assert signature.outputs["classes"].dtype == types_pb2.DT_INT64
    assert [d.size for d in signature.outputs["probabilities"].tensor_shape.dim] == [-1, 1000]
    assert signature.method_name == "tensorflow/serving/predict"
    assert response.model_spec.version.value == 1


def test_image_bytes_metadata_declares_dt_string(
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    _, signature_map = signature_defs(stub, "resnet")
    inputs = signature_map.signature_def["serving_default"].inputs
    assert list(inputs) == ["image_bytes"] and inputs["image_bytes"].dtype == types_pb2.DT_STRING


def _code_and_details(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    error: Any = info.value  # a grpc.Call as well as an RpcError
    return error.code(), error.details()


def test_unknown_model_and_version_are_not_found(
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    pixels = photo_pixels("chelsea")[None]
    code, details = _code_and_details(
        lambda: stub.Predict(_request("nope", pixels), timeout=TIMEOUT)
    )
    assert code == grpc.StatusCode.NOT_FOUND and "nope" in details
    request = _request("mobilenet_v2", pixels)
    request.model_spec.version.value = 7
    code, details = _code_and_details(lambda: stub.Predict(request, timeout=TIMEOUT))
    assert code == grpc.StatusCode.NOT_FOUND and "7" in details
    metadata_request = get_model_metadata_pb2.GetModelMetadataRequest()
    metadata_request.model_spec.name = "nope"
    metadata_request.metadata_field.append("signature_def")
    code, _ = _code_and_details(lambda: stub.GetModelMetadata(metadata_request, timeout=TIMEOUT))
    assert code == grpc.StatusCode.NOT_FOUND


def test_unknown_signature_is_not_found(
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    request = _request("mobilenet_v2", photo_pixels("chelsea")[None])
    request.model_spec.signature_name = "classify"
    code, details = _code_and_details(lambda: stub.Predict(request, timeout=TIMEOUT))
    assert code == grpc.StatusCode.NOT_FOUND and "classify" in details


@pytest.mark.parametrize(
    ("name", "array", "expected"),
    [
        ("pixels", np.zeros((1, 224, 224, 3), np.float32), "expected inputs: images"),
        ("images", np.zeros((1, 3, 224, 224), np.float32), "expected [-1, 224, 224, 3]"),
        ("images", np.zeros((224, 224, 3), np.float32), "expected [-1, 224, 224, 3]"),
        ("images", np.zeros((1, 224, 224, 3), np.int64), "expected DT_FLOAT or DT_UINT8"),
    ],
    ids=["wrong-name", "nchw", "no-batch-dim", "int64"],
)
def test_bad_inputs_are_invalid_argument(
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
    name: str,
    array: np.ndarray,
    expected: str,
) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mobilenet_v2"
    request.inputs[name].CopyFrom(from_numpy(array))
    code, details = _code_and_details(lambda: stub.Predict(request, timeout=TIMEOUT))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in details


def test_undecodable_image_bytes_is_invalid_argument(
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "resnet"
    request.inputs["image_bytes"].CopyFrom(from_numpy(np.array([b"not an image"], dtype=object)))
    code, details = _code_and_details(lambda: stub.Predict(request, timeout=TIMEOUT))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "image_bytes[0]" in details


def test_eight_concurrent_predicts_all_succeed(
    stub: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    photos = ["chelsea", "coffee"] * 4
    requests = [
        _request("mobilenet_v2" if i % 2 else "efficientnet_lite0", photo_pixels(p)[None])
        for i, p in enumerate(photos)
    ]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(stub.Predict, r, timeout=TIMEOUT) for r in requests]
        responses = [f.result() for f in futures]
    for photo, response in zip(photos, responses, strict=True):
        top5 = _top5(to_numpy(response.outputs["probabilities"])[0])
        assert top5 & (CAT_CLASSES if photo == "chelsea" else CUP_CLASSES)
