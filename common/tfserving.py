"""A TensorFlow Serving gRPC client for image classifiers: the model's signature decides what is
sent, and the answer becomes top-k labels.

    client = TFServingClient(TFServingSettings.from_env(), max_image_pixels=40_000_000)
    client.start()                     # channel + GetModelMetadata, retried in the background
    client.ready                       # True once the signature was read
    client.classify(jpeg_bytes, 5)     # -> Prediction(labels=[Label("Egyptian cat", 0.71, 285)...])

What is sent follows the signature's single input:
- DT_STRING (the seed's `image_bytes` ResNet export): the encoded image, as uploaded; the server
  decodes it. We still decode it here once, quickly, so a bomb or a broken file gets the same
  413/415 whatever the model.
- DT_FLOAT or DT_UINT8 of shape [-1, H, W, 3]: RGB pixels 0..255 of that size and dtype, resized
  and cropped here (`common.images`); normalization is the model's business.

What is read: a class-score output (`probabilities`, else `logits`/`scores`, else the one
floating-point [N, C] output): softmax is applied when a row is not already a distribution. C =
1001 means index 0 is "background" (TF-slim ImageNet models), so class ids shift by one; that is
decided from the width the server returns, never assumed. With only a `classes` output the
scores are unknown: each label's score is NaN and `Prediction.scores_known` is False.

gRPC status -> our errors: UNAVAILABLE, DEADLINE_EXCEEDED and other server-side trouble ->
`TransientError` (503, retried); NOT_FOUND -> `TransientError` too (the model may still be
loading); INVALID_ARGUMENT -> `PermanentError` (422) carrying the server's message.

Only the protobuf modules are imported (tensorflow-protobuf or tensorflow-serving-api provide the
same paths), never TensorFlow; TensorProtos are built by hand with the bytes tf.make_tensor_proto
would produce.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import grpc
import numpy as np
import numpy.typing as npt
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from common.classifier import Label
from common.config import TFServingSettings
from common.errors import EventError, PermanentError, TransientError
from common.images import PixelDType, decode_image, preprocess
from common.labels import imagenet_name

log = logging.getLogger("tfserving")

SIGNATURE_DEF = "signature_def"
BACKGROUND_CLASSES = 1001  # ImageNet-1k plus "background" at index 0
DEFAULT_PIXEL_SIZE = 224  # when a pixel signature leaves H and W open (-1)
# Output names that hold per-class scores, in order of preference.
SCORE_OUTPUTS = ("probabilities", "logits", "scores", "predictions")
CLASS_OUTPUTS = ("classes",)
# A row whose values are >= 0 and sum to 1 within this is taken as probabilities already.
SUM_TOLERANCE = 1e-2

_PIXEL_DTYPES: dict[int, PixelDType] = {types_pb2.DT_FLOAT: "float32", types_pb2.DT_UINT8: "uint8"}
# Transient: the server (or the way to it) may be fine again soon, so the event is retried.
_TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


# --- the model's signature ----------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature. `shape` is None for unknown rank; -1 = any size."""

    key: str
    dtype: str  # TF's enum name, e.g. "DT_FLOAT"
    shape: tuple[int, ...] | None

    @property
    def dtype_enum(self) -> int:
        return int(types_pb2.DataType.Value(self.dtype))


InputKind = Literal["image_bytes", "pixels"]


@dataclass(frozen=True)
class ModelSignature:
    """What GetModelMetadata said about one signature, and how we will feed it."""

    model_name: str
    signature_name: str
    version: int | None
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]

    @property
    def input(self) -> TensorSpec:
        """The image input: the signature's only input."""
        return next(iter(self.inputs.values()))

    @property
    def input_kind(self) -> InputKind:
        return "image_bytes" if self.input.dtype == "DT_STRING" else "pixels"

    @property
    def pixel_size(self) -> tuple[int, int]:
        """(height, width) of a pixel input; unknown dimensions fall back to 224."""
        shape = self.input.shape or (-1, -1, -1, 3)
        height, width = shape[1], shape[2]
        return (
            height if height > 0 else DEFAULT_PIXEL_SIZE,
            width if width > 0 else DEFAULT_PIXEL_SIZE,
        )

    @property
    def pixel_dtype(self) -> PixelDType:
        return _PIXEL_DTYPES[self.input.dtype_enum]

    def describe(self) -> str:
        """One line for the start-up log: `images DT_FLOAT [-1,224,224,3] -> probabilities...`."""

        def spec(t: TensorSpec) -> str:
            dims = "?" if t.shape is None else ",".join(str(d) for d in t.shape)
            return f"{t.key} {t.dtype} [{dims}]"

        ins = ", ".join(spec(t) for t in self.inputs.values())
        outs = ", ".join(spec(t) for t in self.outputs.values())
        return f"{ins} -> {outs}"


