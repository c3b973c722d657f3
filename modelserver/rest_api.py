"""REST data plane: TensorFlow Serving's REST API (status, metadata, predict) plus `/healthz`, with
the Google Vision stand-in mounted from vision_api.py.

Routes, as TF Serving documents them:
  GET  /v1/models/<name>[/versions/<v>]            model status ("AVAILABLE")
  GET  /v1/models/<name>[/versions/<v>]/metadata   signature_def, as JSON
  POST /v1/models/<name>[/versions/<v>]:predict    row ("instances") or columnar ("inputs")
Errors are `{"error": "<message>"}` with 404 (unknown model/version), 400 (bad request) or 503
(the batching queue is full).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np
import numpy.typing as npt
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from tensorflow.core.framework import types_pb2

from common.tensors import TensorSpec, numpy_dtype
from modelserver.batching import BatchQueueFull
from modelserver.metadata import signature_def_json
from modelserver.registry import (
    DEFAULT_SIGNATURE,
    InvalidInputError,
    ModelNotFoundError,
    ModelRegistry,
    ServedModel,
    Signature,
)
from modelserver.vision_api import VisionStandinSettings, add_vision_routes


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _parse_version(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ModelNotFoundError(f"version '{raw}' is not a number") from None


def _status_body(models: list[ServedModel]) -> dict[str, Any]:
    return {
        "model_version_status": [
            {
                "version": str(m.version),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for m in sorted(models, key=lambda m: m.version)
        ]
    }


def _metadata_body(model: ServedModel) -> dict[str, Any]:
    return {
        "model_spec": {"name": model.name, "signature_name": "", "version": str(model.version)},
        "metadata": {"signature_def": signature_def_json(model)},
    }


def _decode_value(spec: TensorSpec, value: Any) -> npt.NDArray[Any]:
    """One JSON value (an instance, or a whole column) as an array of the input's dtype."""
    if spec.dtype == types_pb2.DT_STRING:
        return _decode_strings(value)
    if _leads_to_b64(value):
        # TF Serving decodes {"b64": ...} only where the signature says DT_STRING (json_tensor.cc
        # answers any other dtype with a type error); so does this server.
        raise InvalidInputError(
            f"input '{spec.name}' is {spec.dtype_name}: {{\"b64\": ...}} values are only decoded "
            "for DT_STRING inputs, as in TF Serving; send numbers, or the encoded image to a "
            "DT_STRING model (kind image_bytes)"
        )
    dtype = numpy_dtype(spec.dtype)
    try:
        array = np.asarray(value, dtype=dtype)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(
            f"input '{spec.name}': cannot read JSON value as {dtype} array "
            f"(ragged lists or non-numbers?): {exc}"
        ) from exc
    return array


def _leads_to_b64(value: Any) -> bool:
    """Whether the first leaf of a nested JSON list is a {"b64": ...} object (cheap: one path)."""
    while isinstance(value, list) and value:
        value = value[0]
    return isinstance(value, dict) and "b64" in value


