"""Objects for the fault scenarios: a mix of real photos from tiny to ~5 MB, and bad input.

Every photo comes from the sample images inside scikit-image (`localknative.photos`); the big ones
are the same photos upscaled with Pillow. Encodings are cached per process: the soak uploads
1,000 objects but encodes each variant once.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Sample:
    name: str  # e.g. chelsea.large.jpg
    body: bytes
    content_type: str = "image/jpeg"


@functools.lru_cache(maxsize=1)
def _originals() -> tuple[tuple[str, Image.Image], ...]:
    photos = load_photos(len(CATALOGUE))
    return tuple(
        (p.key.removesuffix(".jpg"), Image.open(io.BytesIO(p.jpeg)).convert("RGB")) for p in photos
    )


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


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
    return Sample(f"{name}.{variant}.jpg", _jpeg(pixels, quality))


@functools.lru_cache(maxsize=4)
def big_photo(which: int = 0) -> Sample:
    name, image = _originals()[which % len(_originals())]
    wide = image.resize((BIG_SIDE, BIG_SIDE * 3 // 4), Image.Resampling.BICUBIC)
    return Sample(f"{name}.big.jpg", _jpeg(wide, 97))


def chelsea() -> Image.Image:
    return _originals()[0][1]


# --- bad and awkward input -----------------------------------------------------------------------


def truncated_jpeg() -> bytes:
    whole = _jpeg(chelsea(), 90)
    return whole[: len(whole) * 2 // 5]


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header declares width x height pixels (a bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    # One compressed row of zeros: decoding would need width*height*3 bytes; nobody should try.
    idat = zlib.compress(b"\0" * (1 + 3 * min(width, 4096)))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def greyscale_jpeg() -> bytes:
    return _jpeg(chelsea().convert("L"), 90)


def cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    chelsea().convert("CMYK").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def animated_gif() -> bytes:
    first = chelsea().resize((224, 150))
    frames = [first, first.rotate(180), first.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    buffer = io.BytesIO()
    frames[0].save(
        buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0
    )
    return buffer.getvalue()


# EXIF Orientation: how a viewer must turn the stored pixels to show the photo upright.
_STORE_FOR_ORIENTATION = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,  # stored turned 90 degrees anticlockwise; viewer turns it back
    8: Image.Transpose.ROTATE_270,
}


def exif_rotated_jpeg(orientation: int) -> bytes:
    """Chelsea's pixels stored turned, with the EXIF tag that tells a viewer to turn them back:
    what a phone camera writes. Classified upright, it must look like `upright_jpeg()`."""
    stored = chelsea().transpose(_STORE_FOR_ORIENTATION[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=90, exif=exif.tobytes())
    return buffer.getvalue()


def sideways_jpeg() -> bytes:
    """The same turned pixels without the tag: what a classifier that ignores EXIF would see."""
    return _jpeg(chelsea().transpose(Image.Transpose.ROTATE_90), 90)


def upright_jpeg() -> bytes:
    return _jpeg(chelsea(), 90)


def text_as_jpeg() -> bytes:
    return b"this is a shopping list, not a photo: milk, eggs, flour\n" * 20
