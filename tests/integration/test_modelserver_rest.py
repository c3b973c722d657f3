"""TF Serving's REST API on the model server: status, metadata, predict in row and columnar form."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import numpy as np
import pytest

from tests.fixtures.modelserver import ModelServer, photo_jpeg, photo_pixels

CAT_CLASSES = set(range(281, 286))
CUP_CLASSES = {504, 968}


def _top5(row: list[float]) -> set[int]:
    return {int(i) for i in np.argsort(-np.asarray(row))[:5]}


def test_model_status_is_available(modelserver: ModelServer) -> None:
    for path in ("/v1/models/mobilenet_v2", "/v1/models/mobilenet_v2/versions/1"):
        response = httpx.get(modelserver.rest_url + path)
        assert response.status_code == 200, path
        assert response.json() == {
            "model_version_status": [
                {
                    "version": "1",
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
            ]
        }


def test_healthz(modelserver: ModelServer) -> None:
    response = httpx.get(modelserver.rest_url + "/healthz")
    assert response.status_code == 200
    assert {"mobilenet_v2", "efficientnet_lite0", "resnet"} <= set(response.json()["models"])


@pytest.mark.parametrize(
    "path",
    ["/v1/models/nope", "/v1/models/mobilenet_v2/versions/2", "/v1/models/nope/metadata"],
)
def test_unknown_model_or_version_is_404_with_error(modelserver: ModelServer, path: str) -> None:
    response = httpx.get(modelserver.rest_url + path)
    assert response.status_code == 404
    assert "error" in response.json()


def test_metadata_signature_def_json(modelserver: ModelServer) -> None:
    for path in (
        "/v1/models/efficientnet_lite0/metadata",
        "/v1/models/efficientnet_lite0/versions/1/metadata",
    ):
        body = httpx.get(modelserver.rest_url + path).json()
        assert body["model_spec"] == {
            "name": "efficientnet_lite0",
            "signature_name": "",
            "version": "1",
        }
        signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
        images = signature["inputs"]["images"]
        assert images["dtype"] == "DT_FLOAT"
        assert [d["size"] for d in images["tensor_shape"]["dim"]] == ["-1", "224", "224", "3"]
        assert set(signature["outputs"]) == {"probabilities", "classes"}
        assert signature["method_name"] == "tensorflow/serving/predict"


def test_predict_row_format(modelserver: ModelServer) -> None:
    pixels = [photo_pixels("chelsea").tolist(), photo_pixels("coffee").tolist()]
    response = httpx.post(
        modelserver.rest_url + "/v1/models/mobilenet_v2:predict",
        json={"signature_name": "serving_default", "instances": pixels},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 2
    assert _top5(predictions[0]["probabilities"]) & CAT_CLASSES
    assert _top5(predictions[1]["probabilities"]) & CUP_CLASSES
    assert predictions[0]["classes"] == int(np.argmax(predictions[0]["probabilities"]))


def test_predict_columnar_format_with_version(modelserver: ModelServer) -> None:
    response = httpx.post(
        modelserver.rest_url + "/v1/models/efficientnet_lite0/versions/1:predict",
        json={"inputs": {"images": [photo_pixels("chelsea").tolist()]}},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert len(outputs["probabilities"]) == 1 and len(outputs["probabilities"][0]) == 1000
    assert outputs["classes"][0] in CAT_CLASSES


def test_predict_image_bytes_with_b64(modelserver: ModelServer) -> None:
    encoded = base64.b64encode(photo_jpeg("chelsea")).decode()
    response = httpx.post(
        modelserver.rest_url + "/v1/models/resnet:predict",
        json={"instances": [{"b64": encoded}]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    prediction = response.json()["predictions"][0]
    assert len(prediction["probabilities"]) == 1001
    assert prediction["classes"] - 1 in CAT_CLASSES


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"instances": [[[1.0, 2.0]]]}, "expected [-1, 224, 224, 3]"),
        ({"inputs": {"pixels": [[1.0]]}}, "unexpected ['pixels']"),
        ({"instances": [1], "inputs": [1]}, "exactly one of 'instances' or 'inputs'"),
        ({"instances": [[["x"]]]}, "cannot read JSON value"),
    ],
    ids=["bad-shape", "bad-name", "both-formats", "not-numbers"],
)
def test_bad_predict_requests_are_400(
    modelserver: ModelServer, body: dict[str, Any], expected: str
) -> None:
    response = httpx.post(modelserver.rest_url + "/v1/models/mobilenet_v2:predict", json=body)
    assert response.status_code == 400
    assert expected in response.json()["error"]


def test_predict_on_unknown_model_is_404(modelserver: ModelServer) -> None:
    response = httpx.post(modelserver.rest_url + "/v1/models/nope:predict", json={"instances": [1]})
    assert response.status_code == 404
    assert "nope" in response.json()["error"]


def test_malformed_json_is_400(modelserver: ModelServer) -> None:
    response = httpx.post(
        modelserver.rest_url + "/v1/models/mobilenet_v2:predict", content=b"{not json"
    )
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]
