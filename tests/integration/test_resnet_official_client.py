"""The official client path: a PredictRequest built line by line as TF Serving's example
`resnet_client_grpc.py` builds it, sent through our channel to the real model server; and our
own request builder must produce the very same bytes."""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

from common.tfserving import TFServingClient, TFServingSettings, tensor_to_array
from tests.fixtures.modelserver import ModelServer
from tests.fixtures.resnet import photo_jpeg

CAT_IDS = {281, 282, 283, 284, 285}


def make_tensor_proto(values: bytes | np.ndarray, shape: list[int]) -> tensor_pb2.TensorProto:
    """What tf.make_tensor_proto returns for these two cases (bytes; a numeric ndarray)."""
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in shape]
    proto = tensor_pb2.TensorProto(tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims))
    if isinstance(values, bytes):
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.append(values)
    else:
        proto.dtype = types_pb2.DT_FLOAT
        proto.tensor_content = np.ascontiguousarray(values, "<f4").tobytes()
    return proto


def test_the_example_client_request_goes_through_our_channel(modelserver: ModelServer) -> None:
    client = TFServingClient(TFServingSettings(modelserver.grpc_target, "resnet"), 40_000_000)
    client.connect()
    data = photo_jpeg("chelsea")

    # As in tensorflow_serving/example/resnet_client_grpc.py:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "resnet"
    request.model_spec.signature_name = "serving_default"
    request.inputs["image_bytes"].CopyFrom(make_tensor_proto(data, shape=[1]))
    result = client.stub.Predict(request, 10.0)

    # The example prints `classes`: an index into the model's 1001 columns (0 = background).
    [column] = tensor_to_array(result.outputs["classes"]).tolist()
    probabilities = tensor_to_array(result.outputs["probabilities"])
    assert probabilities.shape == (1, 1001)
    assert column == int(np.argmax(probabilities[0]))
    assert column - 1 in CAT_IDS

    # Through the client's own predict() (error mapping, timeout), the same answer.
    again = client.predict(request)
    assert tensor_to_array(again.outputs["classes"]).tolist() == [column]
    # And the client's request builder writes exactly the example's bytes.
    client.fetch_signature()
    assert client.request_for(data).SerializeToString(deterministic=True) == (
        request.SerializeToString(deterministic=True)
    )


def test_a_pixel_request_built_by_hand_matches_ours(modelserver: ModelServer) -> None:
    client = TFServingClient(TFServingSettings(modelserver.grpc_target, "mobilenet_v2"), 40_000_000)
    client.connect()
    client.fetch_signature()
    ours = client.request_for(photo_jpeg("coffee"))
    pixels = tensor_to_array(ours.inputs["images"])

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mobilenet_v2"
    request.model_spec.signature_name = "serving_default"
    request.inputs["images"].CopyFrom(make_tensor_proto(pixels, shape=[1, 224, 224, 3]))
    assert request.SerializeToString(deterministic=True) == ours.SerializeToString(
        deterministic=True
    )
    result = client.predict(request)
    top5 = np.argsort(-tensor_to_array(result.outputs["probabilities"])[0])[:5]
    assert {504, 968} & set(top5.tolist())
