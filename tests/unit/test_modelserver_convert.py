"""The ONNX cache: atomic files with sha256 sidecars; a corrupted file is detected and rebuilt."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from modelserver.convert import ARCHITECTURES, ensure_onnx


def test_builds_once_then_reuses_verified_cache(tmp_path: Path) -> None:
    arch = ARCHITECTURES["mobilenet_v2"]
    first = ensure_onnx(arch, tmp_path)
    assert first.built
    sidecar = first.path.with_name(first.path.name + ".sha256")
    assert sidecar.read_text().split()[0] == hashlib.sha256(first.path.read_bytes()).hexdigest()
    second = ensure_onnx(arch, tmp_path)
    assert not second.built
    assert second.onnx_bytes == first.onnx_bytes
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_corrupted_cache_file_is_rebuilt_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    arch = ARCHITECTURES["mobilenet_v2"]
    good = ensure_onnx(arch, tmp_path)
    corrupted = bytearray(good.onnx_bytes)
    corrupted[len(corrupted) // 2] ^= 0xFF
    good.path.write_bytes(bytes(corrupted))
    with caplog.at_level(logging.WARNING, logger="modelserver.convert"):
        again = ensure_onnx(arch, tmp_path)
    assert again.built
    assert again.onnx_bytes == good.onnx_bytes
    assert "fails its checksum" in caplog.text


def test_missing_sidecar_means_rebuild(tmp_path: Path) -> None:
    arch = ARCHITECTURES["mobilenet_v2"]
    good = ensure_onnx(arch, tmp_path)
    good.path.with_name(good.path.name + ".sha256").unlink()
    assert ensure_onnx(arch, tmp_path).built


def test_read_only_cache_still_serves_from_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    arch = ARCHITECTURES["mobilenet_v2"]
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    with caplog.at_level(logging.WARNING, logger="modelserver.convert"):
        converted = ensure_onnx(arch, blocker / "models")
    assert converted.built and converted.onnx_bytes.startswith(b"\x08")  # ModelProto ir_version
    assert "serving mobilenet_v2 from memory" in caplog.text
