"""Sample objects for tests and benchmarks: real photos, and bad and awkward input.

Every photo comes from the sample images inside scikit-image (nothing is copied into this
repository). `photo(index)` is the load mix of the fault scenarios, from 48 px thumbnails to
~5 MB (the demo's photos, `localknative.photos`, upscaled with Pillow); encodings are cached per
process, so the soak uploads 1,000 objects but encodes each variant once. The rest are single
images: a sample photo as JPEG, a truncated JPEG, a PNG decompression bomb, EXIF-rotated JPEGs,
greyscale, CMYK, an animated GIF, text posing as a JPEG.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from localknative.photos import CATALOGUE, load_photos

# (variant, longest side in pixels or None for the original, JPEG quality)
_VARIANTS: tuple[tuple[str, int | None, int], ...] = (
    ("thumb", 48, 80),
    ("small", 160, 85),
    ("original", None, 90),
    ("large", 2048, 92),
)
BIG_SIDE = 4800  # 4800 x 3600 at quality 97: about 5 MB of JPEG
BIG_EVERY = 25  # one upload in 25 is big: heavy for RGW and the decoder, not for the whole run
# EXIF tag 0x0112: how a viewer must turn the stored pixels to show the photo upright.
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Sample:
    name: str  # e.g. chelsea.large.jpg
    body: bytes
    content_type: str = "image/jpeg"


# --- single photos -------------------------------------------------------------------------------


def photo_array(name: str) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """A scikit-image sample photo: "chelsea" (a cat), "coffee" (a cup), "astronaut"."""
    import skimage.data

    pixels: np.ndarray[Any, np.dtype[np.uint8]] = getattr(skimage.data, name)()
    return pixels


def encode(image: Image.Image, image_format: str = "JPEG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def photo_jpeg(name: str, scale: float = 1.0, quality: int = 90) -> bytes:
    """A sample photo as JPEG, optionally scaled (e.g. to ~1 MP for the benchmark)."""
    image = Image.fromarray(photo_array(name))
    if scale != 1.0:
        size = (round(image.width * scale), round(image.height * scale))
        image = image.resize(size, Image.Resampling.BICUBIC)
    return encode(image, "JPEG", quality=quality)


# --- the load mix --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _originals() -> tuple[tuple[str, Image.Image], ...]:
    photos = load_photos(len(CATALOGUE))
    return tuple(
        (p.key.removesuffix(".jpg"), Image.open(io.BytesIO(p.jpeg)).convert("RGB")) for p in photos
    )


def _scaled(image: Image.Image, side: int) -> Image.Image:
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


@functools.lru_cache(maxsize=256)
def photo(index: int) -> Sample:
    """The index-th upload of a load run: photos and sizes cycle, every BIG_EVERY-th is ~5 MB."""
    originals = _originals()
    name, image = originals[index % len(originals)]
    if index % BIG_EVERY == BIG_EVERY - 1:
        return big_photo(index % len(originals))
    variant, side, quality = _VARIANTS[(index // len(originals)) % len(_VARIANTS)]
    pixels = image if side is None else _scaled(image, side)
    return Sample(f"{name}.{variant}.jpg", encode(pixels, "JPEG", quality=quality))


@functools.lru_cache(maxsize=4)
def big_photo(which: int = 0) -> Sample:
    name, image = _originals()[which % len(_originals())]
    wide = image.resize((BIG_SIDE, BIG_SIDE * 3 // 4), Image.Resampling.BICUBIC)
    return Sample(f"{name}.big.jpg", encode(wide, "JPEG", quality=97))


def chelsea() -> Image.Image:
    """The demo's first photo (a cat), decoded: the pixels the awkward variants below turn."""
    return _originals()[0][1]


def upright_jpeg() -> bytes:
    return encode(chelsea(), "JPEG", quality=90)


# --- bad and awkward input -----------------------------------------------------------------------


def truncated_jpeg(name: str = "chelsea") -> bytes:
    """The first half of a real JPEG: a valid header, then the data stops."""
    whole = photo_jpeg(name)
    return whole[: len(whole) // 2]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


@functools.lru_cache(maxsize=8)
def png_bomb(side: int = 28000) -> bytes:
    """A valid 1-bit greyscale PNG of side x side black pixels, ~100 kB compressed.

    Decoded, it would take side*side bytes in Pillow (784 MB for 28000): a decompression bomb.
    The pixel stream is compressed in slices so building it never holds the whole raster.
    """
    row = b"\x00" + bytes((side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    slices = [compressor.compress(row * 1000) for _ in range(side // 1000)]
    slices.append(compressor.compress(row * (side % 1000)))
    slices.append(compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"".join(slices))
        + _png_chunk(b"IEND", b"")
    )


def greyscale_jpeg() -> bytes:
    return encode(chelsea().convert("L"), "JPEG", quality=90)


def cmyk_jpeg() -> bytes:
    return encode(chelsea().convert("CMYK"), "JPEG", quality=90)


def animated_gif() -> bytes:
    first = chelsea().resize((224, 150))
    frames = [first, first.rotate(180), first.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


# How the sensor stores the picture for each EXIF Orientation (6: the viewer turns it 90 degrees
# clockwise, so the stored pixels are the upright picture turned 90 degrees anticlockwise).
_STORE_FOR_ORIENTATION = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}


def rotated_jpeg(image: Image.Image, orientation: int = 6, quality: int = 92) -> bytes:
    """A JPEG storing `image` the way a phone's sensor would, with the EXIF tag to undo it."""
    stored = image.transpose(_STORE_FOR_ORIENTATION[orientation])
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return encode(stored, "JPEG", quality=quality, exif=exif.tobytes())


def exif_rotated_jpeg(orientation: int) -> bytes:
    """Chelsea's pixels stored turned, with the EXIF tag that tells a viewer to turn them back:
    what a phone camera writes. Classified upright, it must look like `upright_jpeg()`."""
    return rotated_jpeg(chelsea(), orientation, quality=90)


def sideways_jpeg() -> bytes:
    """The same turned pixels without the tag: what a classifier that ignores EXIF would see."""
    return encode(chelsea().transpose(Image.Transpose.ROTATE_90), "JPEG", quality=90)


def text_as_jpeg() -> bytes:
    return b"this is a shopping list, not a photo: milk, eggs, flour\n" * 20
