"""Publishing: manifests, reference validation, atomicity and concurrency; pin, unpin, rollback."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from registry.errors import NotFoundError, PublishError, RegistryError, SignatureError
from registry.layout import READY, VersionInfo, read_pin, scan_registry
from registry.manifest import load_manifest, sha256_file
from registry.publish import pin, publish, rollback, unpin
from registry.signature import read_signature
from registry.verify import verify_model


def write_model(path: Path, offset: float = 1.0, features: int = 3) -> Path:
    """y FP32[batch, features] = x FP32[batch, features] + offset; flags BOOL[batch] = y > 0 (per row max)."""
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["x", "offset"], ["y"]),
            helper.make_node("ReduceMax", ["y"], ["row_max"], axes=[1], keepdims=0),
            helper.make_node("Greater", ["row_max", "zero"], ["flags"]),
        ],
        "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", features]),
            helper.make_tensor_value_info("flags", TensorProto.BOOL, ["batch"]),
        ],
        initializer=[
            numpy_helper.from_array(np.array(offset, dtype=np.float32), "offset"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    return write_model(tmp_path / "src.onnx")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "registry"


def npz(path: Path, **arrays: np.ndarray) -> Path:
    renamed: dict[str, Any] = {k.replace("__", ":"): v for k, v in arrays.items()}
    np.savez(path, **renamed)
    return path


def rows(n: int = 5, features: int = 3) -> dict[str, np.ndarray]:
    x = np.arange(n * features, dtype=np.float32).reshape(n, features)
    return {"input__x": x, "output__y": x + 1, "output__flags": np.ones(n, dtype=bool)}


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob("*/.tmp-*"))


def test_publish_writes_a_complete_ready_version(root: Path, onnx_file: Path, tmp_path: Path) -> None:
    reference = npz(tmp_path / "ref.npz", **rows(50))
    golden = npz(tmp_path / "golden.npz", **rows(2))
    train = npz(tmp_path / "train.npz", x=np.zeros((123, 3)), y=np.zeros(123))  # x: the model's input
    info = publish(
        root,
        "adder",
        onnx_file,
        reference=reference,
        golden=golden,
        train_data=train,
        params={"lr": 0.1},
        metrics={"rmse": 0.5},
        notes="first",
    )
    assert (info.model, info.version, info.path) == ("adder", 1, root / "adder" / "1")
    assert sorted(p.name for p in info.path.iterdir()) == sorted(
        [READY, "model.onnx", "manifest.json", "reference.npz", "golden.npz", "training.npz"]
    )
    assert info.onnx_path.read_bytes() == onnx_file.read_bytes()
    manifest = load_manifest(info.manifest_path)
    assert manifest.model_sha256 == sha256_file(onnx_file)
    assert manifest.signature == read_signature(onnx_file)
    assert manifest.artifacts == {
        "reference.npz": sha256_file(reference),
        "golden.npz": sha256_file(golden),
        "training.npz": sha256_file(info.training_path),
    }
    assert manifest.training.data_uri == train.resolve().as_uri()
    assert manifest.training.data_sha256 == sha256_file(train)
    assert manifest.training.rows == 123
    assert manifest.training.params == {"lr": 0.1}
    assert manifest.validation.metrics == {"rmse": 0.5}
    assert (manifest.parent_version, manifest.notes) == (None, "first")
    assert scan_registry(root)["adder"].versions == (1,)
    assert leftovers(root) == []


def test_versions_count_up_and_parent_defaults_to_the_latest(root: Path, onnx_file: Path) -> None:
    assert [publish(root, "m", onnx_file).version for _ in range(3)] == [1, 2, 3]
    assert [load_manifest(root / "m" / str(v) / "manifest.json").parent_version for v in (1, 2, 3)] == [
        None,
        1,
        2,
    ]
    four = publish(root, "m", onnx_file, parent_version=1)
    assert load_manifest(four.manifest_path).parent_version == 1
    with pytest.raises(PublishError, match="parent_version 9"):
        publish(root, "m", onnx_file, parent_version=9)


@pytest.mark.parametrize(("suffix", "expected"), [(".npy", 17), (".npz", 17), (".csv", None)])
def test_training_data_rows(
    root: Path, onnx_file: Path, tmp_path: Path, suffix: str, expected: int | None
) -> None:
    data = tmp_path / f"train{suffix}"
    if suffix == ".npy":
        np.save(data, np.zeros((17, 4)))
    elif suffix == ".npz":
        np.savez(data, a=np.zeros((17, 4)), b=np.zeros(17))
    else:
        data.write_text("a,b\n1,2\n")
    info = publish(root, "m", onnx_file, train_data=data)
    assert load_manifest(info.manifest_path).training.rows == expected


def stored_training(info: VersionInfo) -> dict[str, np.ndarray]:
    with np.load(info.training_path, allow_pickle=False) as stored:
        return {key: stored[key] for key in stored.files}


def test_training_inputs_are_subsampled_into_training_npz(
    root: Path, onnx_file: Path, tmp_path: Path
) -> None:
    x = np.arange(25_000 * 3, dtype=np.float32).reshape(25_000, 3)
    train = npz(tmp_path / "train.npz", input__x=x, label=np.zeros(25_000, dtype=np.int64))
    info = publish(root, "m", onnx_file, train_data=train)
    stored = stored_training(info)
    assert list(stored) == ["input:x"]  # inputs only: the labels stay in the training file
    keep = np.sort(np.random.default_rng(0).choice(25_000, 20_000, replace=False))
    assert np.array_equal(stored["input:x"], x[keep])  # deterministic, in the original order
    manifest = load_manifest(info.manifest_path)
    assert manifest.artifacts == {"training.npz": sha256_file(info.training_path)}
    assert manifest.training.rows == 25_000  # lineage describes the whole file
    assert np.array_equal(
        stored_training(publish(root, "m", onnx_file, train_data=train))["input:x"], x[keep]
    )
    assert verify_model(root, "m", full=True) == {1: [], 2: []}
    with info.training_path.open("ab") as f:
        f.write(b"junk")
    assert "training.npz: sha256" in verify_model(root, "m", 1)[1][0]


def test_bare_input_names_are_taken_and_floats_cast_to_the_input_dtype(
    root: Path, onnx_file: Path, tmp_path: Path
) -> None:
    x = np.random.default_rng(1).normal(size=(40, 3))  # float64 for an FP32 input
    info = publish(root, "m", onnx_file, train_data=npz(tmp_path / "t.npz", x=x, y=np.ones(40)))
    stored = stored_training(info)["input:x"]
    assert stored.dtype == np.float32
    assert np.array_equal(stored, x.astype(np.float32))


@pytest.mark.parametrize("suffix", [".npz", ".npy"])
def test_training_files_without_the_inputs_store_no_profile(
    root: Path, onnx_file: Path, tmp_path: Path, suffix: str
) -> None:
    train = tmp_path / f"t{suffix}"
    if suffix == ".npz":
        np.savez(train, features=np.zeros((5, 3)), y=np.zeros(5))  # no model input in it: lineage only
    else:
        np.save(train, np.zeros((5, 3), np.float32))
    info = publish(root, "m", onnx_file, train_data=train)
    assert not info.training_path.exists()
    assert load_manifest(info.manifest_path).artifacts == {}
    assert load_manifest(info.manifest_path).training.rows == 5


@pytest.mark.parametrize(
    ("arrays", "fragment"),
    [
        ({"input__x": np.zeros((5, 4), np.float32)}, "key 'input:x': shape [5, 4], expected rows of [-1, 3]"),
        ({"input__x": np.zeros((5, 3), np.float32), "input__z": np.zeros((5, 3))}, "has no input 'z'"),
        ({"input__x": np.array([["a", "b", "c"]] * 5)}, "key 'input:x': dtype <U1, expected float32"),
        ({"input__x": np.zeros((5, 3), np.float32), "input__y": np.zeros((5, 3))}, "has no input 'y'"),
        ({"x": np.zeros(5), "y": np.zeros(5)}, "key 'input:x': shape [5], expected rows of [-1, 3]"),
    ],
)
def test_bad_training_inputs_are_refused_with_the_key(
    root: Path, onnx_file: Path, tmp_path: Path, arrays: dict[str, np.ndarray], fragment: str
) -> None:
    with pytest.raises(PublishError, match=r"t\.npz: training inputs") as caught:
        publish(root, "m", onnx_file, train_data=npz(tmp_path / "t.npz", **arrays))
    assert fragment in str(caught.value)
    assert not (root / "m" / "1").exists()
    assert leftovers(root) == []


def test_a_crashed_publish_is_invisible_and_skipped(root: Path, onnx_file: Path) -> None:
    first = publish(root, "m", onnx_file)
    crashed = root / "m" / ".tmp-deadbeef"
    crashed.mkdir()
    (crashed / READY).write_bytes(b"")  # even a complete temp dir is not a version
    (root / "m" / "2").mkdir()  # a reserved number whose rename never happened
    (root / "m" / "3").mkdir()
    (root / "m" / "3" / "model.onnx").write_bytes(b"half written")
    assert scan_registry(root)["m"].versions == (first.version,)
    assert publish(root, "m", onnx_file).version == 4  # numbers are never reused
    assert scan_registry(root)["m"].versions == (1, 4)


def test_concurrent_publishes_get_distinct_versions(root: Path, tmp_path: Path) -> None:
    sources = [write_model(tmp_path / f"m{i}.onnx", offset=float(i)) for i in range(8)]
    barrier = threading.Barrier(len(sources))
    results: dict[Path, list[int]] = {}
    errors: list[BaseException] = []

    def worker(source: Path) -> None:
        try:
            barrier.wait()
            results[source] = [publish(root, "m", source).version for _ in range(3)]
        except BaseException as exc:  # surfaced by the assertions below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    versions = sorted(v for vs in results.values() for v in vs)
    assert versions == list(range(1, 25))
    assert scan_registry(root)["m"].versions == tuple(versions)
    for source, published in results.items():
        for version in published:  # each version holds the bytes of the publisher that got its number
            assert (root / "m" / str(version) / "model.onnx").read_bytes() == source.read_bytes()
    assert leftovers(root) == []


ReferenceCase = Callable[[], dict[str, np.ndarray]]


@pytest.mark.parametrize(
    ("arrays", "fragment"),
    [
        (lambda: rows() | {"x": np.zeros((5, 3), np.float32)}, "key 'x': expected input:<tensor>"),
        (lambda: rows() | {"input__z": np.zeros((5, 3), np.float32)}, "no input 'z'"),
        (lambda: rows() | {"input__x": np.zeros((5, 3))}, "dtype float64, expected float32"),
        (lambda: rows() | {"input__x": np.zeros((5, 4), np.float32)}, "shape [5, 4]"),
        (lambda: rows() | {"input__x": np.zeros(5, np.float32)}, "shape [5]"),
        (lambda: rows() | {"output__flags": np.ones(4, bool)}, "disagree on the number of rows"),
        (lambda: {k: v for k, v in rows().items() if k != "input__x"}, "missing keys ['input:x']"),
        (lambda: {k: v[:0] for k, v in rows().items()}, "no rows"),
    ],
)
def test_bad_reference_arrays_are_refused(
    root: Path, onnx_file: Path, tmp_path: Path, arrays: ReferenceCase, fragment: str
) -> None:
    reference = npz(tmp_path / "ref.npz", **arrays())
    with pytest.raises(PublishError, match=r"ref\.npz") as caught:
        publish(root, "m", onnx_file, reference=reference)
    assert fragment in str(caught.value)
    assert not (root / "m" / "1").exists()
    assert leftovers(root) == []


def test_reference_outputs_are_optional_but_golden_needs_them(
    root: Path, onnx_file: Path, tmp_path: Path
) -> None:
    inputs_only = npz(tmp_path / "in.npz", input__x=rows()["input__x"])
    assert publish(root, "m", onnx_file, reference=inputs_only).version == 1
    with pytest.raises(PublishError, match=r"missing keys \['output:y', 'output:flags'\]"):
        publish(root, "m", onnx_file, golden=inputs_only)


def test_pickles_and_non_npz_files_are_refused(root: Path, onnx_file: Path, tmp_path: Path) -> None:
    pickled = npz(tmp_path / "pickled.npz", input__x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(PublishError, match="without pickles"):
        publish(root, "m", onnx_file, reference=pickled)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(PublishError, match=r"text\.npz"):
        publish(root, "m", onnx_file, golden=text)


def test_bad_inputs_are_refused_before_anything_is_written(
    root: Path, onnx_file: Path, tmp_path: Path
) -> None:
    with pytest.raises(PublishError, match="not a valid model name"):
        publish(root, "../escape", onnx_file)
    with pytest.raises(NotFoundError):
        publish(root, "m", tmp_path / "absent.onnx")
    with pytest.raises(NotFoundError):
        publish(root, "m", onnx_file, train_data=tmp_path / "absent.npz")
    with pytest.raises(RegistryError, match=r"validation\.metrics\.auc"):
        publish(root, "m", onnx_file, metrics={"auc": float("inf")})
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\xff" * 8)
    with pytest.raises(SignatureError):
        publish(root, "m", junk)
    assert not root.exists() or list(root.glob("*/*")) == []


def test_pin_unpin(root: Path, onnx_file: Path) -> None:
    for _ in range(3):
        publish(root, "m", onnx_file)
    assert pin(root, "m", 2).version == 2
    assert (root / "m" / "pin").read_text() == "2\n"
    assert pin(root, "m", 1).version == 1  # replaces
    assert scan_registry(root)["m"].pin == 1
    assert [p.name for p in (root / "m").iterdir() if p.name.startswith(".")] == []
    with pytest.raises(NotFoundError):
        pin(root, "m", 4)
    with pytest.raises(NotFoundError):
        pin(root, "other", 1)
    assert unpin(root, "m") == 1
    assert read_pin(root / "m") is None
    assert unpin(root, "m") is None
    (root / "m" / "pin").write_text("garbage")
    assert unpin(root, "m") is None  # a corrupt pin can still be removed
    assert not (root / "m" / "pin").exists()
    with pytest.raises(NotFoundError):
        unpin(root, "other")


def test_rollback_walks_down_ready_versions(root: Path, onnx_file: Path) -> None:
    (root / "empty").mkdir(parents=True)
    with pytest.raises(NotFoundError, match="no READY version"):
        rollback(root, "empty")
    for _ in range(3):
        publish(root, "m", onnx_file)
    (root / "m" / "2" / READY).unlink()  # version 2 withdrawn: skipped
    assert rollback(root, "m").version == 1
    assert read_pin(root / "m") == 1
    with pytest.raises(PublishError, match="older than 1"):
        rollback(root, "m")
    unpin(root, "m")
    (root / "m" / "model.toml").write_text('[versions]\npolicy = "specific"\nspecific = [1]\n')
    with pytest.raises(PublishError):  # the default is already the oldest
        rollback(root, "m")
    with pytest.raises(NotFoundError):
        rollback(root, "absent")


def test_manifest_json_is_sorted_and_indented(root: Path, onnx_file: Path) -> None:
    info = publish(root, "m", onnx_file, params={"b": 1, "a": 2})
    text = info.manifest_path.read_text()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"


def test_verify_reports_damage_per_version(root: Path, onnx_file: Path, tmp_path: Path) -> None:
    publish(root, "m", onnx_file)
    two = publish(root, "m", onnx_file)
    assert verify_model(root, "m") == {1: [], 2: []}
    shutil.copy(write_model(tmp_path / "wider.onnx", features=5), two.onnx_path)
    problems = verify_model(root, "m", 2)[2]
    assert len(problems) == 2
    assert "model.onnx: sha256" in problems[0]
    assert "signature differs" in problems[1]
    two.manifest_path.unlink()
    assert verify_model(root, "m")[2] == [f"{two.manifest_path}: no such manifest"]
    with pytest.raises(NotFoundError):
        verify_model(root, "absent")
    with pytest.raises(NotFoundError):
        verify_model(root, "m", 3)
