"""TF Serving's batching: the parameters file, the scheduler, and batched == unbatched results."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from common.env import ConfigError
from modelserver.batching import (
    Batcher,
    BatchingParameters,
    BatchQueueFull,
    parse_batching_parameters,
)
from modelserver.config import parse_config
from modelserver.registry import ModelRegistry, ModelSpec
from testkit.services import MODEL_CACHE_DIR
from tests.fixtures.modelserver import photo_pixels

# As TF Serving's documentation writes it (batching/README.md), comments and all.
TF_SERVING_FILE = """
max_batch_size { value: 32 }
batch_timeout_micros { value: 500 }
max_enqueued_batches { value: 1000000 }
num_batch_threads { value: 4 }  # one per core
allowed_batch_sizes : 1
allowed_batch_sizes : 2
allowed_batch_sizes : 8
allowed_batch_sizes : 32
thread_pool_name { value: "model_server_batch_threads" }
"""


def test_parses_tf_servings_text_format() -> None:
    params = parse_batching_parameters(TF_SERVING_FILE)
    assert params == BatchingParameters(32, 500, 1_000_000, 4, (1, 2, 8, 32))
    assert [params.padded_size(n) for n in (1, 2, 3, 9, 32)] == [1, 2, 8, 32, 32]


def test_fields_left_out_keep_the_defaults() -> None:
    params = parse_batching_parameters("max_batch_size { value: 8 }")
    assert params == BatchingParameters(max_batch_size=8)
    assert params.threads(intra_op_threads=1) >= 1
    assert BatchingParameters(num_batch_threads=3).threads(intra_op_threads=2) == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_batch_size: 8", "max_batch_size"),  # a wrapped field needs `{ value: 8 }`
        ("max_batch_sise { value: 8 }", 'no field named "max_batch_sise"'),
        ("max_batch_size { value: 0 }", "max_batch_size must be >= 1, got 0"),
        ("batch_timeout_micros { value: -1 }", "batch_timeout_micros must be >= 0"),
        (
            "max_batch_size { value: 8 } allowed_batch_sizes: 2 allowed_batch_sizes: 4",
            "the last entry of allowed_batch_sizes (4) must equal max_batch_size (8)",
        ),
        (
            "max_batch_size { value: 4 } allowed_batch_sizes: 4 allowed_batch_sizes: 4",
            "strictly increasing",
        ),
    ],
)
def test_bad_files_are_config_errors_that_say_why(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"batching\.txt") as caught:
        parse_batching_parameters(text, "batching.txt")
    assert message in str(caught.value)


def test_flags_and_variables(tmp_path: Path) -> None:
    assert parse_config([], env={}).batching is None
    assert parse_config(["--enable_batching"], env={}).batching == BatchingParameters()
    assert parse_config(["--enable_batching=false"], env={}).batching is None
    on = {"MODELSERVER_ENABLE_BATCHING": "true"}
    assert parse_config([], env=on).batching == BatchingParameters()
    path = tmp_path / "batching.txt"
    path.write_text("max_batch_size { value: 16 }\nbatch_timeout_micros { value: 2000 }\n")
    config = parse_config(["--enable_batching", "--batching_parameters_file", str(path)], env={})
    assert config.batching == BatchingParameters(max_batch_size=16, batch_timeout_micros=2000)
    env = {**on, "MODELSERVER_BATCHING_PARAMETERS_FILE": str(path)}
    assert parse_config([], env=env).batching == config.batching
    with pytest.raises(ConfigError, match="only read with --enable_batching"):
        parse_config(["--batching_parameters_file", str(path)], env={})
    with pytest.raises(ConfigError, match="No such file"):
        parse_config(
            ["--enable_batching", "--batching_parameters_file", str(tmp_path / "no")], env={}
        )


class SlowDouble:
    """A stand-in model: rows doubled and summed; records each batch size; can be held."""

    def __init__(self, seconds: float = 0.02) -> None:
        self.seconds = seconds
        self.sizes: list[int] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, inputs: npt.NDArray[Any]) -> list[npt.NDArray[Any]]:
        self.release.wait()
        self.sizes.append(len(inputs))
        time.sleep(self.seconds)
        return [inputs * 2, inputs.reshape(len(inputs), -1).sum(axis=1)]


def test_concurrent_requests_share_runs_and_get_their_own_rows() -> None:
    model = SlowDouble()
    batcher = Batcher("toy", model, BatchingParameters(max_batch_size=8), threads=1)
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(
                pool.map(lambda i: batcher.run(np.full((1, 3), i, np.float32)), range(16))
            )
    finally:
        batcher.close()
    for i, (doubled, summed) in enumerate(results):
        np.testing.assert_array_equal(doubled, np.full((1, 3), 2 * i))
        np.testing.assert_array_equal(summed, [3 * i])
    assert sum(model.sizes) == 16
    assert len(model.sizes) < 16 and max(model.sizes) > 1


def test_a_lone_request_does_not_wait_with_timeout_zero() -> None:
    batcher = Batcher("toy", SlowDouble(0), BatchingParameters(), threads=1)
    try:
        started = time.perf_counter()
        batcher.run(np.zeros((1, 3), np.float32))
        assert time.perf_counter() - started < 0.5
    finally:
        batcher.close()


def test_timeout_gathers_requests_that_arrive_apart() -> None:
    model = SlowDouble(0)
    params = BatchingParameters(max_batch_size=4, batch_timeout_micros=300_000)
    batcher = Batcher("toy", model, params, threads=1)
    try:
        with ThreadPoolExecutor(4) as pool:
            futures = []
            for i in range(4):
                futures.append(pool.submit(batcher.run, np.full((1, 1), i, np.float32)))
                time.sleep(0.01)
            assert [f.result()[0].item() for f in futures] == [0, 2, 4, 6]
    finally:
        batcher.close()
    assert model.sizes == [4]  # full before the timeout: ran at once


def test_large_requests_are_split_and_batches_padded() -> None:
    model = SlowDouble(0)
    params = BatchingParameters(max_batch_size=4, allowed_batch_sizes=(2, 4))
    batcher = Batcher("toy", model, params, threads=1)
    try:
        inputs = np.arange(7, dtype=np.float32).reshape(7, 1)
        doubled, summed = batcher.run(inputs)
        np.testing.assert_array_equal(doubled, inputs * 2)
        np.testing.assert_array_equal(summed, inputs[:, 0])
        batcher.run(np.zeros((1, 1), np.float32))
    finally:
        batcher.close()
    assert model.sizes == [4, 4, 2]  # 4 + 3 padded to 4, then 1 padded to 2


def test_a_full_queue_refuses_at_once_and_the_queued_still_run() -> None:
    model = SlowDouble(0)
    model.release.clear()
    params = BatchingParameters(max_batch_size=1, max_enqueued_batches=1)
    batcher = Batcher("toy", model, params, threads=1)
    try:
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(batcher.run, np.zeros((1, 1), np.float32))
            deadline = time.monotonic() + 5
            while batcher._queue and time.monotonic() < deadline:  # taken by the thread
                time.sleep(0.005)
            queued = pool.submit(batcher.run, np.ones((1, 1), np.float32))
            while not batcher._queue and time.monotonic() < deadline:
                time.sleep(0.005)
            with pytest.raises(BatchQueueFull, match="queue to which this task was submitted"):
                batcher.run(np.ones((1, 1), np.float32))
            model.release.set()
            assert running.result()[0].item() == 0
            assert queued.result()[0].item() == 2
    finally:
        model.release.set()
        batcher.close()


def test_a_failing_run_fails_every_request_of_the_batch() -> None:
    def broken(inputs: npt.NDArray[Any]) -> list[npt.NDArray[Any]]:
        raise RuntimeError("onnxruntime said no")

    batcher = Batcher("toy", broken, BatchingParameters(), threads=1)
    try:
        with pytest.raises(RuntimeError, match="onnxruntime said no"):
            batcher.run(np.zeros((2, 1), np.float32))
    finally:
        batcher.close()


# Batched runs could take other GEMM block sizes than single ones, so float sums may round
# differently: classes must be identical, probabilities within this. (On the development
# machine, CPUExecutionProvider, they are bit-identical: max difference 0.0.)
BATCHED_TOLERANCE = 1e-6


def test_batched_predicts_equal_unbatched_on_the_real_model() -> None:
    photos = ["chelsea", "coffee", "astronaut", "rocket", "cat", "camera"]
    pixels = [photo_pixels(name)[np.newaxis] for name in photos]
    plain = ModelRegistry(MODEL_CACHE_DIR, 1)
    batching = ModelRegistry(MODEL_CACHE_DIR, 1, BatchingParameters(num_batch_threads=1))
    try:
        alone = plain.load(ModelSpec("m", "mobilenet_v2"))
        batched = batching.load(ModelSpec("m", "mobilenet_v2"))
        resnet = batching.load(ModelSpec("resnet", "image_bytes"))
        assert resnet.batcher is batched.batcher  # one queue per session
        expected = [alone.predict({"images": p}) for p in pixels]
        sizes: list[int] = []
        assert batched.batcher is not None
        original = batched.batcher._run_batch

        def recording(inputs: npt.NDArray[Any]) -> Any:
            sizes.append(len(inputs))
            return original(inputs)

        batched.batcher._run_batch = recording
        with ThreadPoolExecutor(len(photos)) as pool:
            got = list(pool.map(lambda p: batched.predict({"images": p}), pixels * 3))
        # A multi-image request through the batcher, in uint8 as well.
        stacked = batched.predict({"images": np.concatenate(pixels)})
    finally:
        plain.close()
        batching.close()
    assert max(sizes) > 1, sizes  # some requests did share a run
    for result, want in zip(got, expected * 3, strict=True):
        np.testing.assert_array_equal(result["classes"], want["classes"])
        np.testing.assert_allclose(
            result["probabilities"], want["probabilities"], atol=BATCHED_TOLERANCE, rtol=0
        )
    np.testing.assert_array_equal(
        stacked["classes"], np.concatenate([w["classes"] for w in expected])
    )
    np.testing.assert_allclose(
        stacked["probabilities"],
        np.concatenate([w["probabilities"] for w in expected]),
        atol=BATCHED_TOLERANCE,
        rtol=0,
    )