class UnsupportedSignature(TransientError):
    """The model exists but its signature is not one we can feed an image to.

    Transient (503), because the fix is on the operator's side (MODEL_NAME, MODEL_SIGNATURE or
    the model itself) and the events are still good once it is made.
    """


def _tensor_spec(key: str, info: meta_graph_pb2.TensorInfo) -> TensorSpec:
    shape: tuple[int, ...] | None = None
    if not info.tensor_shape.unknown_rank:
        shape = tuple(int(dim.size) for dim in info.tensor_shape.dim)
    return TensorSpec(key, types_pb2.DataType.Name(info.dtype), shape)


def parse_signature(
    response: get_model_metadata_pb2.GetModelMetadataResponse, signature_name: str
) -> ModelSignature:
    """The named signature from a GetModelMetadata answer, checked to take an image."""
    model = response.model_spec.name
    signatures = get_model_metadata_pb2.SignatureDefMap()
    if SIGNATURE_DEF not in response.metadata or not response.metadata[SIGNATURE_DEF].Unpack(
        signatures
    ):
        raise UnsupportedSignature(f"model {model!r} returned no signature_def metadata")
    if signature_name not in signatures.signature_def:
        known = ", ".join(sorted(signatures.signature_def)) or "none"
        raise UnsupportedSignature(
            f"model {model!r} has no signature {signature_name!r} (it has: {known}); "
            "set MODEL_SIGNATURE"
        )
    definition = signatures.signature_def[signature_name]
    signature = ModelSignature(
        model_name=model,
        signature_name=signature_name,
        version=response.model_spec.version.value
        if response.model_spec.HasField("version")
        else None,
        inputs={k: _tensor_spec(k, v) for k, v in sorted(definition.inputs.items())},
        outputs={k: _tensor_spec(k, v) for k, v in sorted(definition.outputs.items())},
    )
    _check_feedable(signature)
    return signature


def _check_feedable(signature: ModelSignature) -> None:
    where = f"model {signature.model_name!r} signature {signature.signature_name!r}"
    if len(signature.inputs) != 1:
        raise UnsupportedSignature(
            f"{where} has {len(signature.inputs)} inputs; an image classifier has exactly one"
        )
    spec = signature.input
    if spec.dtype == "DT_STRING":
        return
    rank_ok = spec.shape is not None and len(spec.shape) == 4 and spec.shape[3] in (3, -1)
    if spec.dtype_enum not in _PIXEL_DTYPES or not rank_ok:
        raise UnsupportedSignature(
            f"{where}: input {spec.key!r} is {spec.dtype} {list(spec.shape or [])}; expected "
            "DT_STRING (encoded image) or DT_FLOAT/DT_UINT8 [-1, H, W, 3] (RGB pixels)"
        )
    if not any(name in signature.outputs for name in (*SCORE_OUTPUTS, *CLASS_OUTPUTS)):
        floating = [t for t in signature.outputs.values() if t.dtype in ("DT_FLOAT", "DT_HALF")]
        if not floating:
            raise UnsupportedSignature(f"{where} has no class-score or classes output")


# --- TensorProto <-> numpy ----------------------------------------------------------------------

# DataType -> (numpy dtype as sent little-endian, repeated field used without tensor_content)
_NUMPY: dict[int, tuple[str, str]] = {
    types_pb2.DT_FLOAT: ("<f4", "float_val"),
    types_pb2.DT_DOUBLE: ("<f8", "double_val"),
    types_pb2.DT_HALF: ("<f2", "half_val"),
    types_pb2.DT_UINT8: ("u1", "int_val"),
    types_pb2.DT_INT8: ("i1", "int_val"),
    types_pb2.DT_INT16: ("<i2", "int_val"),
    types_pb2.DT_INT32: ("<i4", "int_val"),
    types_pb2.DT_INT64: ("<i8", "int64_val"),
}


