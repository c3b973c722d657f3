"""The TF Serving client's pure parts: signatures, TensorProtos, scores -> labels, error mapping."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

from common.errors import PermanentError, TransientError
from common.labels import imagenet_name, imagenet_names
from common.scores import is_distribution, labels_from_outputs, top_k_from_scores
from common.signatures import UnsupportedSignature, parse_signature
from common.tfserving import image_bytes_tensor, pixels_tensor, tensor_to_array


def metadata(
    inputs: dict[str, tuple[int, list[int]]],
    outputs: dict[str, tuple[int, list[int]]],
    signature: str = "serving_default",
    model: str = "m",
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """A GetModelMetadataResponse as TF Serving builds it (SignatureDefMap packed in an Any)."""
    signatures = get_model_metadata_pb2.SignatureDefMap()
    definition = signatures.signature_def[signature]
    for target, specs in ((definition.inputs, inputs), (definition.outputs, outputs)):
        for key, (dtype, dims) in specs.items():
            target[key].name = f"{key}:0"
            target[key].dtype = dtype
            target[key].tensor_shape.CopyFrom(
                tensor_shape_pb2.TensorShapeProto(
                    dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]
                )
            )
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = model
    response.model_spec.version.value = 3
    response.metadata["signature_def"].Pack(signatures)
    return response


PIXELS_MODEL = metadata(
    {"images": (types_pb2.DT_FLOAT, [-1, 224, 224, 3])},
    {
        "probabilities": (types_pb2.DT_FLOAT, [-1, 1000]),
        "classes": (types_pb2.DT_INT64, [-1]),
    },
)
SEED_RESNET = metadata(
    {"image_bytes": (types_pb2.DT_STRING, [-1])},
    {
        "probabilities": (types_pb2.DT_FLOAT, [-1, 1001]),
        "classes": (types_pb2.DT_INT64, [-1]),
    },
)


def test_labels_are_imagenet_names() -> None:
    names = imagenet_names()
    assert len(names) == 1000
    assert names[285] == "Egyptian cat" and names[281] == "tabby" and names[504] == "coffee mug"
    assert imagenet_name(0) == "tench"
    assert imagenet_name(1000) == "class 1000"


def test_pixel_signature_is_parsed() -> None:
    signature = parse_signature(PIXELS_MODEL, "serving_default")
    assert signature.model_name == "m" and signature.version == 3
    assert signature.input.name == "images"
    assert signature.input_kind == "pixels"
    assert signature.pixel_size == (224, 224) and signature.pixel_dtype == "float32"
    assert signature.outputs["probabilities"].shape == (-1, 1000)
    assert "images DT_FLOAT [-1,224,224,3]" in signature.describe()


def test_uint8_pixels_and_open_sizes() -> None:
    response = metadata(
        {"input": (types_pb2.DT_UINT8, [-1, -1, -1, 3])},
        {"logits": (types_pb2.DT_FLOAT, [-1, 1000])},
    )
    signature = parse_signature(response, "serving_default")
    assert signature.pixel_dtype == "uint8"
    assert signature.pixel_size == (224, 224)


def test_seed_signature_takes_image_bytes() -> None:
    signature = parse_signature(SEED_RESNET, "serving_default")
    assert signature.input_kind == "image_bytes"
    assert signature.input.shape == (-1,)


def test_missing_signature_names_the_ones_there() -> None:
    with pytest.raises(UnsupportedSignature, match="has: serving_default") as caught:
        parse_signature(PIXELS_MODEL, "predict")
    assert caught.value.status == 503


@pytest.mark.parametrize(
    "inputs",
    [
        {"images": (types_pb2.DT_FLOAT, [-1, 224, 224])},
        {"images": (types_pb2.DT_INT32, [-1, 224, 224, 3])},
        {"a": (types_pb2.DT_STRING, [-1]), "b": (types_pb2.DT_STRING, [-1])},
    ],
)
def test_signatures_we_cannot_feed_are_refused(inputs: dict[str, tuple[int, list[int]]]) -> None:
    response = metadata(inputs, {"probabilities": (types_pb2.DT_FLOAT, [-1, 1000])})
    with pytest.raises(UnsupportedSignature):
        parse_signature(response, "serving_default")


def test_pixels_tensor_has_make_tensor_proto_layout() -> None:
    batch = np.arange(2 * 4 * 5 * 3, dtype=np.float32).reshape(2, 4, 5, 3)
    proto = pixels_tensor(batch)
    assert proto.dtype == types_pb2.DT_FLOAT
    assert [d.size for d in proto.tensor_shape.dim] == [2, 4, 5, 3]
    # tf.make_tensor_proto writes numeric arrays as raw little-endian C-order bytes.
    assert proto.tensor_content == batch.astype("<f4").tobytes()
    assert not proto.float_val
    assert np.array_equal(tensor_to_array(proto), batch)
    as_uint8 = pixels_tensor(batch.astype(np.uint8))
    assert as_uint8.dtype == types_pb2.DT_UINT8 and as_uint8.tensor_content == bytes(range(120))


def test_image_bytes_tensor_is_a_string_tensor_of_one() -> None:
    proto = image_bytes_tensor(b"\xff\xd8jpeg")
    assert proto.dtype == types_pb2.DT_STRING
    assert [d.size for d in proto.tensor_shape.dim] == [1]
    assert list(proto.string_val) == [b"\xff\xd8jpeg"]


def test_typed_fields_are_read_and_a_lone_value_fills_the_shape() -> None:
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[
            tensor_shape_pb2.TensorShapeProto.Dim(size=1),
            tensor_shape_pb2.TensorShapeProto.Dim(size=3),
        ]
    )
    floats = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, tensor_shape=shape, float_val=[0.2, 0.3, 0.5]
    )
    assert np.allclose(tensor_to_array(floats), [[0.2, 0.3, 0.5]])
    filled = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64, tensor_shape=shape, int64_val=[7])
    assert tensor_to_array(filled).tolist() == [[7, 7, 7]]
    empty = tensor_pb2.TensorProto(dtype=types_pb2.DT_DOUBLE, tensor_shape=shape)
    assert tensor_to_array(empty).tolist() == [[0.0, 0.0, 0.0]]
    halves = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_HALF,
        tensor_shape=shape,
        half_val=np.array([0.5, 1.0, 2.0], np.float16).view(np.uint16).tolist(),
    )
    assert tensor_to_array(halves).tolist() == [[0.5, 1.0, 2.0]]


def test_inconsistent_tensor_is_refused() -> None:
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=4)])
    proto = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, tensor_shape=shape, tensor_content=b"\0" * 12
    )
    with pytest.raises(PermanentError, match="3 values"):
        tensor_to_array(proto)
    strings = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape)
    with pytest.raises(PermanentError, match="DT_STRING"):
        tensor_to_array(strings)


def test_top_k_on_probabilities_keeps_the_scores() -> None:
    row = np.zeros(1000, np.float32)
    row[[285, 281, 282]] = [0.6, 0.3, 0.1]
    labels = top_k_from_scores(row, 3)
    assert [(x.class_id, x.name) for x in labels] == [
        (285, "Egyptian cat"),
        (281, "tabby"),
        (282, "tiger cat"),
    ]
    assert [round(x.score, 6) for x in labels] == [0.6, 0.3, 0.1]


def test_a_1001_wide_row_has_background_at_zero() -> None:
    row = np.zeros(1001, np.float32)
    row[286] = 0.7  # column 286 of a background-first model is ImageNet class 285
    row[0] = 0.2
    row[1] = 0.1
    labels = top_k_from_scores(row, 3)
    assert [(x.class_id, x.name) for x in labels] == [
        (285, "Egyptian cat"),
        (None, "background"),
        (0, "tench"),
    ]


def test_logits_get_a_softmax() -> None:
    logits = np.array([2.0, 1.0, -1.0, 0.5], np.float32)
    assert not is_distribution(logits)
    labels = top_k_from_scores(logits, 4)
    expected = np.exp(logits) / np.exp(logits).sum()
    assert [x.class_id for x in labels] == [0, 1, 3, 2]
    assert np.allclose([x.score for x in labels], sorted(expected, reverse=True))
    assert math.isclose(sum(x.score for x in labels), 1.0, rel_tol=1e-6)


def test_k_larger_than_the_classes() -> None:
    assert len(top_k_from_scores(np.array([0.5, 0.5]), 5)) == 2


def test_probabilities_win_over_classes() -> None:
    probabilities = np.zeros((1, 1001), np.float32)
    probabilities[0, 505] = 1.0
    outputs = {"classes": np.array([505]), "probabilities": probabilities}
    labels, known, used = labels_from_outputs(outputs, 5)
    assert known and used == ("probabilities",)
    assert labels[0].class_id == 504 and labels[0].name == "coffee mug"


def test_classes_only_means_unknown_scores() -> None:
    labels, known, used = labels_from_outputs({"classes": np.array([285])}, 5)
    assert not known and used == ("classes",)
    assert [(x.class_id, x.name) for x in labels] == [(285, "Egyptian cat")]
    assert math.isnan(labels[0].score)


def test_an_unnamed_float_output_is_used_as_scores() -> None:
    outputs = {"dense_3": np.array([[0.1, 0.9]], np.float32)}
    labels, _, used = labels_from_outputs(outputs, 1)
    assert used == ("dense_3",) and labels[0].class_id == 1


def test_no_usable_output_is_permanent() -> None:
    with pytest.raises(PermanentError, match="no scores or classes"):
        labels_from_outputs({"embedding": np.zeros((1, 4, 4), np.float32)}, 5)


def test_error_classes_map_to_http_status() -> None:
    assert TransientError("x").status == 503
    assert PermanentError("x").status == 422
