"""GPU suite: runs only where onnxruntime offers CUDA (``scripts/gpu-check.sh`` runs it on a GPU host);
elsewhere every test is skipped with the reason. CUDA answers must match CPU within tolerance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from gateway.runner import Runner, RunnerOptions, available_providers
from registry.demo import build_demo
from tests.onnx_models import mlp_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        "cuda" not in available_providers(), reason="onnxruntime offers no CUDA provider here"
    ),
]

RTOL, ATOL = 1e-3, 1e-4


def _pair(path: Path) -> tuple[Runner, Runner]:
    cpu = Runner.load(path, RunnerOptions(providers=("cpu",), name="cpu"))
    cuda = Runner.load(path, RunnerOptions(providers=("cuda",), require_gpu=True, name="cuda"))
    assert cuda.provider == "cuda"
    return cpu, cuda


@pytest.mark.parametrize("rows", [1, 7, 64])
def test_cuda_matches_cpu_on_the_demo_and_benchmark_models(tmp_path: Path, rows: int) -> None:
    build_demo(tmp_path / "demo")
    onnx.save(mlp_model(features=256, hidden=1024, classes=10), tmp_path / "mlp.onnx")
    models = [
        tmp_path / "demo" / "classifier" / "2" / "model.onnx",
        tmp_path / "demo" / "regressor" / "1" / "model.onnx",
    ]
    for path in [*models, tmp_path / "mlp.onnx"]:
        cpu, cuda = _pair(path)
        try:
            session_input = onnx.load(str(path)).graph.input[0]
            width = session_input.type.tensor_type.shape.dim[1].dim_value
            x = np.random.default_rng(rows).normal(size=(rows, width)).astype(np.float32)
            name = session_input.name
            outputs = [o.name for o in onnx.load(str(path)).graph.output]
            for a, b in zip(
                cpu.run_sync(0, {name: x}, outputs), cuda.run_sync(0, {name: x}, outputs), strict=True
            ):
                if a.dtype.kind == "f":
                    np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL)
                else:
                    np.testing.assert_array_equal(b, a)
        finally:
            cpu.close()
            cuda.close()


def test_require_gpu_loads_on_cuda(tmp_path: Path) -> None:
    onnx.save(mlp_model(), tmp_path / "m.onnx")
    runner = Runner.load(tmp_path / "m.onnx", RunnerOptions(providers=("cuda", "cpu"), require_gpu=True))
    try:
        assert runner.provider == "cuda"
        assert runner.fallback_reason == ""
    finally:
        runner.close()
