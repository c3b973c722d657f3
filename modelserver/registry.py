"""Served models by name and version: their signatures, input validation and predict.

This is the model side of the server (as in KServe: model logic apart from the data plane);
grpc_api.py, rest_api.py and vision_api.py only translate wire formats to calls on `ServedModel`.

Model kinds:
- `mobilenet_v2`, `efficientnet_lite0`: input `images` (RGB 0..255, float32 or uint8, NHWC
  [N, 224, 224, 3]); outputs `probabilities` [N, 1000] float32 and `classes` [N] int64.
- `open_nsfw`: Yahoo's open_nsfw ResNet-50 (`modelserver.open_nsfw`); the same input; outputs
  `probabilities` [N, 2] (index 0 = sfw, 1 = nsfw) and `classes` [N] int64.
- `image_bytes`: the seed's DT_STRING signature (like the official TF ResNet SavedModel): input
  `image_bytes` [N] encoded JPEG/PNG, decoded and cropped here; MobileNetV2 behind it; outputs
  `probabilities` [N, 1001] with index 0 = background and `classes` [N] in 1..1000.

onnxruntime's `InferenceSession.run` is thread-safe, so concurrent requests run in parallel
against one session per architecture; there is no lock around predict. With batching on
(`modelserver.batching`), concurrent requests to one session share one run instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from common.errors import NotAnImage, TooLarge
from common.images import preprocess, preprocess_array
from modelserver import graphs
from modelserver.batching import Batcher, BatchingParameters
from modelserver.convert import ARCHITECTURES, Architecture, ensure_onnx
from modelserver.signature_defs import (
    DEFAULT_SIGNATURE,
    IMAGE_BYTES_INPUT,
    IMAGE_BYTES_SIGNATURE,
    MAX_BATCH,
    PREDICT_METHOD,
    InvalidInputError,
    Signature,
    pixel_signatures,
    validate_inputs,
)

# Re-exported: the data planes and the tests import these from here.
__all__ = [
    "DEFAULT_SIGNATURE",
    "MAX_BATCH",
    "PREDICT_METHOD",
    "InvalidInputError",
    "ModelNotFoundError",
    "ModelRegistry",
    "ModelSpec",
    "ServedModel",
    "Signature",
    "pixels_from_array",
    "pixels_from_bytes",
    "run_session",
    "session_options",
]

log = logging.getLogger("modelserver.registry")

KINDS = ("mobilenet_v2", "efficientnet_lite0", "open_nsfw", "image_bytes")


class ModelNotFoundError(LookupError):
    """Unknown model name, version or signature (NOT_FOUND / HTTP 404)."""


# Refuse decompression bombs before Pillow allocates them (the functions' MAX_IMAGE_PIXELS).
MAX_IMAGE_PIXELS = 40_000_000


def pixels_from_bytes(data: bytes, upright: bool = False) -> npt.NDArray[np.uint8]:
    """Encoded image bytes -> the served models' input: 224x224x3 uint8 RGB, cropped as
    torchvision evaluates ImageNet (`common.images`). Raises NotAnImage or TooLarge.

    `upright` applies the EXIF orientation, as a photo viewer and Google's Vision API do; TF's
    decode_jpeg, which the `image_bytes` models emulate, does not.
    """
    size = graphs.IMAGE_SIZE
    pixels: npt.NDArray[np.uint8] = preprocess(
        data, size, size, "uint8", MAX_IMAGE_PIXELS, upright
    )[0]
    return pixels


def pixels_from_array(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """An in-memory HWC uint8 RGB photo (e.g. from scikit-image) preprocessed the same way."""
    size = graphs.IMAGE_SIZE
    pixels: npt.NDArray[np.uint8] = preprocess_array(rgb, size, size, "uint8")[0]
    return pixels


@dataclass(frozen=True)
class ModelSpec:
    """What to serve: a name clients use, a kind (see module doc), a version, optional weights."""

    name: str
    kind: str
    version: int = 1
    weights_path: Path | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(
                f"model {self.name}: unknown kind '{self.kind}', expected one of {KINDS}"
            )
        if self.version < 1:
            raise ValueError(f"model {self.name}: version must be >= 1, got {self.version}")

    @property
    def architecture(self) -> Architecture:
        return ARCHITECTURES["mobilenet_v2" if self.kind == "image_bytes" else self.kind]


def session_options(intra_op_threads: int) -> ort.SessionOptions:
    """The options every session uses (the benchmark uses the same for its in-process baseline)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle worker threads would otherwise spin on a shared CPU between requests.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def run_session(
    session: ort.InferenceSession, pixels: npt.NDArray[np.float32]
) -> list[npt.NDArray[Any]]:
    """One run of an image classifier's graph: [probabilities, classes]."""
    outputs: list[npt.NDArray[Any]] = session.run(
        [graphs.PROBABILITIES, graphs.CLASSES], {graphs.INPUT_NAME: pixels}
    )
    return outputs


