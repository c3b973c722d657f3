"""Model signatures as TF Serving describes them: `SignatureDefMap` protos (gRPC metadata) and
their JSON form (REST metadata), so clients can read input names, dtypes and shapes."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from modelserver.registry import ServedModel

SIGNATURE_DEF_FIELD = "signature_def"


def signature_def_map(model: ServedModel) -> get_model_metadata_pb2.SignatureDefMap:
    result = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in model.signatures.items():
        signature_def = result.signature_def[key]
        signature_def.method_name = signature.method_name
        for spec in signature.inputs:
            signature_def.inputs[spec.name].CopyFrom(spec.tensor_info())
        for spec in signature.outputs:
            signature_def.outputs[spec.name].CopyFrom(spec.tensor_info())
    return result


def signature_def_json(model: ServedModel) -> dict[str, Any]:
    """The REST metadata body's `signature_def` object, as TF Serving prints it."""
    as_dict: dict[str, Any] = json_format.MessageToDict(
        signature_def_map(model),
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    return as_dict
