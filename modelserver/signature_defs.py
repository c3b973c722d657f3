"""The served models' signatures (what GetModelMetadata describes) and the check of a request's
inputs against one; messages say what was expected.

Pixel models have two signatures, as a SavedModel may: `serving_default` takes `images` as
DT_FLOAT (DT_UINT8 accepted too), and `serving_uint8` takes the same pixels as DT_UINT8 only, so a
client that reads the metadata sends 1 byte per value instead of 4 (MODEL_SIGNATURE=serving_uint8).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from tensorflow.core.framework import types_pb2

from common.tensors import TensorConversionError, TensorSpec, dtype_enum, dtype_name, numpy_dtype
from modelserver import graphs

DEFAULT_SIGNATURE = "serving_default"
UINT8_SIGNATURE = "serving_uint8"
PREDICT_METHOD = "tensorflow/serving/predict"
MAX_BATCH = 64


class InvalidInputError(ValueError):
    """Request does not fit the signature (INVALID_ARGUMENT / HTTP 400)."""


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    method_name: str = PREDICT_METHOD

    def input(self, name: str) -> TensorSpec:
        return next(spec for spec in self.inputs if spec.name == name)


def pixel_signatures(num_classes: int) -> dict[str, Signature]:
    """`serving_default` (float32, uint8 accepted) and `serving_uint8` of a pixel model whose
    `probabilities` has `num_classes` columns (1000 for ImageNet, 2 for open_nsfw)."""
    outputs = (
        TensorSpec(graphs.PROBABILITIES, types_pb2.DT_FLOAT, (-1, num_classes)),
        TensorSpec(graphs.CLASSES, types_pb2.DT_INT64, (-1,)),
    )
    shape = (-1, graphs.IMAGE_SIZE, graphs.IMAGE_SIZE, 3)
    images = TensorSpec(
        graphs.INPUT_NAME, types_pb2.DT_FLOAT, shape, (types_pb2.DT_FLOAT, types_pb2.DT_UINT8)
    )
    images_uint8 = TensorSpec(graphs.INPUT_NAME, types_pb2.DT_UINT8, shape)
    return {
        DEFAULT_SIGNATURE: Signature(inputs=(images,), outputs=outputs),
        UINT8_SIGNATURE: Signature(inputs=(images_uint8,), outputs=outputs),
    }


IMAGE_BYTES_INPUT = "image_bytes"
IMAGE_BYTES_SIGNATURE = Signature(
    inputs=(TensorSpec(IMAGE_BYTES_INPUT, types_pb2.DT_STRING, (-1,)),),
    outputs=(
        TensorSpec(graphs.PROBABILITIES, types_pb2.DT_FLOAT, (-1, 1001)),
        TensorSpec(graphs.CLASSES, types_pb2.DT_INT64, (-1,)),
    ),
)


def validate_inputs(
    signature: Signature, inputs: Mapping[str, npt.NDArray[Any]]
) -> dict[str, npt.NDArray[Any]]:
    """Check names, dtypes and shapes against the signature; messages say what was expected."""
    expected = {spec.name for spec in signature.inputs}
    given = set(inputs)
    if given != expected:
        wanted = ", ".join(_describe(spec) for spec in signature.inputs)
        missing = sorted(expected - given)
        extra = sorted(given - expected)
        problems = []
        if missing:
            problems.append(f"missing {missing}")
        if extra:
            problems.append(f"unexpected {extra}")
        raise InvalidInputError(
            f"input names do not match the signature ({'; '.join(problems)}); "
            f"expected inputs: {wanted}"
        )
    checked: dict[str, npt.NDArray[Any]] = {}
    for spec in signature.inputs:
        array = inputs[spec.name]
        if array.dtype not in [numpy_dtype(d) for d in spec.accepts()]:
            raise InvalidInputError(
                f"input '{spec.name}' has dtype {_dtype_name(array.dtype)}, expected "
                f"{' or '.join(dtype_name(d) for d in spec.accepts())}"
            )
        shape = spec.shape or ()
        shape_ok = array.ndim == len(shape) and all(
            want == -1 or want == got for want, got in zip(shape, array.shape, strict=True)
        )
        if not shape_ok:
            raise InvalidInputError(
                f"input '{spec.name}' has shape {list(array.shape)}, expected {list(shape)} "
                "(-1 = any batch size)"
            )
        if array.shape[0] < 1 or array.shape[0] > MAX_BATCH:
            raise InvalidInputError(
                f"input '{spec.name}' has batch size {array.shape[0]}, expected 1..{MAX_BATCH}"
            )
        checked[spec.name] = array
    return checked


def _dtype_name(dtype: np.dtype[Any]) -> str:
    try:
        return dtype_name(dtype_enum(dtype))
    except TensorConversionError:
        return str(dtype)


def _describe(spec: TensorSpec) -> str:
    """`images (float32/uint8 [-1, 224, 224, 3])`, for messages about a request."""
    names = ["string" if d == types_pb2.DT_STRING else str(numpy_dtype(d)) for d in spec.accepts()]
    return f"{spec.name} ({'/'.join(names)} {list(spec.shape or ())})"