def _shape_proto(shape: tuple[int, ...]) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in shape]
    )


def image_bytes_tensor(data: bytes, shape: tuple[int, ...] = (1,)) -> tensor_pb2.TensorProto:
    """A DT_STRING tensor of one encoded image (strings have no tensor_content form)."""
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, tensor_shape=_shape_proto(shape), string_val=[data]
    )


def pixels_tensor(batch: npt.NDArray[Any]) -> tensor_pb2.TensorProto:
    """A numeric tensor from numpy: raw little-endian bytes, as tf.make_tensor_proto writes."""
    dtype = {"float32": types_pb2.DT_FLOAT, "uint8": types_pb2.DT_UINT8}[batch.dtype.name]
    contiguous = np.ascontiguousarray(batch, dtype=batch.dtype.newbyteorder("<"))
    return tensor_pb2.TensorProto(
        dtype=dtype,
        tensor_shape=_shape_proto(tuple(int(d) for d in batch.shape)),
        tensor_content=contiguous.tobytes(),
    )


def tensor_to_array(proto: tensor_pb2.TensorProto) -> npt.NDArray[Any]:
    """A numeric TensorProto as numpy, from tensor_content or the typed repeated field.

    As in TensorFlow, a repeated field shorter than the tensor repeats its last value (a lone
    value fills the shape), and an empty one means zeros.
    """
    if proto.dtype not in _NUMPY:
        raise PermanentError(
            f"model output has dtype {types_pb2.DataType.Name(proto.dtype)}, not a number"
        )
    dtype_str, field_name = _NUMPY[proto.dtype]
    dtype = np.dtype(dtype_str)
    shape = tuple(int(dim.size) for dim in proto.tensor_shape.dim)
    count = math.prod(shape)
    if proto.tensor_content:
        values = np.frombuffer(proto.tensor_content, dtype=dtype)
    else:
        raw = getattr(proto, field_name)
        if proto.dtype == types_pb2.DT_HALF:
            # half_val holds the float16 bit patterns in int32s.
            values = np.asarray(raw, dtype=np.uint16).view(np.float16)
        else:
            values = np.asarray(raw, dtype=dtype)
        if 0 < len(values) < count:
            values = np.concatenate([values, np.full(count - len(values), values[-1], dtype)])
        elif len(values) == 0:
            values = np.zeros(count, dtype)
    if values.size != count:
        raise PermanentError(
            f"model output holds {values.size} values for shape {list(shape)} ({count})"
        )
    return values.reshape(shape).astype(dtype.newbyteorder("="), copy=False)


