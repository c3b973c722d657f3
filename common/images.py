"""Bytes of an uploaded image -> the pixel batch a classifier expects, within size limits.

    decode_image(data, max_pixels, min_size)   bytes -> upright RGB PIL image (JPEG draft-decoded)
    resize_and_centre_crop(image, h, w)        short side to size/0.875, centre crop (torchvision)
    to_batch(image, dtype)                     PIL image -> NHWC numpy batch of one
    preprocess(data, h, w, dtype, max_pixels)  all three
    preprocess_image(data, h, w, max_pixels)   the first two: the cropped RGB image itself
    preprocess_array(rgb, h, w, dtype)         the same from an in-memory RGB array

Limits come first: the declared width x height is checked right after the header is parsed and
before any pixel is decoded, so a small file that declares a huge canvas (a decompression bomb)
costs nothing. Errors are the runtime's: `TooLarge` (413) for a bomb, `NotAnImage` (415) for
anything that is not a decodable image (unknown format, truncated, corrupt).
"""

from __future__ import annotations

import io
import struct
import warnings
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from common.errors import NotAnImage, TooLarge

PixelDType = Literal["uint8", "float32"]

# The formats people upload as photos. Restricting `Image.open` to these keeps the exotic
# decoders (and their bugs) out of reach of whatever lands in a bucket. (Pillow's JPEG opener
# also yields multi-picture camera files, format "MPO".)
ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")

# torchvision's ImageNet evaluation transform: Resize(256) + CenterCrop(224), i.e. the crop
# covers 87.5 % of the resized short side.
CROP_FRACTION = 0.875

# Before the bilinear resample, shrink by an integer factor with a box filter (`Image.reduce`)
# while the image is still at least this many times the target: Pillow's documented setting at
# which the result cannot be told from a plain resample. JPEGs rarely need it (draft mode
# already decoded them at < 2x the target); large PNGs, WebPs and 8x-oversized JPEGs do.
REDUCING_GAP = 3.0

# What decoders raise on truncated or corrupt data besides OSError (Pillow is not uniform).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError)

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


def decode_image(
    data: bytes,
    max_pixels: int,
    min_size: tuple[int, int] | None = None,
    upright: bool = True,
) -> Image.Image:
    """An upright RGB image from encoded bytes (first frame of an animation).

    `min_size` (width, height) lets a JPEG decode at 1/2, 1/4 or 1/8 scale (libjpeg's DCT
    scaling, Pillow's `draft`) as long as the result still covers that size in both directions:
    most of the decoding work for a large photo is skipped.
    """
    image = _open_within_limit(data, max_pixels)
    try:
        if min_size is not None and image.format in {"JPEG", "MPO"}:
            image.draft("RGB", min_size)
        image.load()
        # Phones store the sensor's orientation and a tag saying how to rotate it for display;
        # a classifier must see the photo the way a person does. (`upright=False` is for
        # emulating a model that decodes as TF's decode_jpeg does, ignoring the tag.)
        return _to_rgb(ImageOps.exif_transpose(image) if upright else image)
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"image refused as a decompression bomb: {exc}") from None
    except _DECODE_ERRORS as exc:
        raise NotAnImage(f"image data is truncated or corrupt: {_short(exc)}") from None


