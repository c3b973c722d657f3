"""TF Serving's REST `{"b64": ...}` values, in process: decoded for DT_STRING inputs (row and
columnar forms, named or not), refused with a clear 400 for numeric inputs, as TF Serving does."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from modelserver.registry import ModelRegistry, ModelSpec
from modelserver.rest_api import create_app
from testkit.services import MODEL_CACHE_DIR
from tests.fixtures.modelserver import photo_jpeg, photo_pixels

CAT_COLUMNS = {c + 1 for c in range(281, 286)}  # 1001-class layout: ImageNet class i is i + 1
CUP_COLUMNS = {505, 968, 969}  # cup, espresso, coffee mug


@pytest.fixture(scope="module")
def registry() -> Iterator[ModelRegistry]:
    registry = ModelRegistry(MODEL_CACHE_DIR, 1)
    registry.load(ModelSpec("resnet", "image_bytes"))
    registry.load(ModelSpec("mobilenet_v2", "mobilenet_v2"))
    yield registry
    registry.close()


@pytest.fixture(scope="module")
def client(registry: ModelRegistry) -> Iterator[TestClient]:
    with TestClient(create_app(registry)) as test_client:
        yield test_client


def _b64(name: str) -> dict[str, str]:
    return {"b64": base64.b64encode(photo_jpeg(name)).decode()}


@pytest.mark.parametrize(
    "body",
    [
        {"instances": [_b64("chelsea"), _b64("coffee")]},
        {"instances": [{"image_bytes": _b64("chelsea")}, {"image_bytes": _b64("coffee")}]},
        {"inputs": [_b64("chelsea"), _b64("coffee")]},
        {"inputs": {"image_bytes": [_b64("chelsea"), _b64("coffee")]}},
    ],
    ids=["row", "row-named", "columnar", "columnar-named"],
)
def test_b64_image_bytes_in_every_form(client: TestClient, body: dict[str, object]) -> None:
    response = client.post("/v1/models/resnet:predict", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    if "predictions" in answer:
        classes = [row["classes"] for row in answer["predictions"]]
    else:
        classes = answer["outputs"]["classes"]
    assert classes[0] in CAT_COLUMNS and classes[1] in CUP_COLUMNS


def test_b64_is_the_same_bytes_as_a_grpc_string_val(
    client: TestClient, registry: ModelRegistry
) -> None:
    via_b64 = client.post("/v1/models/resnet:predict", json={"inputs": [_b64("chelsea")]})
    encoded = np.empty(1, dtype=object)
    encoded[0] = photo_jpeg("chelsea")
    direct = registry.get("resnet").predict({"image_bytes": encoded})
    outputs = via_b64.json()["outputs"]
    assert outputs["classes"] == direct["classes"].tolist()
    # JSON carries float32 as its shortest decimal repr: the same float32 values come back.
    np.testing.assert_array_equal(
        np.asarray(outputs["probabilities"], dtype=np.float32), direct["probabilities"]
    )


def test_invalid_base64_is_400(client: TestClient) -> None:
    response = client.post("/v1/models/resnet:predict", json={"instances": [{"b64": "no!"}]})
    assert response.status_code == 400
    assert "invalid base64" in response.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        {"instances": [{"b64": base64.b64encode(photo_pixels("chelsea").tobytes()).decode()}]},
        {"inputs": {"images": [{"b64": "AAAA"}]}},
    ],
    ids=["row", "columnar"],
)
def test_b64_for_a_numeric_input_is_refused_as_tf_serving_does(
    client: TestClient, body: dict[str, object]
) -> None:
    response = client.post("/v1/models/mobilenet_v2:predict", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert "input 'images' is DT_FLOAT" in error
    assert "only decoded for DT_STRING inputs" in error
