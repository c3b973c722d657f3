"""A TensorFlow Serving gRPC client for image classifiers: the model's signature decides what is
sent (`common.signatures`), and the answer becomes top-k labels (`common.scores`).

    client = TFServingClient(TFServingSettings.from_env(), max_image_pixels=40_000_000)
    client.start()                     # channel + GetModelMetadata, retried in the background
    client.ready                       # True once the signature was read
    client.classify(jpeg_bytes, 5)     # -> Prediction(labels=[Label("Egyptian cat", 0.71, 285)...])

An encoded image goes as it was uploaded to a DT_STRING signature, but it is still decoded here
once, quickly, so a bomb or a broken file gets the same 413/415 whatever the model; a pixel
signature gets the resized and cropped pixels (`common.images`).

gRPC status -> our errors: UNAVAILABLE, DEADLINE_EXCEEDED and other server-side trouble ->
`TransientError` (503, retried); NOT_FOUND -> `TransientError` too (the model may still be
loading); INVALID_ARGUMENT -> `PermanentError` (422) carrying the server's message.

Only the protobuf modules are imported (tensorflow-protobuf or tensorflow-serving-api provide the
same paths), never TensorFlow; TensorProtos are built by hand (`common.tensors`) with the bytes
tf.make_tensor_proto would produce.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from common.env import ConfigError, Env, env_var
from common.errors import EventError, PermanentError, TransientError
from common.images import decode_image, preprocess_image, to_batch
from common.scores import Prediction, labels_from_outputs
from common.signatures import SIGNATURE_DEF, ModelSignature, parse_signature
from common.tensors import (
    TensorConversionError,
    dtype_name,
    fill_pixels,
    fill_tensor,
    from_numpy,
    to_numpy,
)

log = logging.getLogger("tfserving")

TFSERVING = "TensorFlow Serving client (resnet)"
SERVING_ENDPOINT = env_var(
    "RESNET_SERVING_ENDPOINT",
    "host:port of the TF Serving gRPC API (the seed's name).",
    TFSERVING,
    "localhost:8500",
)
MODEL_NAME = env_var("MODEL_NAME", "Model name on the server.", TFSERVING, "resnet")
MODEL_SIGNATURE = env_var("MODEL_SIGNATURE", "Signature to call.", TFSERVING, "serving_default")
MODEL_TIMEOUT = env_var("MODEL_TIMEOUT", "Seconds per Predict call.", TFSERVING, "10")


@dataclass(frozen=True)
class TFServingSettings:
    endpoint: str = "localhost:8500"
    model_name: str = "resnet"
    signature: str = "serving_default"
    timeout: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TFServingSettings:
        env = Env(environ)
        endpoint = env.required_str(SERVING_ENDPOINT)
        host, _, port = endpoint.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"{SERVING_ENDPOINT.name}: expected host:port, got {endpoint!r}")
        return cls(
            endpoint=endpoint,
            model_name=env.required_str(MODEL_NAME),
            signature=env.required_str(MODEL_SIGNATURE),
            timeout=env.number(MODEL_TIMEOUT, 0.01),
        )


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


# --- request and answer tensors ----------------------------------------------------------------


def image_bytes_tensor(data: bytes, shape: tuple[int, ...] = (1,)) -> tensor_pb2.TensorProto:
    """A DT_STRING tensor of one encoded image (strings have no tensor_content form)."""
    values = np.empty(1, dtype=object)
    values[0] = data
    return from_numpy(values.reshape(shape))


def pixels_tensor(batch: npt.NDArray[Any]) -> tensor_pb2.TensorProto:
    """A pixel batch (float32 or uint8) as the tensor a pixel signature takes."""
    if batch.dtype.name not in ("float32", "uint8"):
        raise ValueError(f"pixels are float32 or uint8, not {batch.dtype}")
    return from_numpy(batch)


def tensor_to_array(proto: tensor_pb2.TensorProto) -> npt.NDArray[Any]:
    """A numeric output of a Predict answer as numpy; anything else is the model's fault (422)."""
    if proto.dtype == types_pb2.DT_STRING:
        raise PermanentError(f"model output has dtype {dtype_name(proto.dtype)}, not a number")
    try:
        return to_numpy(proto)
    except TensorConversionError as exc:
        raise PermanentError(f"model output: {exc}") from None


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
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.settings.model_name
        request.model_spec.signature_name = signature.signature_name
        # The tensor is written into the request in place (no CopyFrom of a finished one).
        tensor = request.inputs[spec.name]
        if signature.input_kind == "image_bytes":
            # The server decodes it, but refusing bombs and broken files here keeps 413/415
            # identical for every model (and a DCT-scaled decode costs a few ms).
            decode_image(data, self.max_image_pixels, min_size=(256, 256))
            shape = (1,) if spec.shape is None or len(spec.shape) == 1 else ()
            tensor.CopyFrom(image_bytes_tensor(data, shape))
            return request
        height, width = signature.pixel_size
        image = preprocess_image(data, height, width, self.max_image_pixels)
        if signature.pixel_dtype == "uint8":
            # Pillow's RGB buffer is the tensor's content as it is: one copy, no numpy.
            fill_pixels(tensor, image.tobytes(), (1, height, width, 3), types_pb2.DT_UINT8)
        else:
            fill_tensor(tensor, to_batch(image, "float32"))
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
