"""TensorFlow Serving-compatible model server on onnxruntime (see docs/modelserver.md)."""
