"""gRPC data plane: `tensorflow.serving.PredictionService` (Predict, GetModelMetadata).

`ModelService/GetModelStatus` is not offered: its messages import `tensorflow.tsl` protos that the
slim `tensorflow-protobuf` package lacks; model status is on the REST API (`GET /v1/models/<name>`).
Classify, Regress and MultiInference answer UNIMPLEMENTED (the generated servicer's default).

Requests run on a thread pool; onnxruntime releases the GIL during inference, so concurrent
Predicts use the CPU cores in parallel.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from concurrent import futures
from typing import Any, NoReturn, TypeVar

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from common.tensors import TensorConversionError, from_numpy, to_numpy
from modelserver.batching import BatchQueueFull
from modelserver.metadata import SIGNATURE_DEF_FIELD, signature_def_map
from modelserver.registry import (
    DEFAULT_SIGNATURE,
    InvalidInputError,
    ModelNotFoundError,
    ModelRegistry,
    ServedModel,
)

log = logging.getLogger("modelserver.grpc")

# A batch of 64 float32 224x224x3 images is ~38.5 MB; leave room for the framing.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

Response = TypeVar("Response")


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


def _model_for(registry: ModelRegistry, spec: Any) -> ServedModel:
    version = spec.version.value if spec.HasField("version") else None
    return registry.get(spec.name, version, spec.version_label or None)


def _errors_as_status(
    handler: Callable[[Any, Any, grpc.ServicerContext], Response],
) -> Callable[[Any, Any, grpc.ServicerContext], Response]:
    """Map the registry's exceptions to TF Serving's status codes."""

    @functools.wraps(handler)
    def wrapped(self: Any, request: Any, context: grpc.ServicerContext) -> Response:
        try:
            return handler(self, request, context)
        except ModelNotFoundError as exc:
            _abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        except (InvalidInputError, TensorConversionError) as exc:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except BatchQueueFull as exc:
            _abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        except Exception as exc:
            if isinstance(exc, grpc.RpcError):
                raise
            log.exception("internal error in %s", handler.__name__)
            _abort(context, grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")

    return wrapped


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    @_errors_as_status
    def Predict(
        self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predict_pb2.PredictResponse:
        model = _model_for(self.registry, request.model_spec)
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        inputs = {}
        for name, proto in request.inputs.items():
            try:
                inputs[name] = to_numpy(proto)
            except TensorConversionError as exc:
                raise InvalidInputError(f"input '{name}': {exc}") from exc
        outputs = model.predict(inputs, signature_name, list(request.output_filter))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = model.name
        response.model_spec.version.value = model.version
        response.model_spec.signature_name = signature_name
        for name, array in outputs.items():
            response.outputs[name].CopyFrom(from_numpy(array))
        return response

    @_errors_as_status
    def GetModelMetadata(
        self,
        request: get_model_metadata_pb2.GetModelMetadataRequest,
        context: grpc.ServicerContext,
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        model = _model_for(self.registry, request.model_spec)
        fields = list(request.metadata_field)
        if not fields:
            raise InvalidInputError(
                "GetModelMetadataRequest must specify at least one metadata_field"
            )
        unsupported = [f for f in fields if f != SIGNATURE_DEF_FIELD]
        if unsupported:
            raise InvalidInputError(
                f"Metadata field(s) {unsupported} not supported; supported: [{SIGNATURE_DEF_FIELD}]"
            )
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = model.name
        response.model_spec.version.value = model.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_def_map(model))
        return response


def start_grpc_server(
    registry: ModelRegistry, host: str, port: int, max_workers: int
) -> tuple[grpc.Server, int]:
    """Start serving; returns the server and the bound port (useful when port is 0)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(registry), server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind gRPC to {host}:{port}")
    server.start()
    return server, bound
