"""Model signatures as TF Serving describes them: `SignatureDefMap` protos (gRPC metadata) and
their JSON form (REST metadata), so clients can read input names, dtypes and shapes."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from tensorflow.core.framework import tensor_shape_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

from modelserver.registry import ServedModel, TensorSpec
from modelserver.tensors import dtype_enum

SIGNATURE_DEF_FIELD = "signature_def"


def tensor_info(spec: TensorSpec) -> meta_graph_pb2.TensorInfo:
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in spec.shape]
    )
    # The ":0" suffix mirrors TF graph tensor names in real SignatureDefs.
    return meta_graph_pb2.TensorInfo(
        name=f"{spec.name}:0", dtype=dtype_enum(spec.dtype), tensor_shape=shape
    )


def signature_def_map(model: ServedModel) -> get_model_metadata_pb2.SignatureDefMap:
    result = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in model.signatures.items():
        signature_def = result.signature_def[key]
        signature_def.method_name = signature.method_name
        for spec in signature.inputs:
            signature_def.inputs[spec.name].CopyFrom(tensor_info(spec))
        for spec in signature.outputs:
            signature_def.outputs[spec.name].CopyFrom(tensor_info(spec))
    return result


def signature_def_json(model: ServedModel) -> dict[str, Any]:
    """The REST metadata body's `signature_def` object, as TF Serving prints it."""
    as_dict: dict[str, Any] = json_format.MessageToDict(
        signature_def_map(model),
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    return as_dict
