"""CPU versus CUDA throughput on a small conv net built with onnx.helper (for scripts/gpu-check.sh).

Prints one table: batch size, CPU rows/s, CUDA rows/s (IO binding through the gateway's Runner), the
speed-up, and the max abs difference between the two. Exits 2 when CUDA is not available.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from gateway.runner import Runner, RunnerOptions, available_providers


def conv_net(channels: int = 64, size: int = 64, classes: int = 10) -> onnx.ModelProto:
    """x FP32[batch, 3, size, size] -> 3 conv+relu blocks -> global average pool -> linear -> logits."""
    rng = np.random.default_rng(0)
    inits, nodes, current, width = [], [], "x", 3
    for layer in range(3):
        w = numpy_helper.from_array(
            (rng.normal(size=(channels, width, 3, 3)) * 0.05).astype(np.float32), f"w{layer}"
        )
        inits.append(w)
        nodes.append(helper.make_node("Conv", [current, f"w{layer}"], [f"c{layer}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{layer}"], [f"r{layer}"]))
        current, width = f"r{layer}", channels
    nodes.append(helper.make_node("GlobalAveragePool", [current], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"]))
    inits.append(numpy_helper.from_array(rng.normal(size=(channels, classes)).astype(np.float32), "fc"))
    nodes.append(helper.make_node("MatMul", ["flat", "fc"], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def rows_per_second(runner: Runner, x: np.ndarray, seconds: float = 2.0) -> tuple[float, np.ndarray]:
    out = runner.run_sync(0, {"x": x}, ["logits"])[0]
    runs = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        runner.run_sync(0, {"x": x}, ["logits"])
        runs += 1
    return runs * len(x) / (time.perf_counter() - start), out


def main() -> int:
    if "cuda" not in available_providers():
        print("CUDA provider not available:", available_providers())
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "convnet.onnx"
        onnx.save(conv_net(), path)
        cpu = Runner.load(path, RunnerOptions(providers=("cpu",), name="cpu"))
        cuda = Runner.load(path, RunnerOptions(providers=("cuda",), require_gpu=True, name="cuda"))
        print(f"{'batch':>6} {'cpu rows/s':>12} {'cuda rows/s':>12} {'speed-up':>9} {'max |diff|':>11}")
        for batch in (1, 8, 32, 128):
            x = np.random.default_rng(batch).normal(size=(batch, 3, 64, 64)).astype(np.float32)
            cpu_rate, cpu_out = rows_per_second(cpu, x)
            cuda_rate, cuda_out = rows_per_second(cuda, x)
            diff = float(np.abs(cpu_out - cuda_out).max())
            print(
                f"{batch:>6} {cpu_rate:>12.0f} {cuda_rate:>12.0f} {cuda_rate / cpu_rate:>9.2f} {diff:>11.2e}"
            )
        cpu.close()
        cuda.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
