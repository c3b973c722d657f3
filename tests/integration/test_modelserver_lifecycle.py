"""The server process itself: Knative's PORT variable, gRPC-only mode, clean exit on SIGTERM."""

from __future__ import annotations

import signal
from pathlib import Path

import grpc
import numpy as np
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from common.tensors import from_numpy, to_numpy
from tests.fixtures.modelserver import MODEL_CACHE_DIR, photo_pixels
from tests.fixtures.processes import free_port, python_argv, running


def test_knative_port_grpc_only_and_graceful_sigterm(log_dir: Path) -> None:
    port = free_port()
    argv = python_argv(
        "-m",
        "modelserver",
        "--model_name",
        "mobilenet_v2",
        "--model_cache_dir",
        str(MODEL_CACHE_DIR),
    )
    env = {"PORT": str(port), "MODELSERVER_REST_PORT": "0", "MODELSERVER_INTRA_OP_THREADS": "1"}
    with running(
        "modelserver-knative", argv, log_dir, env=env, ready_port=port, timeout=120
    ) as proc:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "mobilenet_v2"
            request.inputs["images"].CopyFrom(from_numpy(photo_pixels("chelsea")[None]))
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                request, timeout=30
            )
        assert int(to_numpy(response.outputs["classes"])[0]) in range(281, 286)
        assert np.isclose(to_numpy(response.outputs["probabilities"]).sum(), 1.0, atol=1e-4)
        proc.signal(signal.SIGTERM)
        assert proc.popen is not None
        assert proc.popen.wait(15) == 0
        assert "received SIGTERM" in proc.log_text()
