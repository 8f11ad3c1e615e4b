"""Section ``gpu`` (only when named: ``make bench SECTIONS=gpu``; ``python -m bench.gpu`` for
scripts/gpu-check.sh): CPU versus CUDA throughput on a small conv net built with onnx.helper.

Contracts:

* Per batch size: CPU rows/s, CUDA rows/s (IO binding through the gateway's Runner), the speed-up, and the
  max abs difference between the two outputs. ``python -m bench.gpu`` prints that table and exits 2 when
  the CUDA provider is not available; the section refuses to run there (SystemExit naming the providers).
* The gateway's runner (onnxruntime) is imported only when the section runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bench.markdown import fmt, header
from bench.sections import Goal, Results, Section

__all__ = ["SECTION", "conv_net", "main", "measure"]

BATCHES = (1, 8, 32, 128)


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


def rows_per_second(runner: Any, x: np.ndarray, seconds: float = 2.0) -> tuple[float, np.ndarray]:
    out = runner.run_sync(0, {"x": x}, ["logits"])[0]
    runs = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        runner.run_sync(0, {"x": x}, ["logits"])
        runs += 1
    return runs * len(x) / (time.perf_counter() - start), out


def measure(seconds: float = 2.0) -> Results:
    """CPU and CUDA rows/s per batch size; SystemExit(2) when the CUDA provider is not available."""
    from gateway.runner import Runner, RunnerOptions, available_providers

    providers = list(available_providers())
    if "cuda" not in providers:
        print("CUDA provider not available:", providers, file=sys.stderr)
        raise SystemExit(2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "convnet.onnx"
        onnx.save(conv_net(), path)
        cpu = Runner.load(path, RunnerOptions(providers=("cpu",), name="cpu"))
        cuda = Runner.load(path, RunnerOptions(providers=("cuda",), require_gpu=True, name="cuda"))
        try:
            for batch in BATCHES:
                x = np.random.default_rng(batch).normal(size=(batch, 3, 64, 64)).astype(np.float32)
                cpu_rate, cpu_out = rows_per_second(cpu, x, seconds)
                cuda_rate, cuda_out = rows_per_second(cuda, x, seconds)
                diff = float(np.abs(cpu_out - cuda_out).max())
                rows.append({"batch": batch, "cpu_rows_per_s": cpu_rate, "cuda_rows_per_s": cuda_rate,
                             "max_abs_diff": diff})  # fmt: skip
        finally:
            cpu.close()
            cuda.close()
    return {"providers": providers, "rows": rows, "seconds": seconds}


def _run(args: argparse.Namespace) -> Results:
    return measure(min(2.0, args.duration))


def _goals(results: Results) -> list[Goal]:
    return [
        Goal.report(
            f"conv net, batch {r['batch']}: CUDA rows/s ÷ CPU rows/s",
            f"{fmt(r['cuda_rows_per_s'], 0)} ÷ {fmt(r['cpu_rows_per_s'], 0)}",
            r["cuda_rows_per_s"] / r["cpu_rows_per_s"] if r["cpu_rows_per_s"] else None,
        )
        for r in results["rows"]
    ]


def _render(results: Results) -> str:
    lines = header(
        results["meta"],
        "GPU: CPU versus CUDA on a conv net",
        [f"- onnxruntime providers: {', '.join(results['providers'])}; {results['seconds']:g} s per cell."],
    )
    lines += ["| batch | CPU rows/s | CUDA rows/s | speed-up | max abs diff |", "|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        speedup = r["cuda_rows_per_s"] / r["cpu_rows_per_s"] if r["cpu_rows_per_s"] else None
        lines.append(
            f"| {r['batch']} | {fmt(r['cpu_rows_per_s'], 0)} | {fmt(r['cuda_rows_per_s'], 0)} "
            f"| {fmt(speedup)} | {r['max_abs_diff']:.2e} |"
        )
    return "\n".join([*lines, ""])


def main() -> int:
    """The plain table of scripts/gpu-check.sh; 2 when CUDA is not available."""
    try:
        results = measure()
    except SystemExit as exc:
        return int(exc.code or 0)
    print(f"{'batch':>6} {'cpu rows/s':>12} {'cuda rows/s':>12} {'speed-up':>9} {'max |diff|':>11}")
    for r in results["rows"]:
        cpu_rate, cuda_rate = r["cpu_rows_per_s"], r["cuda_rows_per_s"]
        print(
            f"{r['batch']:>6} {cpu_rate:>12.0f} {cuda_rate:>12.0f} {cuda_rate / cpu_rate:>9.2f} "
            f"{r['max_abs_diff']:>11.2e}"
        )
    return 0


SECTION = Section(
    "gpu", "GPU: CPU versus CUDA on a conv net", _run, _render, _goals, default=False, duration_s=2.0
)

if __name__ == "__main__":
    sys.exit(main())
