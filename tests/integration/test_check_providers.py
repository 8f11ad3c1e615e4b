"""``infergate-gateway --check-providers``: exit 1 means a version the policy selects failed to load (or a
model.toml is invalid); a version that is only not selected by the version policy is listed, exit 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from gateway.config import GatewayConfig
from gateway.server import check_providers
from registry.publish import publish
from tests.onnx_models import dtype_model


def publish_add(root: Path, model: str, *, golden_factor: float = 0.0) -> int:
    """dtype_fp32 (y = x + x) as the next version of ``model``; a golden file when ``golden_factor``."""
    source = root.parent / "add.onnx"
    onnx.save(dtype_model("FP32"), source)
    golden = None
    if golden_factor:
        golden = root.parent / "golden.npz"
        x = np.ones((2, 3), np.float32)
        np.savez(golden, **{"input:x": x, "output:y": x * golden_factor})
    return publish(root, model, source, golden=golden).version


async def run(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = await check_providers(GatewayConfig(root, sampling=False))
    return code, capsys.readouterr().out.splitlines()


async def test_versions_not_selected_are_no_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "registry"
    publish_add(root, "m")
    publish_add(root, "m")
    code, lines = await run(root, capsys)
    assert code == 0
    assert lines[0].startswith("onnxruntime offers: ")
    assert lines[1:] == [
        "m:1  UNAVAILABLE  provider=-  not selected by the version policy",
        "m:2  READY  provider=cpu",
    ]


async def test_a_selected_version_that_fails_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "registry"
    publish_add(root, "m")
    publish_add(root, "m", golden_factor=3.0)  # the model doubles: the golden check fails
    code, lines = await run(root, capsys)
    assert code == 1
    assert lines[1] == "m:1  READY  provider=cpu"  # the highest intact version below, served in 2's place
    assert lines[2].startswith("m:2  UNAVAILABLE  provider=-  ")
    assert "golden check failed" in lines[2]


async def test_an_invalid_model_toml_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "registry"
    publish_add(root, "good")
    publish_add(root, "bad")
    (root / "bad" / "model.toml").write_text("[batching]\nmax_batch_sise = 8\n")
    code, lines = await run(root, capsys)
    assert code == 1
    assert "good:1  READY  provider=cpu" in lines
    assert any(line.startswith("bad:") and "[batching].max_batch_sise: unknown key" in line for line in lines)
