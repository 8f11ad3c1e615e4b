"""Safety of the registry directory: model names never escape it, and array files never load pickles."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import registry
from registry.cli import main
from registry.diff import diff_versions
from registry.errors import NotFoundError, PublishError, RegistryError
from registry.layout import check_model_name, scan_registry, version_info
from registry.publish import pin, publish, rollback, unpin
from registry.retention import gc
from registry.verify import verify_model

BAD_NAMES = [
    "../x",
    "..",
    ".",
    "",
    ".x",
    ".hidden",
    "a/b",
    "x/../y",
    "/abs",
    "a\\b",
    "_data",
    "-x",
    "a b",
    "x\n",
    "caf\u00e9",
    "a" * 129,
]
GOOD_NAMES = ["m", "Model-1.v2_final", "a..b", "9", "a" * 128]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A registry with model m (version 1); beside it, tmp_path/x/1, which "../x" must never reach."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "id",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, tmp_path / "id.onnx")
    registry_dir = tmp_path / "registry"
    publish(registry_dir, "m", tmp_path / "id.onnx")
    publish(tmp_path, "x", tmp_path / "id.onnx")  # tmp_path/x/1: what "../x" would point at
    return registry_dir


def snapshot(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(NotFoundError, match="is not a valid model name"):
        check_model_name(name)


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_names_are_accepted(name: str) -> None:
    assert check_model_name(name) == name


COMMANDS: list[list[str]] = [
    ["show", "{name}"],
    ["show", "{name}", "1"],
    ["pin", "{name}", "1"],
    ["unpin", "{name}"],
    ["rollback", "{name}"],
    ["verify", "{name}"],
    ["verify", "{name}", "1"],
    ["diff", "{name}", "1", "1"],
    ["gc", "{name}", "--keep", "1"],
    ["publish", "--model", "{name}", "--onnx", "{onnx}"],
]


@pytest.mark.parametrize("name", ["../x", "..", ".x", "a/b", "/abs", "_data"])
@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c[:2]) for c in COMMANDS])
def test_every_cli_command_refuses_traversal_names(
    capsys: pytest.CaptureFixture[str], root: Path, name: str, argv: list[str]
) -> None:
    outside = root.parent
    before = snapshot(outside)
    onnx_path = str(outside / "id.onnx")
    args = [a.format(name=name, onnx=onnx_path) for a in argv]
    status = main([args[0], "--registry", str(root), *args[1:]])
    out, err = capsys.readouterr()
    assert (status, out) == (2, "")
    assert "is not a valid model name" in err
    assert snapshot(outside) == before


LIBRARY: list[Callable[[Path, str], Any]] = [
    lambda root, name: version_info(root, name, 1),
    lambda root, name: pin(root, name, 1),
    lambda root, name: unpin(root, name),
    lambda root, name: rollback(root, name),
    lambda root, name: verify_model(root, name),
    lambda root, name: verify_model(root, name, 1),
    lambda root, name: diff_versions(root, name, 1, 1),
    lambda root, name: gc(root, name, 1),
]


@pytest.mark.parametrize("name", ["../x", "..", ".x", "a/b"])
@pytest.mark.parametrize("call", LIBRARY)
def test_every_library_entry_point_refuses_traversal_names(
    root: Path, name: str, call: Callable[[Path, str], Any]
) -> None:
    before = snapshot(root.parent)
    with pytest.raises(NotFoundError, match="is not a valid model name"):
        call(root, name)
    assert snapshot(root.parent) == before


def test_publish_refuses_traversal_names(root: Path) -> None:
    for name in ("../x", ".x", "a/b"):
        with pytest.raises(PublishError, match="is not a valid model name"):
            publish(root, name, root.parent / "id.onnx")
    assert sorted(scan_registry(root)) == ["m"]


def test_the_scan_sees_only_valid_names(root: Path) -> None:
    for hidden in (".x", "_data", "-x"):
        (root / hidden / "1").mkdir(parents=True)
        (root / hidden / "1" / "READY").touch()
    assert sorted(scan_registry(root)) == ["m"]


def test_every_np_load_in_the_registry_refuses_pickles() -> None:
    """Source check: each ``np.load``/``numpy.load`` call in registry/ passes ``allow_pickle=False``."""
    package = Path(registry.__file__).parent
    calls = 0
    for source in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
            ):
                base = node.func.value
                if isinstance(base, ast.Name) and base.id in ("np", "numpy"):
                    calls += 1
                    flags = {k.arg: k.value for k in node.keywords}
                    value = flags.get("allow_pickle")
                    assert isinstance(value, ast.Constant), f"{source.name}:{node.lineno}"
                    assert value.value is False, f"{source.name}:{node.lineno}"
    assert calls >= 1


def test_object_arrays_are_refused_with_a_clear_message(root: Path) -> None:
    reference = root.parent / "pickled.npz"
    np.savez(reference, **{"input:x": np.array([[1, None]] * 3, dtype=object)})
    with pytest.raises(RegistryError) as caught:
        publish(root, "m", root.parent / "id.onnx", reference=reference)
    message = str(caught.value)
    assert "pickled.npz" in message
    assert "'input:x' holds Python objects, which cannot be loaded without pickles" in message