def _decode_strings(value: Any) -> npt.NDArray[Any]:
    def one(item: Any) -> Any:
        if isinstance(item, dict) and set(item) == {"b64"}:
            try:
                return base64.b64decode(str(item["b64"]), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise InvalidInputError(f'invalid base64 in {{"b64": ...}}: {exc}') from exc
        if isinstance(item, str):
            return item.encode()
        if isinstance(item, list):
            return [one(x) for x in item]
        raise InvalidInputError(f'expected a string or {{"b64": ...}}, got {type(item).__name__}')

    decoded = one(value)
    array = np.empty(len(decoded) if isinstance(decoded, list) else (), dtype=object)
    if isinstance(decoded, list):
        array[:] = decoded
    else:
        array[()] = decoded
    return array


def _is_named(value: Any) -> bool:
    return isinstance(value, dict) and set(value) != {"b64"}


def _row_inputs(signature: Signature, instances: Any) -> dict[str, npt.NDArray[Any]]:
    if not isinstance(instances, list) or not instances:
        raise InvalidInputError("'instances' must be a non-empty list")
    names = [spec.name for spec in signature.inputs]
    columns: dict[str, list[npt.NDArray[Any]]] = {name: [] for name in names}
    for index, instance in enumerate(instances):
        if _is_named(instance):
            if set(instance) != set(names):
                raise InvalidInputError(
                    f"instances[{index}] has keys {sorted(instance)}, expected {names}"
                )
            for name in names:
                columns[name].append(_decode_value(signature.input(name), instance[name]))
        elif len(names) == 1:
            columns[names[0]].append(_decode_value(signature.inputs[0], instance))
        else:
            raise InvalidInputError(f"instances[{index}] must be an object with keys {names}")
    result = {}
    for name, items in columns.items():
        shapes = {item.shape for item in items}
        if len(shapes) != 1:
            raise InvalidInputError(
                f"instances of input '{name}' differ in shape: {sorted(shapes)}"
            )
        result[name] = np.stack(items)
    return result


def _columnar_inputs(signature: Signature, inputs: Any) -> dict[str, npt.NDArray[Any]]:
    if _is_named(inputs):
        return {
            name: _decode_value(signature.input(name), value)
            if name in {s.name for s in signature.inputs}
            else np.asarray(value)
            for name, value in inputs.items()
        }
    if len(signature.inputs) != 1:
        raise InvalidInputError("'inputs' must be an object naming each input")
    return {signature.inputs[0].name: _decode_value(signature.inputs[0], inputs)}


def predict_json(model: ServedModel, body: Any) -> dict[str, Any]:
    """TF Serving's REST predict: request JSON in, response JSON out."""
    if not isinstance(body, dict):
        raise InvalidInputError("request body must be a JSON object")
    has_instances, has_inputs = "instances" in body, "inputs" in body
    if has_instances == has_inputs:
        raise InvalidInputError("request must contain exactly one of 'instances' or 'inputs'")
    signature_name = str(body.get("signature_name") or DEFAULT_SIGNATURE)
    signature = model.signature(signature_name)
    if has_instances:
        inputs = _row_inputs(signature, body["instances"])
    else:
        inputs = _columnar_inputs(signature, body["inputs"])
    outputs = model.predict(inputs, signature_name)
    as_lists = {name: array.tolist() for name, array in outputs.items()}
    if has_instances:
        if len(as_lists) == 1:
            return {"predictions": next(iter(as_lists.values()))}
        batch = len(next(iter(as_lists.values())))
        return {"predictions": [{name: v[i] for name, v in as_lists.items()} for i in range(batch)]}
    if len(as_lists) == 1:
        return {"outputs": next(iter(as_lists.values()))}
    return {"outputs": as_lists}


def create_app(registry: ModelRegistry, vision: VisionStandinSettings | None = None) -> FastAPI:
    app = FastAPI(title="modelserver (TF Serving REST API)", docs_url=None, redoc_url=None)

    @app.exception_handler(ModelNotFoundError)
    async def not_found(_: Request, exc: ModelNotFoundError) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(InvalidInputError)
    async def invalid(_: Request, exc: InvalidInputError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(BatchQueueFull)
    async def queue_full(_: Request, exc: BatchQueueFull) -> JSONResponse:
        # TF Serving answers UNAVAILABLE, which its REST API maps to 503.
        return _error(503, str(exc))

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "models": registry.names()}

    @app.get("/v1/models/{name}")
    def model_status(name: str) -> dict[str, Any]:
        return _status_body(list(registry.versions(name).values()))

    @app.get("/v1/models/{name}/versions/{version}")
    def version_status(name: str, version: str) -> dict[str, Any]:
        return _status_body([registry.get(name, _parse_version(version))])

    @app.get("/v1/models/{name}/labels/{label}")
    def label_status(name: str, label: str) -> dict[str, Any]:
        return _status_body([registry.get(name, None, label)])

    @app.get("/v1/models/{name}/metadata")
    def model_metadata(name: str) -> dict[str, Any]:
        return _metadata_body(registry.get(name))

    @app.get("/v1/models/{name}/versions/{version}/metadata")
    def version_metadata(name: str, version: str) -> dict[str, Any]:
        return _metadata_body(registry.get(name, _parse_version(version)))

    async def _predict(request: Request, model_of: Any, target: str) -> JSONResponse:
        base, _, verb = target.rpartition(":")
        if not base or verb != "predict":
            return _error(404, f"unsupported verb '{verb or target}': only ':predict' is served")
        model = model_of(base)
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            return _error(400, f"JSON Parse error: {exc}")
        result = await run_in_threadpool(predict_json, model, body)
        return JSONResponse(result)

    @app.post("/v1/models/{target}")
    async def predict(target: str, request: Request) -> JSONResponse:
        return await _predict(request, lambda name: registry.get(name), target)

    @app.post("/v1/models/{name}/versions/{target}")
    async def predict_version(name: str, target: str, request: Request) -> JSONResponse:
        return await _predict(
            request, lambda version: registry.get(name, _parse_version(version)), target
        )

    if vision is not None:
        add_vision_routes(app, registry, vision)
    return app
