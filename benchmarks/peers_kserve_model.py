"""A KServe `kserve.Model` on the same MobileNetV2 ONNX, for `bench_peers` (run by the throwaway
venv's Python, which has `kserve` from PyPI; this repository's venv does not).

    python peers_kserve_model.py MODEL.onnx HTTP_PORT GRPC_PORT INTRA_OP_THREADS

V1 REST (`{"instances": [...]}` -> `{"predictions": [top-1, ...]}`) and V2 gRPC (FP32 input
`images` [N, 224, 224, 3] -> `probabilities`, `classes`), with the session options this project's
server uses, so both serve the same graph the same way.
"""

from __future__ import annotations

import sys
from typing import Any

import kserve
import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse


class OnnxClassifier(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, path: str, threads: int) -> None:
        super().__init__(name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.ready = True

    def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        if isinstance(payload, InferRequest):
            images = payload.inputs[0].as_numpy().astype(np.float32, copy=False)
            probabilities, classes = self.session.run(None, {"images": images})
            outputs = []
            for name, array, dtype in (
                ("probabilities", probabilities, "FP32"),
                ("classes", classes, "INT64"),
            ):
                output = InferOutput(name=name, shape=list(array.shape), datatype=dtype)
                output.set_data_from_numpy(array, binary_data=False)
                outputs.append(output)
            return InferResponse(
                model_name=self.name, infer_outputs=outputs, response_id=payload.id
            )
        images = np.asarray(payload["instances"], dtype=np.float32)
        _, classes = self.session.run(None, {"images": images})
        return {"predictions": classes.tolist()}


if __name__ == "__main__":
    path, http_port, grpc_port, threads = sys.argv[1:5]
    model = OnnxClassifier("mobilenet_v2", path, int(threads))
    kserve.ModelServer(
        http_port=int(http_port), grpc_port=int(grpc_port), workers=1, enable_grpc=True
    ).start([model])
