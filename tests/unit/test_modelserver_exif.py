"""The Vision stand-in sees photos upright (EXIF Orientation applied); the tensor path does not."""

from __future__ import annotations

import numpy as np

from modelserver.registry import pixels_from_bytes
from testkit import samples


def test_vision_stand_in_applies_exif_orientation() -> None:
    upright = pixels_from_bytes(samples.upright_jpeg(), upright=True).astype(int)
    for orientation in (3, 6, 8):
        turned = samples.exif_rotated_jpeg(orientation)
        assert np.abs(pixels_from_bytes(turned, upright=True) - upright).mean() < 5
        # TF's decode_jpeg ignores the tag; the image_bytes models keep that behaviour.
        assert np.abs(pixels_from_bytes(turned).astype(int) - upright).mean() > 20
