# mypy: ignore-errors
# (torch and its stubs live only in the throwaway venv this script runs in, not in the project venv)
"""Compute golden top-5 outputs of the shipped ImageNet models with a PyTorch reference.

This is the only place torch is used. It rebuilds both architectures as plain torch modules
(torchvision's MobileNetV2 layout; EfficientNet-Lite0 as in the TF reference: no squeeze-excite,
ReLU6, TF 'SAME' padding, BN eps 1e-3), loads the same `.pth` files with `torch.load`, and writes
tests/data/golden/<model>.json. The parity test compares the ONNX graphs built by modelserver
(without torch) against these files.

Run it in a throwaway venv that has torch (never in the project venv):

    python3 -m venv .cache/torchref
    .cache/torchref/bin/pip install torch==2.13.0 numpy pillow scikit-image
    PYTHONPATH=. .cache/torchref/bin/python scripts/make_golden_outputs.py \
        --mobilenet-weights <path to mobilenet_v2-b0353104.pth> \
        --efficientnet-weights <path to efficientnet-lite0-57934424.pth>

(`.venv/bin/python -m modelserver convert` does not need them; docs/modelserver.md shows how
to print the weight paths.)
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import skimage
import skimage.data
import torch
from torch import nn

from modelserver.registry import pixels_from_array

PHOTOS = ["chelsea", "coffee", "astronaut", "rocket"]
GOLDEN_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "golden"


class ConvBNReLU6(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, stride: int, groups: int, act: bool) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act:
            layers.append(nn.ReLU6())
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """torchvision's block: attribute `conv` is a Sequential with the same child indices."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU6(cin, hidden, 1, 1, 1, True))
        layers += [
            ConvBNReLU6(hidden, hidden, 3, stride, hidden, True),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        table = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1)]
        table += [(6, 160, 3, 2), (6, 320, 1, 1)]
        features: list[nn.Module] = [ConvBNReLU6(3, 32, 3, 2, 1, True)]
        cin = 32
        for t, c, n, s in table:
            for i in range(n):
                features.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        features.append(ConvBNReLU6(cin, 1280, 1, 1, 1, True))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


class SameConv(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding for a fixed input size (extra pixel at the end)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, groups: int, size: int) -> None:
        super().__init__(cin, cout, k, stride, 0, groups=groups, bias=False)
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + k - size, 0)
        self.pad = (total // 2, total - total // 2, total // 2, total - total // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(nn.functional.pad(x, self.pad))


class LiteBlock(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int, size: int) -> None:
        super().__init__()
        hidden = cin * expand
        bn = {"eps": 1e-3}
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv(cin, hidden, 1, 1, 1, size)
            self._bn0 = nn.BatchNorm2d(hidden, **bn)
        self._depthwise_conv = SameConv(hidden, hidden, k, stride, hidden, size)
        self._bn1 = nn.BatchNorm2d(hidden, **bn)
        self._project_conv = SameConv(hidden, cout, 1, 1, 1, math.ceil(size / stride))
        self._bn2 = nn.BatchNorm2d(cout, **bn)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = nn.functional.relu6(self._bn0(self._expand_conv(y)))
        y = nn.functional.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    def __init__(self, size: int = 224) -> None:
        super().__init__()
        # (repeats, kernel, stride, expand, out channels), from the TF lite builder
        stages = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80)]
        stages += [(3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]
        self._conv_stem = SameConv(3, 32, 3, 2, 1, size)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3)
        size = math.ceil(size / 2)
        blocks: list[nn.Module] = []
        cin = 32
        for repeats, k, s, e, cout in stages:
            for i in range(repeats):
                stride = s if i == 0 else 1
                blocks.append(LiteBlock(cin, cout, k, stride, e, size))
                size = math.ceil(size / stride)
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv(cin, 1280, 1, 1, 1, size)
        self._bn1 = nn.BatchNorm2d(1280, eps=1e-3)
        self._fc = nn.Linear(1280, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = nn.functional.relu6(self._bn1(self._conv_head(x)))
        return self._fc(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


MODELS: dict[str, dict[str, Any]] = {
    "mobilenet_v2": {
        "module": MobileNetV2,
        "mean": [0.485 * 255, 0.456 * 255, 0.406 * 255],
        "std": [0.229 * 255, 0.224 * 255, 0.225 * 255],
        "arg": "mobilenet_weights",
    },
    "efficientnet_lite0": {
        "module": EfficientNetLite0,
        "mean": [127.0] * 3,
        "std": [128.0] * 3,
        "arg": "efficientnet_weights",
    },
}


def golden_for(name: str, weights: Path) -> dict[str, Any]:
    spec = MODELS[name]
    model = spec["module"]()
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    pixels = np.stack([pixels_from_array(getattr(skimage.data, p)()) for p in PHOTOS])
    x = torch.from_numpy(pixels.astype(np.float32)).permute(0, 3, 1, 2)
    mean = torch.tensor(spec["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(spec["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = torch.softmax(model((x - mean) / std), dim=1).numpy()
    results = {}
    for photo, row in zip(PHOTOS, probs, strict=True):
        top = np.argsort(-row)[:5]
        results[photo] = {
            "top5_classes": [int(i) for i in top],
            "top5_probabilities": [round(float(row[i]), 7) for i in top],
        }
    return {
        "_about": (
            f"Golden top-5 softmax outputs of {name}, made by scripts/make_golden_outputs.py: "
            f"a plain PyTorch {torch.__version__} re-implementation of the architecture loading "
            f"{weights.name} with torch.load, fed scikit-image {skimage.__version__} sample photos "
            "preprocessed by modelserver.registry.pixels_from_array (short side 256, centre crop "
            "224, RGB 0..255), normalized (x - mean) / std on 0..255 values."
        ),
        "model": name,
        "weights_file": weights.name,
        "mean": spec["mean"],
        "std": spec["std"],
        "photos": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mobilenet-weights", type=Path, required=True)
    parser.add_argument("--efficientnet-weights", type=Path, required=True)
    parser.add_argument("--out-dir", type=Path, default=GOLDEN_DIR)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, spec in MODELS.items():
        golden = golden_for(name, getattr(args, spec["arg"]))
        path = args.out_dir / f"{name}.json"
        path.write_text(json.dumps(golden, indent=2) + "\n")
        tops = {p: r["top5_classes"][0] for p, r in golden["photos"].items()}
        print(f"wrote {path}: top-1 {tops}")


if __name__ == "__main__":
    main()
