"""TensorFlow `TensorProto` <-> numpy, by hand (no TensorFlow), for the TF Serving client and the
model server alike: dtype, shape, and the values either as raw little-endian `tensor_content` or
in the typed repeated fields (`float_val`, `int_val`, ...). Also `TensorSpec`, one input or output
of a signature as GetModelMetadata describes it.

Reading follows TensorFlow's rules (tf.make_ndarray, and Tensor::FromProto on the server):
`tensor_content` wins when present; otherwise the repeated field for the dtype holds the values,
fewer values than elements means "repeat the last one" (a lone scalar fills the shape), and no
values at all means zeros. Strings travel as numpy object arrays of `bytes`. Writing always uses
`tensor_content` (one copy, fastest to parse, what tf.make_tensor_proto writes) except for strings,
which only have `string_val`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

STRING = np.dtype(object)  # how DT_STRING tensors travel as numpy: object arrays of bytes

# DataType enum -> (numpy dtype as sent, repeated field holding the values without tensor_content)
_DTYPES: dict[int, tuple[np.dtype[Any], str]] = {
    types_pb2.DT_FLOAT: (np.dtype("<f4"), "float_val"),
    types_pb2.DT_DOUBLE: (np.dtype("<f8"), "double_val"),
    types_pb2.DT_HALF: (np.dtype("<f2"), "half_val"),
    types_pb2.DT_INT8: (np.dtype("i1"), "int_val"),
    types_pb2.DT_UINT8: (np.dtype("u1"), "int_val"),
    types_pb2.DT_INT16: (np.dtype("<i2"), "int_val"),
    types_pb2.DT_UINT16: (np.dtype("<u2"), "int_val"),
    types_pb2.DT_INT32: (np.dtype("<i4"), "int_val"),
    types_pb2.DT_UINT32: (np.dtype("<u4"), "uint32_val"),
    types_pb2.DT_INT64: (np.dtype("<i8"), "int64_val"),
    types_pb2.DT_UINT64: (np.dtype("<u8"), "uint64_val"),
    types_pb2.DT_BOOL: (np.dtype("?"), "bool_val"),
    types_pb2.DT_STRING: (STRING, "string_val"),
}
_ENUM_BY_DTYPE = {np.dtype(dtype.newbyteorder("=")): enum for enum, (dtype, _) in _DTYPES.items()}


class TensorConversionError(ValueError):
    """A TensorProto that cannot become an array (unsupported dtype, inconsistent size)."""


def dtype_name(enum: int) -> str:
    return str(types_pb2.DataType.Name(enum)) if enum in types_pb2.DataType.values() else str(enum)


def numpy_dtype(enum: int) -> np.dtype[Any]:
    """The numpy dtype of a DataType, in native byte order."""
    try:
        return np.dtype(_DTYPES[enum][0].newbyteorder("="))
    except KeyError:
        raise TensorConversionError(f"unsupported tensor dtype {dtype_name(enum)}") from None


def dtype_enum(dtype: np.dtype[Any]) -> int:
    if dtype == STRING or dtype.kind in "SU":
        return int(types_pb2.DT_STRING)
    try:
        return int(_ENUM_BY_DTYPE[np.dtype(dtype.newbyteorder("="))])
    except KeyError:
        raise TensorConversionError(f"numpy dtype {dtype} has no TensorFlow equivalent") from None


def shape_proto(shape: tuple[int, ...]) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(size)) for size in shape]
    )


def shape_of(proto: tensor_pb2.TensorProto) -> tuple[int, ...]:
    if proto.tensor_shape.unknown_rank:
        raise TensorConversionError("tensor has unknown rank; a concrete shape is required")
    shape = tuple(int(dim.size) for dim in proto.tensor_shape.dim)
    if any(size < 0 for size in shape):
        raise TensorConversionError(f"tensor shape {list(shape)} has an unknown dimension")
    return shape


def to_numpy(proto: tensor_pb2.TensorProto) -> npt.NDArray[Any]:
    """A TensorProto as a numpy array (native byte order; object array of bytes for strings)."""
    dtype, field = _DTYPES.get(proto.dtype, (None, ""))
    if dtype is None:
        raise TensorConversionError(f"unsupported tensor dtype {dtype_name(proto.dtype)}")
    native = np.dtype(dtype.newbyteorder("="))
    shape = shape_of(proto)
    count = math.prod(shape)
    values: npt.NDArray[Any]
    if dtype == STRING:
        values = np.empty(len(proto.string_val), dtype=object)
        values[:] = list(proto.string_val)
    elif proto.tensor_content:
        size, needed = len(proto.tensor_content), count * dtype.itemsize
        if size != needed:
            raise TensorConversionError(
                f"tensor_content holds {size // dtype.itemsize} values ({size} bytes); shape "
                f"{list(shape)} of {dtype_name(proto.dtype)} needs {needed} bytes"
            )
        array = np.frombuffer(proto.tensor_content, dtype=dtype).reshape(shape)
        return array.astype(native, copy=False)
    elif proto.dtype == types_pb2.DT_HALF:
        # half_val carries the IEEE half bit patterns in int32 slots.
        values = np.asarray(proto.half_val, dtype=np.uint16).view(np.float16)
    else:
        values = np.asarray(getattr(proto, field), dtype=native)
    if values.size == count:
        return values.reshape(shape)
    if values.size == 0:
        return np.full(shape, b"", dtype=object) if dtype == STRING else np.zeros(shape, native)
    if values.size < count:
        filled = np.empty(count, dtype=values.dtype)
        filled[: values.size] = values
        filled[values.size :] = values[-1]
        return filled.reshape(shape)
    raise TensorConversionError(
        f"tensor of shape {list(shape)} needs {count} values, got {values.size} in {field}"
    )


def from_numpy(array: npt.ArrayLike) -> tensor_pb2.TensorProto:
    """A numpy array (or nested list / bytes sequence) as a TensorProto."""
    proto = tensor_pb2.TensorProto()
    fill_tensor(proto, array)
    return proto


def fill_tensor(proto: tensor_pb2.TensorProto, array: npt.ArrayLike) -> None:
    """Write an array into `proto` in place, e.g. `request.inputs["images"]`: building a separate
    TensorProto and `CopyFrom`-ing it would copy the values once more."""
    values = np.asarray(array)
    proto.dtype = dtype_enum(values.dtype)
    proto.tensor_shape.CopyFrom(shape_proto(values.shape))
    if proto.dtype == types_pb2.DT_STRING:
        proto.string_val.extend(
            item if isinstance(item, bytes) else str(item).encode() for item in values.reshape(-1)
        )
    else:
        little_endian = values.astype(values.dtype.newbyteorder("<"), copy=False)
        proto.tensor_content = np.ascontiguousarray(little_endian).tobytes()


def fill_pixels(
    proto: tensor_pb2.TensorProto, rgb: bytes, shape: tuple[int, ...], dtype: int
) -> None:
    """A uint8 RGB buffer (Pillow's `tobytes()`, HWC order) as a DT_UINT8 tensor of `shape`,
    without passing through numpy: the bytes become `tensor_content` as they are."""
    if dtype != types_pb2.DT_UINT8:
        raise TensorConversionError(f"fill_pixels writes DT_UINT8, not {dtype_name(dtype)}")
    if len(rgb) != math.prod(shape):
        raise TensorConversionError(f"{len(rgb)} bytes do not fill shape {list(shape)}")
    proto.dtype = dtype
    proto.tensor_shape.CopyFrom(shape_proto(shape))
    proto.tensor_content = rgb


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature: a TF DataType, a shape (None for unknown rank, -1 for
    any size) and, for an input that takes several dtypes, the ones it accepts."""

    name: str
    dtype: int  # types_pb2.DataType, e.g. DT_FLOAT
    shape: tuple[int, ...] | None
    accepted_dtypes: tuple[int, ...] = ()

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.dtype)

    def accepts(self) -> tuple[int, ...]:
        return self.accepted_dtypes or (self.dtype,)

    def describe(self) -> str:
        """`images DT_FLOAT [-1,224,224,3]`; `?` for an unknown rank."""
        dims = "?" if self.shape is None else ",".join(str(d) for d in self.shape)
        return f"{self.name} {self.dtype_name} [{dims}]"

    @classmethod
    def from_tensor_info(cls, name: str, info: meta_graph_pb2.TensorInfo) -> TensorSpec:
        shape = None
        if not info.tensor_shape.unknown_rank:
            shape = tuple(int(dim.size) for dim in info.tensor_shape.dim)
        return cls(name, int(info.dtype), shape)

    def tensor_info(self) -> meta_graph_pb2.TensorInfo:
        info = meta_graph_pb2.TensorInfo(name=f"{self.name}:0", dtype=self.dtype)
        # The ":0" suffix mirrors TF graph tensor names in real SignatureDefs.
        if self.shape is None:
            info.tensor_shape.unknown_rank = True
        else:
            info.tensor_shape.CopyFrom(shape_proto(self.shape))
        return info
