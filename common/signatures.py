"""What a TF Serving model's signature says, from GetModelMetadata, and how an image is fed to it.

What is sent follows the signature's single input:
- DT_STRING (the seed's `image_bytes` ResNet export): the encoded image, as uploaded; the server
  decodes it.
- DT_FLOAT or DT_UINT8 of shape [-1, H, W, 3]: RGB pixels 0..255 of that size and dtype, resized
  and cropped by the client (`common.images`); normalization is the model's business.

A signature that takes anything else, or answers with no class scores or classes, is refused with
`UnsupportedSignature` (503: the operator fixes MODEL_NAME, MODEL_SIGNATURE or the model).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

from common.errors import TransientError
from common.images import PixelDType
from common.scores import CLASS_OUTPUTS, SCORE_OUTPUTS
from common.tensors import TensorSpec

SIGNATURE_DEF = "signature_def"
DEFAULT_PIXEL_SIZE = 224  # when a pixel signature leaves H and W open (-1)

_PIXEL_DTYPES: dict[int, PixelDType] = {types_pb2.DT_FLOAT: "float32", types_pb2.DT_UINT8: "uint8"}
_FLOATING = (types_pb2.DT_FLOAT, types_pb2.DT_HALF)

InputKind = Literal["image_bytes", "pixels"]


@dataclass(frozen=True)
class ModelSignature:
    """What GetModelMetadata said about one signature, and how we will feed it."""

    model_name: str
    signature_name: str
    version: int | None
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]

    @property
    def input(self) -> TensorSpec:
        """The image input: the signature's only input."""
        return next(iter(self.inputs.values()))

    @property
    def input_kind(self) -> InputKind:
        return "image_bytes" if self.input.dtype == types_pb2.DT_STRING else "pixels"

    @property
    def pixel_size(self) -> tuple[int, int]:
        """(height, width) of a pixel input; unknown dimensions fall back to 224."""
        shape = self.input.shape or (-1, -1, -1, 3)
        height, width = shape[1], shape[2]
        return (
            height if height > 0 else DEFAULT_PIXEL_SIZE,
            width if width > 0 else DEFAULT_PIXEL_SIZE,
        )

    @property
    def pixel_dtype(self) -> PixelDType:
        return _PIXEL_DTYPES[self.input.dtype]

    def describe(self) -> str:
        """One line for the start-up log: `images DT_FLOAT [-1,224,224,3] -> probabilities...`."""
        ins = ", ".join(t.describe() for t in self.inputs.values())
        outs = ", ".join(t.describe() for t in self.outputs.values())
        return f"{ins} -> {outs}"


class UnsupportedSignature(TransientError):
    """The model exists but its signature is not one we can feed an image to.

    Transient (503), because the fix is on the operator's side (MODEL_NAME, MODEL_SIGNATURE or
    the model itself) and the events are still good once it is made.
    """


def parse_signature(
    response: get_model_metadata_pb2.GetModelMetadataResponse, signature_name: str
) -> ModelSignature:
    """The named signature from a GetModelMetadata answer, checked to take an image."""
    model = response.model_spec.name
    signatures = get_model_metadata_pb2.SignatureDefMap()
    if SIGNATURE_DEF not in response.metadata or not response.metadata[SIGNATURE_DEF].Unpack(
        signatures
    ):
        raise UnsupportedSignature(f"model {model!r} returned no signature_def metadata")
    if signature_name not in signatures.signature_def:
        known = ", ".join(sorted(signatures.signature_def)) or "none"
        raise UnsupportedSignature(
            f"model {model!r} has no signature {signature_name!r} (it has: {known}); "
            "set MODEL_SIGNATURE"
        )
    definition = signatures.signature_def[signature_name]
    signature = ModelSignature(
        model_name=model,
        signature_name=signature_name,
        version=response.model_spec.version.value
        if response.model_spec.HasField("version")
        else None,
        inputs={k: TensorSpec.from_tensor_info(k, v) for k, v in sorted(definition.inputs.items())},
        outputs={
            k: TensorSpec.from_tensor_info(k, v) for k, v in sorted(definition.outputs.items())
        },
    )
    _check_feedable(signature)
    return signature


def _check_feedable(signature: ModelSignature) -> None:
    where = f"model {signature.model_name!r} signature {signature.signature_name!r}"
    if len(signature.inputs) != 1:
        raise UnsupportedSignature(
            f"{where} has {len(signature.inputs)} inputs; an image classifier has exactly one"
        )
    spec = signature.input
    if spec.dtype == types_pb2.DT_STRING:
        return
    rank_ok = spec.shape is not None and len(spec.shape) == 4 and spec.shape[3] in (3, -1)
    if spec.dtype not in _PIXEL_DTYPES or not rank_ok:
        raise UnsupportedSignature(
            f"{where}: input {spec.name!r} is {spec.dtype_name} {list(spec.shape or [])}; "
            "expected DT_STRING (encoded image) or DT_FLOAT/DT_UINT8 [-1, H, W, 3] (RGB pixels)"
        )
    named = any(name in signature.outputs for name in (*SCORE_OUTPUTS, *CLASS_OUTPUTS))
    if not named and not any(t.dtype in _FLOATING for t in signature.outputs.values()):
        raise UnsupportedSignature(f"{where} has no class-score or classes output")
