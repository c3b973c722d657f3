"""TensorProto <-> numpy by hand: dtypes, shapes, tensor_content and the repeated value fields."""

from __future__ import annotations

import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2

from common.tensors import TensorConversionError, from_numpy, to_numpy


@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7,
        np.array([[0, 255], [17, 3]], dtype=np.uint8),
        np.array([-(2**40), 5], dtype=np.int64),
        np.array([1.5, -2.25], dtype=np.float64),
        np.array([True, False]),
        np.zeros((0, 3), dtype=np.float32),
    ],
    ids=["float32", "uint8", "int64", "float64", "bool", "empty"],
)
def test_numeric_round_trip(array: np.ndarray) -> None:
    proto = from_numpy(array)
    back = to_numpy(proto)
    assert back.dtype == array.dtype
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_strings_round_trip_as_bytes() -> None:
    array = np.empty(2, dtype=object)
    array[:] = [b"\xff\xd8jpeg", b""]
    proto = from_numpy(array)
    assert proto.dtype == types_pb2.DT_STRING
    assert list(proto.string_val) == [b"\xff\xd8jpeg", b""]
    assert to_numpy(proto).tolist() == [b"\xff\xd8jpeg", b""]


def test_writes_little_endian_tensor_content_and_shape() -> None:
    proto = from_numpy(np.array([[1.0, 2.0]], dtype=np.float32))
    assert proto.dtype == types_pb2.DT_FLOAT
    assert [d.size for d in proto.tensor_shape.dim] == [1, 2]
    assert proto.tensor_content == np.array([1.0, 2.0], dtype="<f4").tobytes()


def test_reads_repeated_fields_like_tf_make_tensor_proto_writes_them() -> None:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_UINT8)
    proto.tensor_shape.dim.add(size=2)
    proto.tensor_shape.dim.add(size=2)
    proto.int_val.extend([1, 2, 3, 4])
    np.testing.assert_array_equal(to_numpy(proto), np.array([[1, 2], [3, 4]], dtype=np.uint8))


def test_fewer_values_repeat_the_last_one() -> None:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    proto.tensor_shape.dim.add(size=3)
    proto.float_val.append(0.5)
    np.testing.assert_array_equal(to_numpy(proto), [0.5, 0.5, 0.5])


def test_inconsistent_tensor_content_is_an_error() -> None:
    proto = from_numpy(np.zeros((2, 2), dtype=np.float32))
    proto.tensor_shape.dim[0].size = 3
    with pytest.raises(TensorConversionError, match="needs 24"):
        to_numpy(proto)


def test_unsupported_dtype_is_an_error() -> None:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_COMPLEX64)
    with pytest.raises(TensorConversionError, match="DT_COMPLEX64"):
        to_numpy(proto)
