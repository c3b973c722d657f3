"""Server-side decoding for models that take encoded images (the `image_bytes` kind and the
Vision stand-in): the project's one image pipeline, `common.images`, at the models' 224x224.

The recipe is the ImageNet evaluation one torchvision uses: short side to 256 (bilinear,
antialiased), centre 224x224 crop, RGB 0..255.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

from common.errors import NotAnImage, TooLarge
from common.images import CROP_FRACTION, decode_image, resize_and_centre_crop

CROP_SIZE = 224
RESIZE_SHORT_SIDE = round(CROP_SIZE / CROP_FRACTION)
# Refuse decompression bombs before Pillow allocates them.
MAX_IMAGE_PIXELS = 40_000_000


class ImageDecodeError(ValueError):
    """The bytes are not an image Pillow can decode (or one too large to decode safely)."""


def pixels_from_image(image: Image.Image) -> npt.NDArray[np.uint8]:
    """224x224x3 uint8 RGB model input from a decoded image."""
    cropped = resize_and_centre_crop(image.convert("RGB"), CROP_SIZE, CROP_SIZE)
    return np.asarray(cropped, dtype=np.uint8)


def pixels_from_array(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Preprocess an in-memory HWC uint8 RGB photo (e.g. from scikit-image) the same way."""
    return pixels_from_image(Image.fromarray(rgb))


def pixels_from_bytes(data: bytes, upright: bool = False) -> npt.NDArray[np.uint8]:
    """Decode and preprocess encoded image bytes.

    `upright` applies the EXIF orientation, as a photo viewer and Google's Vision API do; TF's
    decode_jpeg, which the `image_bytes` models emulate, does not.
    """
    try:
        image = decode_image(
            data, MAX_IMAGE_PIXELS, (RESIZE_SHORT_SIDE, RESIZE_SHORT_SIDE), upright=upright
        )
    except (NotAnImage, TooLarge) as exc:
        raise ImageDecodeError(exc.message) from None
    return pixels_from_image(image)