@dataclass
class ServedModel:
    spec: ModelSpec
    session: ort.InferenceSession
    signatures: dict[str, Signature] = field(default_factory=dict)
    batcher: Batcher | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> int:
        return self.spec.version

    def signature(self, signature_name: str) -> Signature:
        key = signature_name or DEFAULT_SIGNATURE
        try:
            return self.signatures[key]
        except KeyError:
            raise ModelNotFoundError(
                f'Serving signature name: "{key}" not found in signature def; model '
                f"{self.name} has {sorted(self.signatures)}"
            ) from None

    def predict(
        self,
        inputs: Mapping[str, npt.NDArray[Any]],
        signature_name: str = DEFAULT_SIGNATURE,
        output_filter: Sequence[str] = (),
    ) -> dict[str, npt.NDArray[Any]]:
        signature = self.signature(signature_name)
        checked = validate_inputs(signature, inputs)
        wanted = list(output_filter) or [spec.name for spec in signature.outputs]
        known = {spec.name for spec in signature.outputs}
        for name in wanted:
            if name not in known:
                raise InvalidInputError(
                    f"output_filter names '{name}', which is not an output of signature "
                    f"'{signature_name or DEFAULT_SIGNATURE}' (outputs: {sorted(known)})"
                )
        if self.spec.kind == "image_bytes":
            outputs = self._predict_image_bytes(checked[IMAGE_BYTES_INPUT])
        else:
            outputs = self._run(checked[graphs.INPUT_NAME])
        return {name: outputs[name] for name in wanted}

    def _run(self, images: npt.NDArray[Any]) -> dict[str, npt.NDArray[Any]]:
        pixels = images if images.dtype == np.float32 else images.astype(np.float32)
        if self.batcher is not None:
            probabilities, classes = self.batcher.run(pixels)
        else:
            probabilities, classes = run_session(self.session, pixels)
        return {graphs.PROBABILITIES: probabilities, graphs.CLASSES: classes}

    def _predict_image_bytes(self, encoded: npt.NDArray[Any]) -> dict[str, npt.NDArray[Any]]:
        batch = []
        for index, item in enumerate(encoded.reshape(-1)):
            try:
                batch.append(pixels_from_bytes(bytes(item)))
            except (NotAnImage, TooLarge) as exc:
                raise InvalidInputError(f"{IMAGE_BYTES_INPUT}[{index}]: {exc.message}") from exc
        result = self._run(np.stack(batch))
        # 1001-class layout of TF's ResNet SavedModels: index 0 is "background", class i is i + 1.
        probabilities = result[graphs.PROBABILITIES]
        background = np.zeros((probabilities.shape[0], 1), dtype=np.float32)
        return {
            graphs.PROBABILITIES: np.concatenate([background, probabilities], axis=1),
            graphs.CLASSES: result[graphs.CLASSES] + 1,
        }


class ModelRegistry:
    """All served models, loaded up front; models of one architecture share a session."""

    def __init__(
        self,
        cache_dir: Path,
        intra_op_threads: int,
        batching: BatchingParameters | None = None,
    ) -> None:
        self.cache_dir = cache_dir
        self.intra_op_threads = intra_op_threads
        self.batching = batching
        self._models: dict[str, dict[int, ServedModel]] = {}
        self._sessions: dict[tuple[str, Path | None], ort.InferenceSession] = {}
        # One queue per session: every model on that session (e.g. mobilenet_v2 and the
        # image_bytes model behind it) shares its runs.
        self._batchers: dict[tuple[str, Path | None], Batcher] = {}

    def load(self, spec: ModelSpec) -> ServedModel:
        key = (spec.architecture.name, spec.weights_path)
        session = self._sessions.get(key)
        if session is None:
            converted = ensure_onnx(spec.architecture, self.cache_dir, spec.weights_path)
            session = ort.InferenceSession(
                converted.onnx_bytes,
                sess_options=session_options(self.intra_op_threads),
                providers=["CPUExecutionProvider"],
            )
            self._sessions[key] = session
            log.info(
                "loaded %s (%s) from %s",
                spec.architecture.name,
                "built" if converted.built else "cache",
                converted.path,
            )
        signatures = (
            {DEFAULT_SIGNATURE: IMAGE_BYTES_SIGNATURE}
            if spec.kind == "image_bytes"
            else pixel_signatures(spec.architecture.num_classes)
        )
        batcher = None
        if self.batching is not None:
            batcher = self._batchers.get(key)
            if batcher is None:
                batcher = self._batchers[key] = self._batcher(spec, session, self.batching)
        model = ServedModel(spec, session, signatures, batcher)
        self._models.setdefault(spec.name, {})[spec.version] = model
        log.info("serving model %s version %d (kind %s)", spec.name, spec.version, spec.kind)
        return model

    def _batcher(
        self, spec: ModelSpec, session: ort.InferenceSession, params: BatchingParameters
    ) -> Batcher:
        threads = params.threads(self.intra_op_threads)
        log.info(
            "batching %s: max_batch_size %d, batch_timeout_micros %d, max_enqueued_batches %d, "
            "%d batch threads, allowed_batch_sizes %s",
            spec.architecture.name,
            params.max_batch_size,
            params.batch_timeout_micros,
            params.max_enqueued_batches,
            threads,
            list(params.allowed_batch_sizes) or "any",
        )
        return Batcher(
            spec.architecture.name, lambda pixels: run_session(session, pixels), params, threads
        )

    def close(self) -> None:
        """Stop the batch threads once what is queued has run."""
        for batcher in self._batchers.values():
            batcher.close()

    def names(self) -> list[str]:
        return sorted(self._models)

    def versions(self, name: str) -> dict[int, ServedModel]:
        try:
            return self._models[name]
        except KeyError:
            raise ModelNotFoundError(f"Servable not found for request: Latest({name})") from None

    def get(self, name: str, version: int | None = None, label: str | None = None) -> ServedModel:
        """The model by name, at `version` (default: the latest); labels are not supported."""
        versions = self.versions(name)
        if label:
            raise ModelNotFoundError(f"Unrecognized servable version label: {label}")
        if version is None:
            return versions[max(versions)]
        try:
            return versions[version]
        except KeyError:
            raise ModelNotFoundError(
                f"Servable not found for request: Specific({name}, {version})"
            ) from None
