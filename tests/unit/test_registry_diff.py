"""diff: lineage, signature, metrics and reference profile of two versions, as text and as JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from registry.cli import main
from registry.demo import build_demo
from registry.diff import diff_versions
from registry.errors import ManifestError, NotFoundError
from registry.profile import column_stats, reference_profile
from registry.publish import publish
from registry.signature import Signature, TensorSpec


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("diff") / "registry"
    build_demo(root)
    return root


def cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_demo_classifier_json(capsys: pytest.CaptureFixture[str], demo: Path) -> None:
    status, out, err = cli(capsys, "diff", "--registry", demo, "classifier", "1", "2", "--json")
    assert (status, err) == (0, "")
    doc = json.loads(out)
    assert (doc["model"], doc["v1"], doc["v2"]) == ("classifier", 1, 2)
    fields = {f["field"]: f for f in doc["lineage"]["fields"]}
    assert (fields["rows"]["v1"], fields["rows"]["v2"], fields["rows"]["changed"]) == (3000, 12000, True)
    assert (fields["parent_version"]["v1"], fields["parent_version"]["v2"]) == (None, 1)
    assert fields["data_uri"]["v2"].endswith("train-v2.npz")
    params = {p["name"]: p for p in doc["lineage"]["params"]}
    assert (params["epochs"]["v1"], params["epochs"]["v2"], params["epochs"]["change"]) == (
        150,
        400,
        "changed",
    )
    assert params["algorithm"]["change"] == "same"
    assert doc["signature"] == {"identical": True, "changes": [], "breaking": []}
    metrics = {m["name"]: m for m in doc["metrics"]}
    assert sorted(metrics) == ["accuracy", "auc", "f1_macro", "log_loss"]
    for m in metrics.values():
        assert m["delta"] == pytest.approx(m["v2"] - m["v1"])
    ref = doc["reference"]
    assert (ref["v1"]["rows"], ref["v2"]["rows"], ref["v1"]["columns"], ref["truncated"]) == (
        2000,
        2000,
        16,
        False,
    )
    assert [f["feature"] for f in ref["features"]] == [f"input[{i}]" for i in range(16)]
    x = np.load(demo / "classifier" / "2" / "reference.npz", allow_pickle=False)["input:input"].astype(
        np.float64
    )
    first = ref["features"][0]
    assert first["v2"]["mean"] == pytest.approx(x[:, 0].mean())
    assert first["v2"]["std"] == pytest.approx(x[:, 0].std())
    assert (first["v2"]["min"], first["v2"]["max"]) == (
        pytest.approx(x[:, 0].min()),
        pytest.approx(x[:, 0].max()),
    )
    assert first["delta"] == {"mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0}  # same held-out rows


def test_demo_classifier_text(capsys: pytest.CaptureFixture[str], demo: Path) -> None:
    status, out, _ = cli(capsys, "diff", "--registry", demo, "classifier", "1", "2", "--columns", "4")
    assert status == 0
    assert out.startswith("classifier: version 1 -> version 2\n\nLineage\n")
    assert "  rows            3000 -> 12000\n" in out
    assert "  parent_version  - -> 1\n" in out
    assert "    epochs      150 -> 400\n" in out
    assert "unchanged: algorithm, lr, optimizer" in out
    assert "\nSignature: identical\n" in out
    assert "\nValidation metrics" in out
    assert "  accuracy " in out
    assert "v1: 2000 rows, 16 input columns" in out
    assert "input[3]" in out
    assert "input[4]" not in out
    assert "(showing the first 4 columns; --columns N shows more)" in out
    out.encode("ascii")  # plain ASCII


def two_input_model(path: Path, width: int, extra_output: bool) -> Path:
    """a FP32[batch, width], b INT64[batch] -> y = a (Identity) [, z = b]."""
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])]
    nodes = [helper.make_node("Identity", ["a"], ["y"])]
    if extra_output:
        outputs.append(helper.make_tensor_value_info("z", TensorProto.INT64, ["batch"]))
        nodes.append(helper.make_node("Identity", ["b"], ["z"]))
    graph = helper.make_graph(
        nodes,
        "m",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", width]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["batch"]),
        ],
        outputs,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def test_signature_changes_and_missing_reference(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    rng = np.random.default_rng(1)
    a = rng.normal(size=(50, 3)).astype(np.float32)
    a[:, 2] = np.nan
    np.savez(tmp_path / "ref.npz", **{"input:a": a, "input:b": np.arange(50)})
    publish(root, "m", two_input_model(tmp_path / "1.onnx", 3, False), reference=tmp_path / "ref.npz")
    publish(root, "m", two_input_model(tmp_path / "2.onnx", 5, True), metrics={"auc": 0.5})
    doc = diff_versions(root, "m", 1, 2)
    sig = doc["signature"]
    assert not sig["identical"]
    assert [(c["side"], c["name"], c["change"]) for c in sig["changes"]] == [
        ("input", "a", "changed"),
        ("output", "y", "changed"),
        ("output", "z", "added"),
    ]
    assert sig["breaking"] == ["input 'a': dim 1 3 -> 5", "output 'y': dim 1 3 -> 5"]
    assert doc["metrics"] == [{"name": "auc", "v1": None, "v2": 0.5, "delta": None}]
    ref = doc["reference"]
    assert ref["v2"] == {"rows": None, "columns": None, "skipped": [], "error": "no reference.npz"}
    features = {f["feature"]: f for f in ref["features"]}
    assert list(features) == ["a[0]", "a[1]", "a[2]", "b[0]"]
    assert features["a[2]"]["v1"] == {"mean": None, "std": None, "min": None, "max": None, "nonfinite": 50}
    assert features["b[0]"]["v1"]["max"] == 49.0
    assert features["a[0]"]["v2"] is None
    assert features["a[0]"]["delta"] is None
    json.dumps(doc, allow_nan=False)
    text = main(["diff", "--registry", str(root), "m", "1", "2"])
    assert text == 0


def test_diff_text_of_a_breaking_change(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = tmp_path / "registry"
    publish(root, "m", two_input_model(tmp_path / "1.onnx", 3, True))
    publish(root, "m", two_input_model(tmp_path / "2.onnx", 3, False))
    status, out, _ = cli(capsys, "diff", "--registry", root, "m", "1", "2")
    assert status == 0
    assert (
        "Signature: 1 change(s), breaking\n  - output 'z': INT64 [-1]\n  breaking: output 'z' removed\n"
        in out
    )
    assert "Validation metrics: none recorded" in out
    assert "v1: no reference.npz" in out


def test_diff_errors(capsys: pytest.CaptureFixture[str], demo: Path) -> None:
    with pytest.raises(NotFoundError, match="version 7"):
        diff_versions(demo, "classifier", 1, 7)
    status, out, err = cli(capsys, "diff", "--registry", demo, "classifier", "1", "2", "--columns", "0")
    assert (status, out) == (2, "")
    assert "max_columns" in err
    status, _, err = cli(capsys, "diff", "--registry", demo, "classifier", "1", "x")
    assert status == 2
    assert "invalid version 'x'" in err


def test_profile_caps_columns_and_refuses_pickles(tmp_path: Path) -> None:
    signature = Signature(
        (TensorSpec("wide", "FP64", (-1, 40)), TensorSpec("s", "BYTES", (-1,))),
        (TensorSpec("y", "FP32", (-1,)),),
    )
    wide = np.arange(400, dtype=np.float64).reshape(10, 40)
    np.savez(tmp_path / "r.npz", **{"input:wide": wide, "input:s": np.array([b"x"] * 10)})
    profile = reference_profile(tmp_path / "r.npz", signature, max_columns=32)
    assert (profile.rows, profile.total_columns, len(profile.columns), profile.truncated) == (
        10,
        40,
        32,
        True,
    )
    assert profile.skipped == ("s",)
    assert profile.columns["wide[31]"].mean == pytest.approx(wide[:, 31].mean())
    pickled: dict[str, Any] = {"input:wide": np.array([None] * 10, dtype=object)}
    np.savez(tmp_path / "p.npz", **pickled)
    with pytest.raises(ManifestError, match="without pickles"):
        reference_profile(tmp_path / "p.npz", signature)


def test_column_stats_match_numpy_on_finite_values() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 6))
    x[rng.random(x.shape) < 0.1] = np.nan
    x[0, 1] = np.inf
    x[:, 5] = np.nan
    stats = column_stats(x)
    for j, s in enumerate(stats[:5]):
        finite = x[:, j][np.isfinite(x[:, j])]
        assert s.nonfinite == 200 - finite.size
        assert (s.mean, s.std) == (pytest.approx(finite.mean()), pytest.approx(finite.std()))
        assert (s.min, s.max) == (finite.min(), finite.max())
    assert np.isnan(stats[5].mean)
    assert stats[5].nonfinite == 200


def test_diff_of_a_copy_shows_no_changes(demo: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(demo, tmp_path / "registry"))
    publish(
        root,
        "regressor",
        root / "regressor" / "1" / "model.onnx",
        reference=root / "regressor" / "1" / "reference.npz",
    )
    doc = diff_versions(root, "regressor", 1, 2)
    assert doc["signature"]["identical"]
    assert all(
        f["delta"] == {"mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0} for f in doc["reference"]["features"]
    )
    assert [f["feature"] for f in doc["reference"]["features"]] == [f"input[{i}]" for i in range(8)]
