"""Decode encoded images and bring them to the models' 224x224 RGB input (server-side).

Used by the DT_STRING `image_bytes` models and by the Vision stand-in, which receive JPEG/PNG
bytes rather than pixels. The recipe is the usual ImageNet evaluation one: resize so the short
side is 256 (bilinear, antialiased by Pillow), then take the centre 224x224 crop.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import numpy.typing as npt
from PIL import Image

RESIZE_SHORT_SIDE = 256
CROP_SIZE = 224
# Refuse decompression bombs before Pillow allocates them (Pillow's own check only warns below 2x).
MAX_IMAGE_PIXELS = 40_000_000


class ImageDecodeError(ValueError):
    """The bytes are not an image Pillow can decode (or one too large to decode safely)."""


def decode_image(data: bytes) -> Image.Image:
    """Decode JPEG/PNG/... bytes into an RGB Pillow image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise ImageDecodeError(
                    f"image of {image.width}x{image.height} pixels exceeds {MAX_IMAGE_PIXELS}"
                )
            if image.format == "JPEG":
                # Let libjpeg decode at reduced scale when the image is much larger than needed.
                image.draft("RGB", (RESIZE_SHORT_SIDE, RESIZE_SHORT_SIDE))
            image.load()
    except ImageDecodeError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Warning) as exc:
        raise ImageDecodeError(f"cannot decode image: {exc}") from exc
    return image.convert("RGB")


def resize_and_center_crop(image: Image.Image) -> npt.NDArray[np.uint8]:
    """Short side to 256, centre 224x224 crop; returns HWC uint8 RGB."""
    image = image.convert("RGB")
    width, height = image.size
    scale = RESIZE_SHORT_SIDE / min(width, height)
    new_size = (max(CROP_SIZE, round(width * scale)), max(CROP_SIZE, round(height * scale)))
    resized = image.resize(new_size, Image.Resampling.BILINEAR)
    left = (new_size[0] - CROP_SIZE) // 2
    top = (new_size[1] - CROP_SIZE) // 2
    cropped = resized.crop((left, top, left + CROP_SIZE, top + CROP_SIZE))
    return np.asarray(cropped, dtype=np.uint8)


def pixels_from_array(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Preprocess an in-memory HWC uint8 RGB photo (e.g. from scikit-image) the same way."""
    return resize_and_center_crop(Image.fromarray(rgb))


def pixels_from_bytes(data: bytes) -> npt.NDArray[np.uint8]:
    """Decode and preprocess encoded image bytes into a 224x224x3 uint8 array."""
    return resize_and_center_crop(decode_image(data))
