"""The model registry: directory layout, model config, signatures, lineage manifests, publish/pin, demo.

Depends on the standard library, numpy and onnx only (never onnxruntime or grpc), so that the gateway
and the monitor can both import it. Import the submodules directly (``registry.layout``, ...).
"""
