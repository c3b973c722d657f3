"""The pixel models' `serving_uint8` signature: the client reads it from the metadata and sends
1 byte per value, and the answer is the float32 request's, bit for bit."""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import types_pb2

from common.tfserving import TFServingClient, TFServingSettings, tensor_to_array
from tests.fixtures.modelserver import ModelServer, photo_jpeg

PIXELS = 224 * 224 * 3


def _client(server: ModelServer, signature: str) -> TFServingClient:
    client = TFServingClient(
        TFServingSettings(server.grpc_target, "mobilenet_v2", signature), 40_000_000
    )
    client.connect()
    client.fetch_signature()
    return client


def test_uint8_signature_sends_a_quarter_of_the_bytes_for_the_same_answer(
    modelserver: ModelServer,
) -> None:
    small, large = _client(modelserver, "serving_uint8"), _client(modelserver, "serving_default")
    assert small.signature is not None and small.signature.input.dtype == types_pb2.DT_UINT8
    for photo in ("chelsea", "coffee"):
        data = photo_jpeg(photo)
        uint8_request, float_request = small.request_for(data), large.request_for(data)
        uint8_tensor, float_tensor = uint8_request.inputs["images"], float_request.inputs["images"]
        assert uint8_tensor.dtype == types_pb2.DT_UINT8
        assert [d.size for d in uint8_tensor.tensor_shape.dim] == [1, 224, 224, 3]
        assert len(uint8_tensor.tensor_content) == PIXELS
        assert len(float_tensor.tensor_content) == 4 * PIXELS
        # The very same pixels, in both dtypes.
        np.testing.assert_array_equal(
            tensor_to_array(uint8_tensor).astype(np.float32), tensor_to_array(float_tensor)
        )
        small_answer = small.predict(uint8_request).outputs
        large_answer = large.predict(float_request).outputs
        np.testing.assert_array_equal(
            tensor_to_array(small_answer["probabilities"]),
            tensor_to_array(large_answer["probabilities"]),
        )
        assert small.classify(data, 5) == large.classify(data, 5)
