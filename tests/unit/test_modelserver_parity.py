"""The ONNX graphs built without torch match golden outputs of a PyTorch reference.

tests/data/golden/*.json were made once by scripts/make_golden_outputs.py (torch 2.13, plain torch
modules loading the same .pth files); here the ONNX graph must reproduce the same top-5 classes
with probabilities within 1e-4.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from modelserver.convert import ARCHITECTURES, build_onnx
from tests.fixtures.modelserver import photo_pixels

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "data" / "golden"
PROBABILITY_TOLERANCE = 1e-4


@pytest.mark.parametrize("architecture", ["mobilenet_v2", "efficientnet_lite0"])
def test_onnx_matches_torch_reference(architecture: str) -> None:
    golden = json.loads((GOLDEN_DIR / f"{architecture}.json").read_text())
    arch = ARCHITECTURES[architecture]
    assert golden["weights_file"] == arch.shipped_weights().name
    session = ort.InferenceSession(
        build_onnx(arch, arch.shipped_weights()), providers=["CPUExecutionProvider"]
    )
    photos = list(golden["photos"])
    pixels = np.stack([photo_pixels(p) for p in photos]).astype(np.float32)
    probabilities, classes = session.run(["probabilities", "classes"], {"images": pixels})
    assert probabilities.shape == (len(photos), 1000)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    for row, top1, photo in zip(probabilities, classes, photos, strict=True):
        expected = golden["photos"][photo]
        top5 = [int(i) for i in np.argsort(-row)[:5]]
        assert top5 == expected["top5_classes"], photo
        assert int(top1) == expected["top5_classes"][0]
        np.testing.assert_allclose(
            row[top5], expected["top5_probabilities"], atol=PROBABILITY_TOLERANCE, err_msg=photo
        )
