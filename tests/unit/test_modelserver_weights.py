"""The restricted legacy-torch reader: reads the shipped weights, refuses code-running pickles."""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from modelserver.convert import ARCHITECTURES
from modelserver.weights import (
    LEGACY_MAGIC_NUMBER,
    LEGACY_PROTOCOL_VERSION,
    ForbiddenGlobalError,
    WeightsFormatError,
    read_legacy_state_dict,
)


def _legacy_file(state_pickle: bytes, storages: list[tuple[str, bytes, int]]) -> bytes:
    """Assemble a legacy checkpoint: 3 header pickles, the state pickle, keys, storage bytes."""
    out = io.BytesIO()
    for header in (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, {"little_endian": True}):
        pickle.dump(header, out, protocol=2)
    out.write(state_pickle)
    pickle.dump([key for key, _, _ in storages], out, protocol=2)
    for _, raw, numel in storages:
        out.write(struct.pack("<q", numel) + raw)
    return out.getvalue()


class _Exploit:
    """Unpickling this runs `command` through os.system, as a malicious .pth file would."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


@pytest.fixture
def fake_torch(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Stand-in `torch` modules, so pickle writes the GLOBALs torch.save writes (no torch)."""
    torch_module = types.ModuleType("torch")
    utils_module = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args: object) -> None:
        raise AssertionError("only pickled, never called here")

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch_module.FloatStorage = FloatStorage  # type: ignore[attr-defined]
    utils_module._rebuild_tensor_v2 = _rebuild_tensor_v2  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", torch_module)
    monkeypatch.setitem(sys.modules, "torch._utils", utils_module)
    return types.SimpleNamespace(FloatStorage=FloatStorage, rebuild=_rebuild_tensor_v2)


def _state_pickle(
    fake: types.SimpleNamespace,
    numel: int,
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
) -> bytes:
    """A one-tensor state dict {"w": tensor} pickled the way torch's legacy torch.save does."""
    storage_id = ("storage", fake.FloatStorage, "0", "cpu", numel)

    class StorageRef:
        pass

    class Tensor:
        def __reduce__(self) -> tuple[object, tuple[object, ...]]:
            return (
                fake.rebuild,
                (StorageRef(), offset, size, stride, False, collections.OrderedDict()),
            )

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            return storage_id if isinstance(obj, StorageRef) else None

    out = io.BytesIO()
    Pickler(out, protocol=2).dump(collections.OrderedDict(w=Tensor()))
    return out.getvalue()


def test_reads_shipped_mobilenet_weights_as_numpy() -> None:
    state = read_legacy_state_dict(ARCHITECTURES["mobilenet_v2"].shipped_weights())
    assert state["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert state["classifier.1.weight"].shape == (1000, 1280)
    assert state["features.0.0.weight"].dtype == np.float32
    assert state["features.0.1.num_batches_tracked"].dtype == np.int64
    # real trained weights, not zeros
    assert float(np.abs(state["classifier.1.weight"]).mean()) > 1e-3


def test_reads_shipped_efficientnet_weights() -> None:
    state = read_legacy_state_dict(ARCHITECTURES["efficientnet_lite0"].shipped_weights())
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280)


def test_refuses_pickle_calling_os_system(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = pickle.dumps(collections.OrderedDict(w=_Exploit(f"touch {marker}")), protocol=2)
    with pytest.raises(ForbiddenGlobalError, match=r"refusing to load global '(os|posix)\.system'"):
        read_legacy_state_dict(_legacy_file(evil, []))
    assert not marker.exists()


def test_refuses_exploit_in_first_header_pickle() -> None:
    # the attack can sit where the magic number belongs, before any state dict
    with pytest.raises(ForbiddenGlobalError, match="system"):
        read_legacy_state_dict(pickle.dumps(_Exploit("true"), protocol=2))


def test_builds_tensor_from_storage_with_offset_and_stride(
    fake_torch: types.SimpleNamespace,
) -> None:
    values = np.arange(12, dtype="<f4")
    state = _state_pickle(fake_torch, 12, offset=2, size=(2, 3), stride=(1, 4))
    result = read_legacy_state_dict(_legacy_file(state, [("0", values.tobytes(), 12)]))
    np.testing.assert_array_equal(result["w"], [[2, 6, 10], [3, 7, 11]])


def test_rejects_truncated_storage(fake_torch: types.SimpleNamespace) -> None:
    values = np.arange(4, dtype="<f4")
    state = _state_pickle(fake_torch, 4, offset=0, size=(4,), stride=(1,))
    data = _legacy_file(state, [("0", values.tobytes(), 4)])
    assert read_legacy_state_dict(data)["w"].tolist() == [0, 1, 2, 3]
    with pytest.raises(WeightsFormatError, match="ends inside storage"):
        read_legacy_state_dict(data[:-3])


def test_rejects_zip_checkpoint_with_clear_message() -> None:
    with pytest.raises(WeightsFormatError, match="zip-format"):
        read_legacy_state_dict(b"PK\x03\x04rest")
