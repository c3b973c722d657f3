"""Read PyTorch's legacy (non-zip) checkpoint format into numpy arrays, without torch.

A legacy `.pth` file is five pickles in a row (magic number, protocol version, system info, the
state dict, the list of storage keys) followed by the raw bytes of every storage, each prefixed by
its element count as a little-endian int64. The state dict pickle refers to storages through
`persistent_load` and rebuilds tensors through `torch._utils._rebuild_tensor_v2`.

Pickle can run arbitrary code, so every pickle here goes through `RestrictedUnpickler`: it
resolves only the handful of globals a state dict needs, each mapped to a harmless stand-in
defined in this module. Any other global (say `os.system`) stops the load with
`ForbiddenGlobalError`. Nothing is imported from torch; the data ends up in numpy.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

StateDictArrays = dict[str, npt.NDArray[Any]]


class WeightsFormatError(ValueError):
    """The file is not a legacy PyTorch checkpoint this reader understands."""


class ForbiddenGlobalError(pickle.UnpicklingError):
    """The pickle asked for a global outside the allow-list (it may try to run code)."""


@dataclass(frozen=True)
class StorageType:
    """Stand-in for `torch.FloatStorage` & co.: only the element dtype matters here."""

    name: str
    dtype: np.dtype[Any]


@dataclass
class LazyStorage:
    """A storage whose bytes come after the pickles; filled in by `_read_storage_data`."""

    key: str
    storage_type: StorageType
    numel: int
    data: npt.NDArray[Any] | None = None


@dataclass(frozen=True)
class PendingTensor:
    """A tensor described by the pickle, materialized once its storage bytes are read."""

    storage: LazyStorage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def materialize(self) -> npt.NDArray[Any]:
        if self.storage.data is None:
            raise WeightsFormatError(f"storage {self.storage.key} has no data in the file")
        flat = self.storage.data
        itemsize = flat.dtype.itemsize
        needed = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, dtype=flat.dtype)
        if needed >= flat.size:
            raise WeightsFormatError(
                f"tensor of size {self.size} reaches past its storage {self.storage.key} "
                f"({flat.size} elements)"
            )
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :],
            shape=self.size,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(
    storage: LazyStorage,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: object = None,
    metadata: object = None,
) -> PendingTensor:
    del requires_grad, backward_hooks, metadata  # training-time details, irrelevant for inference
    return PendingTensor(storage, int(storage_offset), tuple(size), tuple(stride))


_STORAGE_TYPES = {
    name: StorageType(name, np.dtype(dtype))
    for name, dtype in {
        "FloatStorage": "<f4",
        "DoubleStorage": "<f8",
        "HalfStorage": "<f2",
        "LongStorage": "<i8",
        "IntStorage": "<i4",
        "ShortStorage": "<i2",
        "CharStorage": "i1",
        "ByteStorage": "u1",
        "BoolStorage": "?",
    }.items()
}

# The complete list of globals a legacy state dict may name. Everything maps to local code.
ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    **{("torch", name): storage_type for name, storage_type in _STORAGE_TYPES.items()},
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only `ALLOWED_GLOBALS`; turns persistent storage ids into `LazyStorage`."""

    def __init__(self, file: BinaryIO, storages: dict[str, LazyStorage]) -> None:
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ForbiddenGlobalError(
                f"refusing to load global '{module}.{name}': a weights file only needs "
                f"{sorted(f'{m}.{n}' for m, n in ALLOWED_GLOBALS)}; this file may try to run code"
            ) from None

    def persistent_load(self, pid: Any) -> LazyStorage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise WeightsFormatError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid[:5]
        view_metadata = pid[5] if len(pid) > 5 else None
        if not isinstance(storage_type, StorageType):
            raise WeightsFormatError(f"persistent id names no storage type: {pid!r}")
        if view_metadata is not None:
            raise WeightsFormatError("storage views (pre-1.0 checkpoints) are not supported")
        storage = self._storages.get(str(key))
        if storage is None:
            storage = LazyStorage(str(key), storage_type, int(numel))
            self._storages[storage.key] = storage
        return storage


def _load_one(file: BinaryIO, storages: dict[str, LazyStorage]) -> Any:
    return RestrictedUnpickler(file, storages).load()


def _read_storage_data(file: BinaryIO, keys: list[str], storages: dict[str, LazyStorage]) -> None:
    for key in keys:
        storage = storages.get(key)
        if storage is None:
            raise WeightsFormatError(f"storage key {key} listed but never referenced")
        header = file.read(8)
        if len(header) != 8:
            raise WeightsFormatError(f"file ends before storage {key}")
        (numel,) = struct.unpack("<q", header)
        if numel != storage.numel:
            raise WeightsFormatError(
                f"storage {key}: file says {numel} elements, pickle said {storage.numel}"
            )
        nbytes = numel * storage.storage_type.dtype.itemsize
        raw = file.read(nbytes)
        if len(raw) != nbytes:
            raise WeightsFormatError(f"file ends inside storage {key}")
        storage.data = np.frombuffer(raw, dtype=storage.storage_type.dtype)


def _materialize(obj: Any) -> Any:
    if isinstance(obj, PendingTensor):
        return obj.materialize()
    if isinstance(obj, dict):
        return {k: _materialize(v) for k, v in obj.items()}
    return obj


def read_legacy_state_dict(source: Path | bytes) -> StateDictArrays:
    """Parameters and buffers of a legacy `.pth` file, as numpy arrays keyed like the state dict."""
    raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    if raw[:2] == b"PK":
        raise WeightsFormatError(
            "this is a zip-format checkpoint (torch >= 1.6 default); only the legacy format is read"
        )
    file = io.BytesIO(raw)
    storages: dict[str, LazyStorage] = {}
    try:
        magic = _load_one(file, storages)
        if magic != LEGACY_MAGIC_NUMBER:
            raise WeightsFormatError("not a legacy PyTorch checkpoint (wrong magic number)")
        protocol = _load_one(file, storages)
        if protocol != LEGACY_PROTOCOL_VERSION:
            raise WeightsFormatError(f"unsupported legacy protocol version {protocol!r}")
        sys_info = _load_one(file, storages)
        if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
            raise WeightsFormatError("big-endian checkpoints are not supported")
        state = _load_one(file, storages)
        keys = _load_one(file, storages)
    except (EOFError, pickle.UnpicklingError) as exc:
        if isinstance(exc, ForbiddenGlobalError):
            raise
        raise WeightsFormatError(f"not a legacy PyTorch checkpoint: {exc}") from exc
    if not isinstance(state, dict):
        raise WeightsFormatError(f"checkpoint holds a {type(state).__name__}, not a state dict")
    _read_storage_data(file, [str(k) for k in keys], storages)
    return {str(k): v for k, v in _materialize(state).items() if isinstance(v, np.ndarray)}


def packaged_weights_path(package: str, relative: str) -> Path:
    """Path of a weights file shipped inside an installed package (found via importlib)."""
    import importlib.resources

    resource = importlib.resources.files(package).joinpath(relative)
    path = Path(str(resource))
    if not path.is_file():
        raise FileNotFoundError(
            f"{relative} not found in package {package}; install its wheel "
            "(see docs/modelserver.md)"
        )
    return path
