"""ONNX serving core: manifests, the onnxruntime session wrapper, the model registry.

Import nothing here: ``shared.model_versions`` (used by the gateway, which has no onnxruntime)
imports ``shared.inference.manifest``, which loads this package first.
"""
