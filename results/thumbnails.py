"""Thumbnails of the objects the service holds results for, read from RGW with the service's own
credentials (the bucket stays private) and kept in a small in-memory LRU cache.

Only an object version the service has a result for gets one: the endpoint is not a way to read
arbitrary objects through the service.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from common.errors import EventError, NotAnImage, TooLarge
from common.events import ObjectEvent
from common.s3 import ObjectStore

ObjectId = tuple[str, str, str]


@dataclass(frozen=True)
class Thumbnail:
    jpeg: bytes
    etag: str


class Thumbnailer:
    def __init__(
        self, store: ObjectStore | None, size: int, cache_entries: int, max_pixels: int
    ) -> None:
        self.store = store
        self.size = size
        self.cache_entries = cache_entries
        self.max_pixels = max_pixels
        self._cache: OrderedDict[ObjectId, Thumbnail] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, bucket: str, key: str, version: str, version_id: str | None) -> Thumbnail:
        """The cached thumbnail, else a fresh one: raises EventError (TooLarge, NotAnImage,
        ObjectGone, Forbidden, TransientError) when there can be none."""
        object_id = (bucket, key, version)
        with self._lock:
            cached = self._cache.get(object_id)
            if cached is not None:
                self._cache.move_to_end(object_id)
                return cached
        if self.store is None:
            raise EventError("no S3 endpoint configured for thumbnails")
        obj = ObjectEvent(bucket, key, "ObjectCreated:Put", "thumbnail", version_id=version_id)
        data = self.store.download(obj).data
        thumbnail = Thumbnail(make_thumbnail(data, self.size, self.max_pixels), _etag(object_id))
        with self._lock:
            self._cache[object_id] = thumbnail
            while len(self._cache) > self.cache_entries:
                self._cache.popitem(last=False)
        return thumbnail


def make_thumbnail(data: bytes, size: int, max_pixels: int) -> bytes:
    """A JPEG whose longest side is at most `size`, from any image Pillow reads."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            if image.width * image.height > max_pixels:
                raise TooLarge(f"{image.width}x{image.height} is over {max_pixels} pixels")
            # JPEG decodes at 1/2..1/8 scale straight away when that still covers the size.
            image.draft("RGB", (size, size))
            image.thumbnail((size, size))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TooLarge(str(exc)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise NotAnImage(f"no thumbnail: {exc}") from None
    if image.mode not in {"RGB", "L"}:
        image = image.convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=82)
    return out.getvalue()


def _etag(object_id: ObjectId) -> str:
    import hashlib

    return '"' + hashlib.sha256("\0".join(object_id).encode()).hexdigest()[:32] + '"'