# --- scores -> labels ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """Top-k labels for one image, best first. `scores_known` is False when the model returned
    only class ids (then every score is NaN)."""

    labels: list[Label]
    model_name: str
    model_version: int | None
    scores_known: bool = True
    outputs_used: tuple[str, ...] = field(default=())


def _softmax(row: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    shifted = np.exp(row - row.max())
    result: npt.NDArray[np.float64] = shifted / shifted.sum()
    return result


def is_distribution(row: npt.NDArray[Any]) -> bool:
    return (
        bool(row.size) and bool((row >= 0).all()) and abs(float(row.sum()) - 1.0) <= SUM_TOLERANCE
    )


def label_for(index: int, width: int, score: float) -> Label:
    """Label of output column `index` in a `width`-wide score row (1001: 0 is background)."""
    offset = 1 if width == BACKGROUND_CLASSES else 0
    class_id = index - offset
    if class_id < 0:
        return Label("background", score, None)
    return Label(imagenet_name(class_id), score, class_id)


def top_k_from_scores(row: npt.NDArray[Any], k: int) -> list[Label]:
    """The k best columns of one score row (probabilities or logits), best first."""
    scores = row.astype(np.float64)
    if not is_distribution(scores):
        scores = _softmax(scores)
    k = min(k, scores.size)
    best = np.argpartition(-scores, k - 1)[:k]
    best = best[np.argsort(-scores[best], kind="stable")]
    return [label_for(int(i), scores.size, float(scores[i])) for i in best]


def find_score_output(outputs: Mapping[str, npt.NDArray[Any]]) -> str | None:
    for name in SCORE_OUTPUTS:
        if name in outputs:
            return name
    floating = [n for n, a in outputs.items() if a.dtype.kind == "f" and a.ndim == 2]
    return floating[0] if len(floating) == 1 else None


def labels_from_outputs(
    outputs: Mapping[str, npt.NDArray[Any]], k: int
) -> tuple[list[Label], bool, tuple[str, ...]]:
    """(labels, scores_known, outputs used) for the first image of a Predict answer."""
    score_name = find_score_output(outputs)
    if score_name is not None:
        scores = outputs[score_name]
        if scores.ndim != 2 or scores.shape[0] < 1 or scores.shape[1] < 1:
            raise PermanentError(
                f"output {score_name!r} has shape {list(scores.shape)}; expected [N, classes]"
            )
        return top_k_from_scores(scores[0], k), True, (score_name,)
    for name in CLASS_OUTPUTS:
        if name in outputs:
            ids = np.atleast_1d(outputs[name][0] if outputs[name].ndim >= 1 else outputs[name])
            # No score row, so no width to tell a 1001-class model from a 1000-class one: the
            # ids are taken as ImageNet-1k ids, as they are.
            labels = [Label(imagenet_name(int(i)), math.nan, int(i)) for i in ids[:k]]
            return labels, False, (name,)
    raise PermanentError(f"model answered with outputs {sorted(outputs)}: no scores or classes")


# --- the channel and the client -----------------------------------------------------------------

_channels: dict[str, grpc.Channel] = {}
_channels_lock = threading.Lock()


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Notice a dead connection during a call; no pings when idle (servers punish those).
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        # Reconnect within ~2 s once the model server is back (gRPC's default backs off to 120 s).
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]


def shared_channel(target: str, max_message_bytes: int = 64 * 1024 * 1024) -> grpc.Channel:
    """One channel per target per process: it multiplexes every call over one HTTP/2 connection."""
    with _channels_lock:
        channel = _channels.get(target)
        if channel is None:
            channel = grpc.insecure_channel(target, options=channel_options(max_message_bytes))
            _channels[target] = channel
        return channel


def close_shared_channels() -> None:
    with _channels_lock:
        for channel in _channels.values():
            channel.close()
        _channels.clear()


def map_rpc_error(exc: grpc.RpcError, what: str, target: str, model: str) -> EventError:
    """A gRPC failure as the error the runtime answers with."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    detail = (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return PermanentError(f"{what}: model {model!r} refused the request: {detail}")
    if code == grpc.StatusCode.NOT_FOUND:
        return TransientError(
            f"{what}: model {model!r} not found on {target} (it may still be loading): {detail}"
        )
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return TransientError(f"{what}: model server {target} {code.name.lower()}: {detail}")
    if code in _TRANSIENT_CODES:
        return TransientError(f"{what}: model server {target} answered {code.name}: {detail}")
    return PermanentError(f"{what}: model server {target} answered {code.name}: {detail}")


