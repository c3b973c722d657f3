"""Build ONNX graphs for the shipped ImageNet classifiers from their state dicts, with onnx.helper.

Every graph has the same serving contract, so clients never need to know which model they talk to:
input `images` float32 NHWC [N, 224, 224, 3] with RGB values in 0..255; the model's own input
normalization and the NHWC -> NCHW transpose are the first nodes of the graph; outputs
`probabilities` [N, 1000] (softmax) and `classes` [N] int64 (top-1).

BatchNorm layers are folded into the convolution before them (inference only), in float64 before
the cast to float32 so the folding adds no rounding of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

IMAGE_SIZE = 224
INPUT_NAME = "images"
PROBABILITIES = "probabilities"
CLASSES = "classes"
OPSET = 17
# Bump when a builder changes, so cached .onnx files from older code are rebuilt, not reused.
GRAPH_FORMAT_VERSION = 1

StateDict = Mapping[str, npt.NDArray[Any]]


@dataclass(frozen=True)
class PixelNormalization:
    """normalized = pixel * scale + offset, per RGB channel, on 0..255 pixel values."""

    scale: tuple[float, float, float]
    offset: tuple[float, float, float]

    @staticmethod
    def from_mean_std(mean: Sequence[float], std: Sequence[float]) -> PixelNormalization:
        """From mean/std given on 0..255 values: (pixel - mean) / std."""
        scale = tuple(1.0 / s for s in std)
        offset = tuple(-m / s for m, s in zip(mean, std, strict=True))
        return PixelNormalization(scale, offset)  # type: ignore[arg-type]

    def apply(self, pixels_nhwc: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        scale = np.asarray(self.scale, dtype=np.float32)
        offset = np.asarray(self.offset, dtype=np.float32)
        return (pixels_nhwc * scale + offset).astype(np.float32)


# torchvision's ImageNet normalization, mean/std on 0..1 pixels scaled to 0..255.
TORCHVISION_NORMALIZATION = PixelNormalization.from_mean_std(
    [0.485 * 255, 0.456 * 255, 0.406 * 255], [0.229 * 255, 0.224 * 255, 0.225 * 255]
)
# EfficientNet-Lite was trained in TensorFlow with MEAN_RGB=127 and STDDEV_RGB=128
# (efficientnet_lite_builder.py); the PyTorch weights are a direct port of that checkpoint.
EFFICIENTNET_LITE_NORMALIZATION = PixelNormalization.from_mean_std([127.0] * 3, [128.0] * 3)


class GraphBuilder:
    """Accumulates nodes and initializers; each helper returns the name of its output."""

    def __init__(self, weights: StateDict) -> None:
        self.weights = weights
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self._counter = 0

    def _name(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}_{self._counter}"

    def constant(self, prefix: str, value: npt.NDArray[Any]) -> str:
        name = self._name(prefix)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: Sequence[str], output: str | None = None, **attrs: Any) -> str:
        out = output or self._name(op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], **attrs))
        return out

    def weight(self, key: str) -> npt.NDArray[Any]:
        try:
            return self.weights[key]
        except KeyError:
            raise KeyError(f"weights file lacks '{key}': not the expected architecture") from None

    def normalize_and_transpose(self, norm: PixelNormalization) -> str:
        """`images` NHWC 0..255 -> normalized NCHW float32."""
        scale = self.constant("pixel_scale", np.asarray(norm.scale, dtype=np.float32))
        offset = self.constant("pixel_offset", np.asarray(norm.offset, dtype=np.float32))
        scaled = self.node("Mul", [INPUT_NAME, scale])
        shifted = self.node("Add", [scaled, offset])
        return self.node("Transpose", [shifted], perm=[0, 3, 1, 2])

    def conv_bn(
        self,
        x: str,
        conv_key: str,
        bn_key: str,
        *,
        stride: int,
        pads: tuple[int, int, int, int],
        eps: float,
        relu6: bool,
    ) -> str:
        """Conv (no bias) followed by BatchNorm folded into it, optionally ReLU6.

        pads are ONNX order: top, left, bottom, right.
        """
        kernel = self.weight(f"{conv_key}.weight").astype(np.float64)
        gamma = self.weight(f"{bn_key}.weight").astype(np.float64)
        beta = self.weight(f"{bn_key}.bias").astype(np.float64)
        mean = self.weight(f"{bn_key}.running_mean").astype(np.float64)
        var = self.weight(f"{bn_key}.running_var").astype(np.float64)
        factor = gamma / np.sqrt(var + eps)
        folded_kernel = (kernel * factor[:, None, None, None]).astype(np.float32)
        folded_bias = (beta - mean * factor).astype(np.float32)
        out_channels, in_per_group, kh, kw = kernel.shape
        groups = out_channels if in_per_group == 1 and kh > 1 else 1
        y = self.node(
            "Conv",
            [
                x,
                self.constant(f"{conv_key}.w", folded_kernel),
                self.constant(f"{conv_key}.b", folded_bias),
            ],
            kernel_shape=[kh, kw],
            strides=[stride, stride],
            pads=[pads[0], pads[1], pads[2], pads[3]],
            group=groups,
        )
        return self.relu6(y) if relu6 else y

    def relu6(self, x: str) -> str:
        low = self.constant("zero", np.asarray(0.0, dtype=np.float32))
        high = self.constant("six", np.asarray(6.0, dtype=np.float32))
        return self.node("Clip", [x, low, high])

    def classifier_head(self, features: str, fc_key: str) -> None:
        """Global average pool, linear layer, then the two serving outputs."""
        pooled = self.node("GlobalAveragePool", [features])
        flat = self.node("Flatten", [pooled], axis=1)
        fc_w = self.constant(f"{fc_key}.w", self.weight(f"{fc_key}.weight").astype(np.float32))
        fc_b = self.constant(f"{fc_key}.b", self.weight(f"{fc_key}.bias").astype(np.float32))
        logits = self.node("Gemm", [flat, fc_w, fc_b], transB=1)
        self.node("Softmax", [logits], output=PROBABILITIES, axis=1)
        self.node("ArgMax", [logits], output=CLASSES, axis=1, keepdims=0)

    def build(self, graph_name: str, num_classes: int) -> onnx.ModelProto:
        images = helper.make_tensor_value_info(
            INPUT_NAME, TensorProto.FLOAT, ["N", IMAGE_SIZE, IMAGE_SIZE, 3]
        )
        probabilities = helper.make_tensor_value_info(
            PROBABILITIES, TensorProto.FLOAT, ["N", num_classes]
        )
        classes = helper.make_tensor_value_info(CLASSES, TensorProto.INT64, ["N"])
        graph = helper.make_graph(
            self.nodes, graph_name, [images], [probabilities, classes], self.initializers
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="rgw-knative-inference modelserver",
            producer_version=str(GRAPH_FORMAT_VERSION),
        )
        model.ir_version = 8  # readable by any onnxruntime >= 1.14
        onnx.checker.check_model(model)
        return model


def _torch_pads(kernel: int) -> tuple[int, int, int, int]:
    p = (kernel - 1) // 2
    return (p, p, p, p)


# torchvision MobileNetV2 (width 1.0): stride of each InvertedResidual block features.1..17,
# from its (t, c, n, s) table: the first block of each stage carries the stage stride.
_MOBILENET_V2_STAGES = [(1, 1), (2, 2), (3, 2), (4, 2), (3, 1), (3, 2), (1, 1)]  # (n, s)
MOBILENET_V2_BN_EPS = 1e-5


def build_mobilenet_v2(weights: StateDict) -> onnx.ModelProto:
    """torchvision's MobileNetV2 architecture with the given (torchvision-keyed) weights."""
    g = GraphBuilder(weights)
    eps = MOBILENET_V2_BN_EPS
    x = g.normalize_and_transpose(TORCHVISION_NORMALIZATION)
    x = g.conv_bn(
        x, "features.0.0", "features.0.1", stride=2, pads=_torch_pads(3), eps=eps, relu6=True
    )
    strides = [s if i == 0 else 1 for n, s in _MOBILENET_V2_STAGES for i in range(n)]
    for index, stride in enumerate(strides, start=1):
        prefix = f"features.{index}.conv"
        block_in = x
        if f"{prefix}.0.0.weight" in weights and f"{prefix}.3.weight" not in weights:
            # expand ratio 1: depthwise (conv.0), then linear pointwise (conv.1 + bn conv.2)
            x = g.conv_bn(
                x,
                f"{prefix}.0.0",
                f"{prefix}.0.1",
                stride=stride,
                pads=_torch_pads(3),
                eps=eps,
                relu6=True,
            )
            x = g.conv_bn(
                x, f"{prefix}.1", f"{prefix}.2", stride=1, pads=(0, 0, 0, 0), eps=eps, relu6=False
            )
            in_channels = g.weight(f"{prefix}.0.0.weight").shape[0]
            out_channels = g.weight(f"{prefix}.1.weight").shape[0]
        else:
            x = g.conv_bn(
                x,
                f"{prefix}.0.0",
                f"{prefix}.0.1",
                stride=1,
                pads=(0, 0, 0, 0),
                eps=eps,
                relu6=True,
            )
            x = g.conv_bn(
                x,
                f"{prefix}.1.0",
                f"{prefix}.1.1",
                stride=stride,
                pads=_torch_pads(3),
                eps=eps,
                relu6=True,
            )
            x = g.conv_bn(
                x, f"{prefix}.2", f"{prefix}.3", stride=1, pads=(0, 0, 0, 0), eps=eps, relu6=False
            )
            in_channels = g.weight(f"{prefix}.0.0.weight").shape[1]
            out_channels = g.weight(f"{prefix}.2.weight").shape[0]
        if stride == 1 and in_channels == out_channels:
            x = g.node("Add", [x, block_in])
    x = g.conv_bn(
        x, "features.18.0", "features.18.1", stride=1, pads=(0, 0, 0, 0), eps=eps, relu6=True
    )
    g.classifier_head(x, "classifier.1")
    return g.build("mobilenet_v2", g.weight("classifier.1.weight").shape[0])


def tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int, int, int]:
    """TensorFlow 'SAME' padding for a square input: the odd pixel goes after (bottom/right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    before = total // 2
    return (before, before, total - before, total - before)


# EfficientNet-Lite0: (repeats, stride) per stage; kernel sizes come from the weights.
_EFFICIENTNET_LITE0_STAGES = [(1, 1), (2, 2), (2, 2), (3, 2), (3, 1), (4, 2), (1, 1)]
EFFICIENTNET_BN_EPS = 1e-3


def build_efficientnet_lite0(weights: StateDict) -> onnx.ModelProto:
    """EfficientNet-Lite0 (no squeeze-excite, ReLU6, TF 'SAME' padding), lukemelas-style keys."""
    g = GraphBuilder(weights)
    eps = EFFICIENTNET_BN_EPS
    size = IMAGE_SIZE
    x = g.normalize_and_transpose(EFFICIENTNET_LITE_NORMALIZATION)
    x = g.conv_bn(
        x, "_conv_stem", "_bn0", stride=2, pads=tf_same_pads(size, 3, 2), eps=eps, relu6=True
    )
    size = -(-size // 2)
    strides = [s if i == 0 else 1 for n, s in _EFFICIENTNET_LITE0_STAGES for i in range(n)]
    for index, stride in enumerate(strides):
        prefix = f"_blocks.{index}"
        block_in = x
        if f"{prefix}._expand_conv.weight" in weights:
            x = g.conv_bn(
                x,
                f"{prefix}._expand_conv",
                f"{prefix}._bn0",
                stride=1,
                pads=(0, 0, 0, 0),
                eps=eps,
                relu6=True,
            )
        kernel = g.weight(f"{prefix}._depthwise_conv.weight").shape[-1]
        x = g.conv_bn(
            x,
            f"{prefix}._depthwise_conv",
            f"{prefix}._bn1",
            stride=stride,
            pads=tf_same_pads(size, kernel, stride),
            eps=eps,
            relu6=True,
        )
        size = -(-size // stride)
        x = g.conv_bn(
            x,
            f"{prefix}._project_conv",
            f"{prefix}._bn2",
            stride=1,
            pads=(0, 0, 0, 0),
            eps=eps,
            relu6=False,
        )
        in_channels = g.weight(f"{prefix}._depthwise_conv.weight").shape[0]
        if f"{prefix}._expand_conv.weight" in weights:
            in_channels = g.weight(f"{prefix}._expand_conv.weight").shape[1]
        out_channels = g.weight(f"{prefix}._project_conv.weight").shape[0]
        if stride == 1 and in_channels == out_channels:
            x = g.node("Add", [x, block_in])
    x = g.conv_bn(x, "_conv_head", "_bn1", stride=1, pads=(0, 0, 0, 0), eps=eps, relu6=True)
    g.classifier_head(x, "_fc")
    return g.build("efficientnet_lite0", g.weight("_fc.weight").shape[0])
