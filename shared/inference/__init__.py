"""ONNX serving core: manifests, the onnxruntime session wrapper, the model registry."""