def check_image(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """(format, width, height) from the header alone: NotAnImage or TooLarge without decoding."""
    image = _open_within_limit(data, max_pixels)
    return str(image.format), image.width, image.height


def _open_within_limit(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise NotAnImage("the object is empty")
    # Pillow runs its own bomb check inside `Image.open` against its global MAX_IMAGE_PIXELS (see
    # `set_pillow_pixel_limit`); its warning is raised as an error here so that check refuses
    # rather than merely warns. catch_warnings is process-wide, but the only filter it ever adds
    # is this "error" one, so overlapping calls from worker threads cannot weaken the check.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TooLarge(
            f"image refused as a decompression bomb (MAX_IMAGE_PIXELS is {max_pixels}): {exc}"
        ) from None
    except UnidentifiedImageError:
        accepted = ", ".join(ACCEPTED_FORMATS)
        raise NotAnImage(f"not an image in a supported format ({accepted})") from None
    except _DECODE_ERRORS as exc:
        raise NotAnImage(f"image header is corrupt: {_short(exc)}") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise NotAnImage(f"image declares an empty canvas ({width}x{height})")
    if width * height > max_pixels:
        raise TooLarge(
            f"image declares {width}x{height} = {width * height} pixels; "
            f"MAX_IMAGE_PIXELS is {max_pixels}"
        )
    return image


def set_pillow_pixel_limit(max_pixels: int) -> None:
    """Make Pillow's own bomb check agree with ours (its default is 89 MP, twice that to error).

    Pillow keeps the limit in a module global that every Pillow user in the process shares, so
    a function sets it once at start-up rather than per call.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB from any mode: greyscale, CMYK, palette, alpha (over white), 16-bit."""
    if image.mode == "RGB":
        return image
    if image.mode in _WIDE_MODES:
        # 16-bit or float greyscale: Pillow's convert would clip at 255; scale to 8 bits instead.
        values = np.asarray(image, dtype=np.float32)
        peak = float(values.max()) if values.size else 0.0
        scale = 255.0 / peak if peak > 255.0 else 1.0
        grey = np.clip(values * scale, 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels often hold black; a viewer shows the page behind them instead.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def resize_target(width: int, height: int, out_height: int, out_width: int) -> tuple[int, int]:
    """(width, height) after torchvision's Resize(short side = crop / 0.875)."""
    short_target = round(max(out_height, out_width) / CROP_FRACTION)
    short, long = (width, height) if width <= height else (height, width)
    long_target = int(short_target * long / short)
    return (short_target, long_target) if width <= height else (long_target, short_target)


def resize_and_centre_crop(
    image: Image.Image, out_height: int, out_width: int, reducing_gap: float | None = None
) -> Image.Image:
    """Short side to size/0.875 (bilinear, antialiased), then the centre out_height x out_width.

    Done as one resample of the source region that the crop keeps: each output pixel has the
    same centre and kernel width as in resize-then-crop, but the pixels the crop would throw
    away are never computed (about half the work for a 4:3 photo). `reducing_gap` (see
    REDUCING_GAP) lets Pillow box-reduce a much larger source first.
    """
    width, height = resize_target(*image.size, out_height, out_width)
    top = round((height - out_height) / 2.0)
    left = round((width - out_width) / 2.0)
    scale_x, scale_y = image.width / width, image.height / height
    box = (
        left * scale_x,
        top * scale_y,
        (left + out_width) * scale_x,
        (top + out_height) * scale_y,
    )
    # Pillow's BILINEAR widens its kernel when downscaling, which is what torchvision's
    # `antialias=True` does for PIL images.
    return image.resize(
        (out_width, out_height), Image.Resampling.BILINEAR, box=box, reducing_gap=reducing_gap
    )


def to_batch(image: Image.Image, dtype: PixelDType) -> npt.NDArray[np.generic]:
    """NHWC batch of one: [1, H, W, 3], RGB 0..255 in `dtype` (normalization is the model's)."""
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise NotAnImage(f"decoded image has shape {pixels.shape}, expected H x W x 3")
    batch = pixels[np.newaxis, ...]
    return batch.astype(np.float32) if dtype == "float32" else batch


def preprocess(
    data: bytes,
    out_height: int,
    out_width: int,
    dtype: PixelDType,
    max_pixels: int,
    upright: bool = True,
) -> npt.NDArray[np.generic]:
    """Encoded image bytes -> [1, out_height, out_width, 3] pixels, as torchvision evaluates.

    `upright=False` ignores the EXIF orientation, as TF's decode_jpeg does (see decode_image).
    """
    return to_batch(preprocess_image(data, out_height, out_width, max_pixels, upright), dtype)


def preprocess_image(
    data: bytes, out_height: int, out_width: int, max_pixels: int, upright: bool = True
) -> Image.Image:
    """Encoded image bytes -> the out_width x out_height RGB crop, still a Pillow image (its
    `tobytes()` is already a uint8 HWC tensor's content: no numpy copy needed)."""
    # The smallest decode that still covers the resize target: the target of a square crop is
    # at least short_target in both directions, whatever the aspect ratio.
    short_target = round(max(out_height, out_width) / CROP_FRACTION)
    image = decode_image(data, max_pixels, (short_target, short_target), upright)
    return resize_and_centre_crop(image, out_height, out_width, REDUCING_GAP)


def preprocess_array(
    rgb: npt.NDArray[np.uint8], out_height: int, out_width: int, dtype: PixelDType
) -> npt.NDArray[np.generic]:
    """An in-memory H x W x 3 uint8 RGB photo (e.g. scikit-image's) -> the same batch of one."""
    image = Image.fromarray(rgb).convert("RGB")
    return to_batch(resize_and_centre_crop(image, out_height, out_width), dtype)


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "…"


__all__ = [
    "ACCEPTED_FORMATS",
    "CROP_FRACTION",
    "PixelDType",
    "decode_image",
    "preprocess",
    "preprocess_array",
    "preprocess_image",
    "resize_and_centre_crop",
    "resize_target",
    "set_pillow_pixel_limit",
    "to_batch",
]