class TFServingClient:
    """PredictionService client for one model and signature, created once per process."""

    def __init__(self, settings: TFServingSettings, max_image_pixels: int) -> None:
        self.settings = settings
        self.max_image_pixels = max_image_pixels
        self._stub: prediction_service_pb2_grpc.PredictionServiceStub | None = None
        self._signature: ModelSignature | None = None
        self._stop = threading.Event()
        self._loader: threading.Thread | None = None
        self.last_error: str | None = None

    # lifecycle

    def connect(self) -> None:
        channel = shared_channel(self.settings.endpoint)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def start(self) -> None:
        """Open the channel and read the signature in the background until it succeeds."""
        self.connect()
        self._stop.clear()
        self._loader = threading.Thread(
            target=self.wait_for_signature, name="tfserving-metadata", daemon=True
        )
        self._loader.start()

    def stop(self) -> None:
        self._stop.set()
        if self._loader is not None:
            self._loader.join(timeout=5)

    @property
    def ready(self) -> bool:
        return self._signature is not None

    @property
    def signature(self) -> ModelSignature | None:
        return self._signature

    @property
    def stub(self) -> prediction_service_pb2_grpc.PredictionServiceStub:
        if self._stub is None:
            self.connect()
        assert self._stub is not None
        return self._stub

    # metadata

    def fetch_signature(self, timeout: float | None = None) -> ModelSignature:
        """One GetModelMetadata call; the signature is kept for every later classify()."""
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = self.settings.model_name
        request.model_spec.signature_name = self.settings.signature
        request.metadata_field.append(SIGNATURE_DEF)
        try:
            response = self.stub.GetModelMetadata(request, timeout=timeout or self.settings.timeout)
        except grpc.RpcError as exc:
            raise self._error(exc, "GetModelMetadata") from None
        signature = parse_signature(response, self.settings.signature)
        self._signature = signature
        return signature

    def wait_for_signature(self, deadline: float | None = None) -> ModelSignature | None:
        """Retry GetModelMetadata until it succeeds, `deadline` (monotonic) passes or stop()."""
        delay = 0.1
        failures = 0
        while not self._stop.is_set():
            try:
                signature = self.fetch_signature(timeout=min(self.settings.timeout, 5.0))
            except EventError as exc:
                failures += 1
                self.last_error = exc.message
                if failures == 1 or failures % 20 == 0:
                    log.warning(
                        "model metadata not available yet; retrying",
                        extra={"error": exc.message, "attempts": failures},
                    )
            else:
                self.last_error = None
                log.info(
                    f"model {signature.model_name} ready: {signature.describe()}",
                    extra={
                        "model": signature.model_name,
                        "model_version": signature.version,
                        "signature": signature.signature_name,
                        "input_kind": signature.input_kind,
                        "attempts": failures + 1,
                    },
                )
                return signature
            if deadline is not None and time.monotonic() + delay > deadline:
                return None
            self._stop.wait(delay)
            delay = min(delay * 2, 2.0)
        return None

    def require_signature(self) -> ModelSignature:
        """The signature, fetching it now if start-up has not managed to yet (503 if that fails)."""
        return self._signature or self.fetch_signature()

    # prediction

    def request_for(self, data: bytes) -> predict_pb2.PredictRequest:
        """The PredictRequest for one encoded image, shaped by the model's signature."""
        signature = self.require_signature()
        spec = signature.input
        if signature.input_kind == "image_bytes":
            # The server decodes it, but refusing bombs and broken files here keeps 413/415
            # identical for every model (and a DCT-scaled decode costs a few ms).
            decode_image(data, self.max_image_pixels, min_size=(256, 256))
            shape = (1,) if spec.shape is None or len(spec.shape) == 1 else ()
            tensor = image_bytes_tensor(data, shape)
        else:
            height, width = signature.pixel_size
            batch = preprocess(data, height, width, signature.pixel_dtype, self.max_image_pixels)
            tensor = pixels_tensor(batch)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.settings.model_name
        request.model_spec.signature_name = signature.signature_name
        request.inputs[spec.key].CopyFrom(tensor)
        return request

    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        """Send any PredictRequest (e.g. one built as TF Serving's example clients do)."""
        try:
            response: predict_pb2.PredictResponse = self.stub.Predict(
                request, timeout=self.settings.timeout
            )
        except grpc.RpcError as exc:
            raise self._error(exc, "Predict") from None
        return response

    def classify(self, data: bytes, top_k: int) -> Prediction:
        """Top-k labels for one encoded image."""
        response = self.predict(self.request_for(data))
        outputs = {name: tensor_to_array(proto) for name, proto in response.outputs.items()}
        labels, scores_known, used = labels_from_outputs(outputs, top_k)
        version = (
            response.model_spec.version.value if response.model_spec.HasField("version") else None
        )
        return Prediction(labels, self.settings.model_name, version, scores_known, used)

    def _error(self, exc: grpc.RpcError, what: str) -> EventError:
        return map_rpc_error(exc, what, self.settings.endpoint, self.settings.model_name)
