"""The benchmark models, built with ``onnx.helper`` and published into a registry with
:func:`registry.publish.publish` (the real publish path, as users publish).

* ``tiny``: ``input`` FP32[batch, 16] -> ``output`` FP32[batch, 8]; one Gemm. Transport-bound: almost all
  of its latency is gRPC, parsing and scheduling, so it measures the gateway's overhead.
* ``mlp``: ``input`` FP32[batch, 256] -> 1024 -> 1024 -> ``output`` FP32[batch, 10], Gemm + Relu layers
  (about 1.3 M weights, 2.6 MFLOP per row). Compute-bound at larger batches.

Both have a dynamic batch dim, ``max_batch_size = 64`` and a 1000-row ``reference.npz``. Deterministic for a
seed. This module is build-time only: the load path never imports ``onnx``.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from registry.layout import scan_registry
from registry.publish import publish

__all__ = ["BENCH_MODELS", "build_bench_registry", "mlp_model", "tiny_model"]

OPSET = 17
IR_VERSION = 8
REFERENCE_ROWS = 1000
BENCH_MODELS = ("tiny", "mlp")
_TOML = "[batching]\nmax_batch_size = 64\n"


def _dense_stack(widths: list[int], seed: int) -> onnx.ModelProto:
    """Gemm layers ``widths[0] -> widths[1] -> ...``, Relu between them, dynamic batch dim."""
    rng = np.random.default_rng(seed)
    nodes, initializers = [], []
    current = "input"
    layers = len(widths) - 1
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        weight = (rng.normal(size=(fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        initializers += [
            numpy_helper.from_array(weight, f"w{i}"),
            numpy_helper.from_array(np.zeros(fan_out, dtype=np.float32), f"b{i}"),
        ]
        last = i == layers - 1
        gemm_out = "output" if last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [gemm_out]))
        if not last:
            nodes.append(helper.make_node("Relu", [gemm_out], [f"r{i}"]))
            current = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "bench",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", widths[0]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", widths[-1]])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def tiny_model(seed: int = 0) -> onnx.ModelProto:
    """16 -> 8, one Gemm."""
    return _dense_stack([16, 8], seed)


def mlp_model(seed: int = 0) -> onnx.ModelProto:
    """256 -> 1024 -> 1024 -> 10, Gemm + Relu."""
    return _dense_stack([256, 1024, 1024, 10], seed)


def build_bench_registry(root: Path, seed: int = 0, models: tuple[str, ...] = BENCH_MODELS) -> Path:
    """Publishes ``models`` (version 1) under ``root`` unless they are already there."""
    root.mkdir(parents=True, exist_ok=True)
    existing = scan_registry(root)
    builders = {"tiny": (tiny_model, 16), "mlp": (mlp_model, 256)}
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            build, width = builders[name]
            if name in existing and existing[name].versions:
                continue
            (root / name).mkdir(exist_ok=True)
            (root / name / "model.toml").write_text(_TOML)
            onnx_path = Path(tmp) / f"{name}.onnx"
            onnx.save(build(seed), onnx_path)
            reference = Path(tmp) / f"{name}-reference.npz"
            rows = np.random.default_rng(seed + 1).normal(size=(REFERENCE_ROWS, width)).astype(np.float32)
            np.savez(reference, allow_pickle=False, **{"input:input": rows})
            publish(root, name, onnx_path, reference=reference, notes="infergate benchmark model")
    return root
