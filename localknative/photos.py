"""Real photos for the demo, from the sample images that ship with scikit-image.

Nothing is copied into this repository: the pixels come from the installed `skimage.data`
package (its bundled files, no download) and are encoded as JPEG in memory.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

# (object key, skimage.data function, what is in it). Photos of things ImageNet knows come first.
CATALOGUE: tuple[tuple[str, str, str], ...] = (
    ("chelsea.jpg", "chelsea", "a tabby cat"),
    ("coffee.jpg", "coffee", "a cup of coffee"),
    ("rocket.jpg", "rocket", "a rocket on its launch pad"),
    ("astronaut.jpg", "astronaut", "an astronaut (Eileen Collins)"),
    ("motorcycle.jpg", "stereo_motorcycle", "a motorcycle"),
    ("camera.jpg", "camera", "a photographer with a camera on a tripod"),
    ("hubble.jpg", "hubble_deep_field", "galaxies (Hubble deep field)"),
    ("retina.jpg", "retina", "a human retina"),
    ("coins.jpg", "coins", "Greek coins"),
    ("moon.jpg", "moon", "the surface of the moon"),
    ("immunohistochemistry.jpg", "immunohistochemistry", "stained tissue"),
    ("page.jpg", "page", "a scanned page of text"),
)
MAX_PHOTOS = len(CATALOGUE)


@dataclass(frozen=True)
class Photo:
    key: str
    description: str
    jpeg: bytes


def _rgb(pixels: Any) -> np.ndarray[Any, np.dtype[np.uint8]]:
    array = np.asarray(pixels)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return array[..., :3]


def encode_jpeg(pixels: Any, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_rgb(pixels)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def load_photos(count: int) -> list[Photo]:
    """The first `count` photos of the catalogue (1..MAX_PHOTOS), as JPEG."""
    if not 1 <= count <= MAX_PHOTOS:
        raise ValueError(f"--photos: choose 1..{MAX_PHOTOS}, got {count}")
    import skimage.data

    photos = []
    for key, function_name, description in CATALOGUE[:count]:
        loader: Callable[[], Any] = getattr(skimage.data, function_name)
        pixels = loader()
        if isinstance(pixels, tuple):  # stereo_motorcycle: (left, right, disparity)
            pixels = pixels[0]
        photos.append(Photo(key, description, encode_jpeg(pixels)))
    return photos
