"""Golden checks: loading golden.npz, comparing outputs, and the onnx reference evaluator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from registry.demo import build_demo
from registry.errors import GoldenError, NotFoundError
from registry.golden import golden_mismatches, load_golden, run_reference
from registry.layout import VersionInfo
from registry.manifest import load_manifest
from registry.signature import Signature, TensorSpec

SIGNATURE = Signature(
    (TensorSpec("x", "FP32", (-1, 3)),),
    (TensorSpec("y", "FP32", (-1, 3)), TensorSpec("label", "INT64", (-1,))),
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> list[VersionInfo]:
    return build_demo(tmp_path_factory.mktemp("golden") / "registry")


def save(path: Path, **arrays: Any) -> Path:
    np.savez(path, **{k.replace("__", ":"): v for k, v in arrays.items()})
    return path


def good(n: int = 4) -> dict[str, Any]:
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    return {"input__x": x, "output__y": x * 2, "output__label": np.arange(n, dtype=np.int64)}


def test_load_golden_splits_inputs_and_outputs(tmp_path: Path) -> None:
    arrays = good()
    inputs, outputs = load_golden(save(tmp_path / "g.npz", **arrays), SIGNATURE)
    assert list(inputs) == ["x"]
    assert list(outputs) == ["y", "label"]
    np.testing.assert_array_equal(outputs["y"], arrays["output__y"])


@pytest.mark.parametrize(
    ("drop", "fragment"),
    [
        ("input__x", "missing keys ['input:x']"),
        ("output__label", "missing keys ['output:label']"),
    ],
)
def test_load_golden_needs_every_input_and_output(tmp_path: Path, drop: str, fragment: str) -> None:
    arrays = good()
    del arrays[drop]
    path = save(tmp_path / "g.npz", **arrays)
    with pytest.raises(GoldenError, match=r"g\.npz") as caught:
        load_golden(path, SIGNATURE)
    assert fragment in str(caught.value)


def test_load_golden_refuses_bad_files(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        load_golden(tmp_path / "absent.npz", SIGNATURE)
    text = tmp_path / "text.npz"
    text.write_text("not a zip")
    with pytest.raises(GoldenError, match=r"not a readable \.npz"):
        load_golden(text, SIGNATURE)
    pickled = save(tmp_path / "p.npz", **{**good(), "output__label": np.array([1, None, 2, 3], dtype=object)})
    with pytest.raises(GoldenError, match=r"'output:label' holds Python objects.*without pickles"):
        load_golden(pickled, SIGNATURE)
    wrong = save(tmp_path / "w.npz", **{**good(), "output__y": np.zeros((4, 3), dtype=np.float64)})
    with pytest.raises(GoldenError, match="dtype float64, expected float32"):
        load_golden(wrong, SIGNATURE)
    stray = save(tmp_path / "s.npz", **good(), output__z=np.zeros(4))
    with pytest.raises(GoldenError, match="no output 'z'"):
        load_golden(stray, SIGNATURE)


F32 = np.float32
CASES: list[tuple[str, Any, Any, dict[str, float], str | None]] = [
    ("equal", np.array([1.0, 2.0], F32), np.array([1.0, 2.0], F32), {}, None),
    ("atol edge inside", np.array([1.0]), np.array([1.25]), {"rtol": 0, "atol": 0.25}, None),
    ("atol edge outside", np.array([1.0]), np.array([1.5]), {"rtol": 0, "atol": 0.25}, "max abs error 0.5"),
    ("rtol edge inside", np.array([4.0]), np.array([5.0]), {"rtol": 0.25, "atol": 0}, None),
    ("rtol uses expected", np.array([4.0]), np.array([3.0]), {"rtol": 0.25, "atol": 0}, None),
    ("rtol edge outside", np.array([4.0]), np.array([5.5]), {"rtol": 0.25, "atol": 0}, "1 of 1 elements"),
    ("defaults tight", np.array([1.0], F32), np.array([1.001], F32), {}, "rtol=0.0001, atol=1e-05"),
    ("float32 vs float64", np.array([0.1], F32), np.array([0.1]), {}, None),
    ("nan equals nan", np.array([np.nan, 1.0]), np.array([np.nan, 1.0]), {}, None),
    ("nan vs number", np.array([np.nan, 1.0]), np.array([1.0, 1.0]), {}, "1 NaN or infinite mismatches"),
    ("inf equals inf", np.array([np.inf]), np.array([np.inf]), {}, None),
    ("inf vs -inf", np.array([np.inf]), np.array([-np.inf]), {}, "no finite error"),
    ("count", np.zeros(10), np.r_[np.ones(3), np.zeros(7)], {}, "3 of 10 elements differ"),
    ("ints exact", np.array([1, 2, 3]), np.array([1, 2, 4]), {"atol": 5}, "1 of 3 elements differ"),
    ("int widths", np.array([1, 2], np.int32), np.array([1, 2], np.int64), {}, None),
    ("int error", np.array([1, 2, 3]), np.array([1, 9, 3]), {}, "max abs error 7"),
    ("bools", np.array([True, False]), np.array([True, True]), {}, "1 of 2 elements differ"),
    ("strings", np.array(["a", "b"]), np.array([b"a", b"b"]), {}, None),
    ("str vs object", np.array([b"a", b"\xc3\xa9"]), np.array(["a", "\u00e9"], dtype=object), {}, None),
    ("strings differ", np.array(["a", "b"]), np.array(["a", "c"], dtype=object), {}, "1 of 2 elements"),
    ("shape", np.zeros((2, 3)), np.zeros((3, 2)), {}, "shape [3, 2], expected [2, 3]"),
    ("kind", np.zeros(2), np.zeros(2, np.int64), {}, "dtype int64 (integer), expected float64 (float)"),
    ("bool vs int", np.array([True]), np.array([1]), {}, "(integer), expected bool (bool)"),
]


@pytest.mark.parametrize(
    ("expected", "actual", "tolerance", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_golden_mismatches_table(
    expected: Any, actual: Any, tolerance: dict[str, float], fragment: str | None
) -> None:
    problems = golden_mismatches({"out": expected}, {"out": actual}, **tolerance)
    if fragment is None:
        assert problems == []
    else:
        assert len(problems) == 1
        assert problems[0].startswith("output 'out': ")
        assert fragment in problems[0]


def test_golden_mismatches_missing_extra_and_bad_tolerance() -> None:
    expected = {"a": np.zeros(2), "b": np.zeros(2)}
    actual = {"a": np.zeros(2), "extra": np.ones(2)}
    assert golden_mismatches(expected, actual) == ["output 'b': missing from the outputs"]
    with pytest.raises(GoldenError, match="rtol"):
        golden_mismatches(expected, actual, rtol=-1.0)
    with pytest.raises(GoldenError, match="atol"):
        golden_mismatches(expected, actual, atol=float("nan"))


def test_reference_evaluator_agrees_with_the_demo_golden_outputs(demo: list[VersionInfo]) -> None:
    for info in demo:
        signature = load_manifest(info.manifest_path).signature
        inputs, expected = load_golden(info.golden_path, signature)
        actual = run_reference(info.onnx_path, inputs)
        assert list(actual) == [s.name for s in signature.outputs]
        assert golden_mismatches(expected, actual) == [], info


def test_reference_evaluator_feeds_strings(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["t"])],
        "strings",
        [helper.make_tensor_value_info("s", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("t", TensorProto.STRING, ["batch"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, tmp_path / "m.onnx")
    words = np.array([b"caf\xc3\xa9", b"x"])
    out = run_reference(tmp_path / "m.onnx", {"s": words})
    assert out["t"].tolist() == ["caf\u00e9", "x"]
    assert golden_mismatches({"t": words}, out) == []


def test_reference_evaluator_errors(demo: list[VersionInfo], tmp_path: Path) -> None:
    onnx_path = demo[0].onnx_path
    with pytest.raises(GoldenError, match=r"inputs missing \['input'\], unknown \['x'\]"):
        run_reference(onnx_path, {"x": np.zeros((1, 16), np.float32)})
    with pytest.raises(GoldenError, match="reference evaluation failed"):
        run_reference(onnx_path, {"input": np.zeros((1, 5), np.float32)})
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(onnx_path.read_bytes()[:50])
    with pytest.raises(GoldenError, match="not a readable ONNX model"):
        run_reference(truncated, {"input": np.zeros((1, 16), np.float32)})
    with pytest.raises(NotFoundError):
        run_reference(tmp_path / "absent.onnx", {})
