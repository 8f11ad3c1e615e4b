"""verify: damage after READY (hashes, truncation, missing files) and the golden check, library and CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from registry.cli import main
from registry.demo import build_demo
from registry.layout import VersionInfo
from registry.manifest import load_manifest
from registry.publish import publish
from registry.verify import golden_problems, verify_model, verify_version


def adder(path: Path, offset: float) -> Path:
    """y FP32[batch, 3] = x + offset."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "offset"], ["y"])],
        "adder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(np.array(offset, dtype=np.float32), "offset")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def golden(path: Path, offset: float) -> Path:
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    np.savez(path, **{"input:x": x, "output:y": x + np.float32(offset)})
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "registry"


@pytest.fixture
def published(root: Path, tmp_path: Path) -> VersionInfo:
    """m/1: adds 1.0, with a golden file that agrees."""
    return publish(root, "m", adder(tmp_path / "a.onnx", 1.0), golden=golden(tmp_path / "g.npz", 1.0))


def test_an_intact_version_passes_the_full_check(published: VersionInfo) -> None:
    assert verify_version(published, full=True) == []
    assert verify_model(published.path.parent.parent, "m", full=True) == {1: []}


def test_a_changed_model_after_ready_is_a_sha256_mismatch(published: VersionInfo, tmp_path: Path) -> None:
    shutil.copy(adder(tmp_path / "b.onnx", 2.0), published.onnx_path)  # same signature, other weights
    problems = verify_version(published, full=True)
    assert len(problems) == 1
    assert "model.onnx: sha256" in problems[0]
    assert "differs from the manifest's" in problems[0]


def test_a_truncated_model_is_refused_with_the_reason(published: VersionInfo) -> None:
    data = published.onnx_path.read_bytes()
    published.onnx_path.write_bytes(data[: len(data) // 2])
    problems = verify_version(published)
    assert "model.onnx: sha256" in problems[0]
    assert any("not a readable ONNX model" in p for p in problems)


def test_missing_files_are_named(published: VersionInfo) -> None:
    published.golden_path.unlink()
    assert verify_version(published) == [f"{published.golden_path}: no such file"]
    published.manifest_path.unlink()
    assert verify_version(published, full=True) == [f"{published.manifest_path}: no such manifest"]
    published.onnx_path.unlink()
    assert verify_version(published) == [f"{published.manifest_path}: no such manifest"]


def test_a_golden_mismatch_fails_the_full_check_only(root: Path, tmp_path: Path) -> None:
    info = publish(root, "m", adder(tmp_path / "a.onnx", 1.0), golden=golden(tmp_path / "g.npz", 1.5))
    assert verify_version(info) == []  # hashes and signature are fine: the load-time check passes
    problems = verify_version(info, full=True)
    assert len(problems) == 1
    assert problems[0].startswith(f"{info.golden_path}: golden check failed: output 'y': 12 of 12 elements")
    assert "max abs error 0.5" in problems[0]
    assert golden_problems(info, load_manifest(info.manifest_path)) == problems


def test_an_unrecorded_golden_file_is_reported(root: Path, tmp_path: Path) -> None:
    info = publish(root, "m", adder(tmp_path / "a.onnx", 1.0))
    shutil.copy(golden(tmp_path / "g.npz", 9.0), info.golden_path)
    assert verify_version(info) == []
    assert verify_version(info, full=True) == [
        f"{info.golden_path}: not recorded in the manifest (added after READY?)"
    ]


def test_the_golden_check_is_skipped_when_the_files_are_damaged(published: VersionInfo) -> None:
    with published.golden_path.open("ab") as f:
        f.write(b"junk")
    problems = verify_version(published, full=True)
    assert len(problems) == 1
    assert "golden.npz: sha256" in problems[0]


def test_cli_verify_reports_each_version_and_exits_1(
    capsys: pytest.CaptureFixture[str], root: Path, tmp_path: Path
) -> None:
    demo = tmp_path / "demo"
    build_demo(demo)
    assert main(["verify", "--registry", str(demo), "classifier"]) == 0
    assert capsys.readouterr().out == "classifier/1: ok\nclassifier/2: ok\n"
    info = publish(root, "m", adder(tmp_path / "a.onnx", 1.0), golden=golden(tmp_path / "g.npz", 3.0))
    publish(root, "m", adder(tmp_path / "b.onnx", 1.0), golden=golden(tmp_path / "h.npz", 1.0))
    assert main(["verify", "--registry", str(root), "m"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"m/1: {info.golden_path}: golden check failed: output 'y'")
    assert out[1] == "m/2: ok"
    assert main(["verify", "--registry", str(root), "m", "2"]) == 0
    assert capsys.readouterr().out == "m/2: ok\n"
    (root / "empty").mkdir()
    assert main(["verify", "--registry", str(root), "empty"]) == 0
    assert "no READY version" in capsys.readouterr().err
