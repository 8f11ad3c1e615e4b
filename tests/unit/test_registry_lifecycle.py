"""The serving default (what the gateway serves, passing over versions that fail its load checks), rollback
(the previous good version below it) and gc (never the pinned or served versions), library and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from registry.cli import main
from registry.errors import NotFoundError, PublishError
from registry.layout import read_pin, scan_registry
from registry.publish import pin, publish, rollback
from registry.retention import TRASH_PREFIX, gc
from registry.serving import serving_default
from registry.signing import generate_key, load_trusted_keys


def adder(directory: Path, width: int = 3) -> Path:
    """An ONNX file computing y = x + 1 on FP32[batch, width]."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "offset"], ["y"])],
        "adder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializer=[numpy_helper.from_array(np.array(1.0, dtype=np.float32), "offset")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = directory / f"adder-{width}.onnx"
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return adder(tmp_path_factory.mktemp("model"))


def registry_with(tmp_path: Path, onnx_file: Path, versions: int, toml: str | None = None) -> Path:
    root = tmp_path / "registry"
    for _ in range(versions):
        publish(root, "m", onnx_file)
    if toml is not None:
        (root / "m" / "model.toml").write_text(toml)
    return root


def corrupt(root: Path, version: int) -> None:
    with (root / "m" / str(version) / "model.onnx").open("ab") as f:
        f.write(b"\x00")


def cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_rollback_skips_a_corrupted_version(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, onnx_file: Path
) -> None:
    root = registry_with(tmp_path, onnx_file, 4)
    corrupt(root, 3)
    status, out, err = cli(capsys, "rollback", "--registry", root, "m")
    assert (status, out) == (0, "2\n")
    assert "skipped version 3: " in err
    assert "sha256" in err
    assert "default was version 4; pinned version 2" in err
    assert read_pin(root / "m") == 2
    done = rollback(root, "m")  # from the pin (2) down
    assert (done.version, done.previous, done.skipped) == (1, 2, {})


def test_rollback_with_no_intact_older_version_changes_nothing(tmp_path: Path, onnx_file: Path) -> None:
    root = registry_with(tmp_path, onnx_file, 3)
    corrupt(root, 1)
    corrupt(root, 2)
    with pytest.raises(PublishError, match=r"no intact READY version older than 3 .*2: .*sha256"):
        rollback(root, "m")
    assert read_pin(root / "m") is None


def test_rollback_starts_from_the_policys_default(tmp_path: Path, onnx_file: Path) -> None:
    root = registry_with(tmp_path, onnx_file, 4, '[versions]\npolicy = "specific"\nspecific = [2, 3]\n')
    assert rollback(root, "m").version == 2  # the default is 3, the highest served, not 4
    pin(root, "m", 4)
    assert rollback(root, "m").version == 3


@pytest.mark.parametrize(
    ("toml", "source", "skipped"),
    [
        (None, "fallback", [3]),  # latest = 1 selects 3 only: a running gateway keeps serving 2
        ("[versions]\nlatest = 2\n", "policy", [3]),
        ('[versions]\npolicy = "all"\n', "policy", [3]),
    ],
)
def test_the_serving_default_passes_over_a_corrupt_newest_version(
    tmp_path: Path, onnx_file: Path, toml: str | None, source: str, skipped: list[int]
) -> None:
    root = registry_with(tmp_path, onnx_file, 3, toml)
    assert serving_default(root, "m").version == 3
    corrupt(root, 3)
    found = serving_default(root, "m")
    assert (found.version, found.source, list(found.skipped)) == (2, source, skipped)
    assert "sha256" in found.skipped[3][0]
    if source == "policy":
        expected = "version 2 (the policy's highest version that passes its load checks; 3 fails them)"
    else:
        expected = (
            "version 2 (every version the policy selects fails its load checks (3); the gateway serves the "
            "highest intact one below them; under a 'specific' policy only a gateway that was already "
            "running does)"
        )
    assert found.describe() == expected


def test_rollback_goes_below_the_version_served_when_the_newest_is_corrupt(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, onnx_file: Path
) -> None:
    """Issue 16 item 4: with the newest version corrupt the gateway serves the one below it; rollback
    must change what is served, so it pins the version below that, and says why."""
    root = registry_with(tmp_path, onnx_file, 3)
    corrupt(root, 3)
    status, out, _ = cli(capsys, "show", "--registry", root, "m")
    doc = json.loads(out)
    assert (status, doc["default"], doc["default_source"], list(doc["failing"])) == (0, 2, "fallback", ["3"])
    assert "sha256" in doc["failing"]["3"][0]
    status, out, err = cli(capsys, "rollback", "--registry", root, "m")
    assert (status, out) == (0, "1\n")
    lines = err.splitlines()
    assert lines[0].startswith("m: version 3 is not served, it fails the load checks: ")
    assert "sha256" in lines[0]
    assert lines[1].startswith("m: the gateway serves version 2 (every version the policy selects")
    assert lines[2:] == ["m: default was version 2; pinned version 1"]
    assert read_pin(root / "m") == 1
    assert serving_default(root, "m").version == 1
    with pytest.raises(PublishError, match="no READY version older than 1"):
        rollback(root, "m")


def test_a_corrupt_pin_is_not_the_default(tmp_path: Path, onnx_file: Path) -> None:
    root = registry_with(tmp_path, onnx_file, 3)
    pin(root, "m", 2)
    assert (serving_default(root, "m").version, serving_default(root, "m").source) == (2, "pin")
    corrupt(root, 2)
    found = serving_default(root, "m")
    assert (found.version, found.source, list(found.skipped), found.pin) == (3, "policy", [2], 2)
    done = rollback(root, "m")
    assert (done.version, done.previous, list(done.skipped)) == (1, 3, [2])


def test_nothing_intact_means_no_default_and_no_rollback(tmp_path: Path, onnx_file: Path) -> None:
    root = registry_with(tmp_path, onnx_file, 2)
    corrupt(root, 1)
    corrupt(root, 2)
    found = serving_default(root, "m")
    assert (found.version, found.source, list(found.skipped)) == (None, "none", [2, 1])
    assert found.describe().startswith("no version")
    with pytest.raises(PublishError, match=r"no READY version passes its load checks.*2: .*sha256"):
        rollback(root, "m")
    assert read_pin(root / "m") is None
    (root / "empty").mkdir()
    assert (serving_default(root, "empty").version, serving_default(root, "empty").source) == (None, "none")
    with pytest.raises(NotFoundError, match="no READY version"):
        rollback(root, "empty")
    with pytest.raises(NotFoundError):
        serving_default(root, "absent")


def test_with_trusted_keys_an_unsigned_version_is_not_the_default(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, onnx_file: Path
) -> None:
    """The gateway started with --trusted-keys refuses an unsigned version; so do the registry's default,
    rollback and gc when given the same keys."""
    private, _ = generate_key(tmp_path / "keys")
    root = tmp_path / "registry"
    for _ in range(2):
        publish(root, "m", onnx_file, sign_key=private)
    publish(root, "m", onnx_file)  # 3: unsigned
    trusted = load_trusted_keys(tmp_path / "keys")
    assert serving_default(root, "m").version == 3
    found = serving_default(root, "m", trusted=trusted)
    assert (found.version, list(found.skipped)) == (2, [3])
    assert "unsigned" in found.skipped[3][0]
    status, out, _ = cli(capsys, "list", "--registry", root, "--json", "--trusted-keys", tmp_path / "keys")
    assert status == 0
    assert json.loads(out)[0]["default"] == 2
    assert list(json.loads(out)[0]["failing"]) == ["3"]
    status, out, err = cli(capsys, "rollback", "--registry", root, "m", "--trusted-keys", tmp_path / "keys")
    assert (status, out) == (0, "1\n")
    assert "default was version 2; pinned version 1" in err


def test_rollback_passes_over_a_breaking_signature_unless_allowed(tmp_path: Path, onnx_file: Path) -> None:
    """The gateway refuses a version whose signature breaks the serving one's; rollback does not pin it."""
    root = tmp_path / "registry"
    publish(root, "m", onnx_file)
    publish(root, "m", adder(tmp_path, width=4))
    publish(root, "m", onnx_file)
    done = rollback(root, "m")
    assert (done.version, done.previous, list(done.skipped)) == (1, 3, [2])
    assert "breaking signature change against the serving version 3" in done.skipped[2][0]
    (root / "m" / "pin").unlink()
    (root / "m" / "model.toml").write_text("[versions]\nallow_breaking_signature = true\n")
    assert rollback(root, "m").version == 2


def test_gc_keeps_the_version_served_below_a_corrupt_newest_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, onnx_file: Path
) -> None:
    root = registry_with(tmp_path, onnx_file, 3)
    corrupt(root, 3)
    status, out, err = cli(capsys, "gc", "--registry", root, "m", "--keep", "1")
    assert (status, out) == (0, "1\n")
    assert "kept 2 beyond the newest 1: pinned or served (serving 3, default 2)" in err
    assert scan_registry(root)["m"].versions == (2, 3)


@pytest.mark.parametrize(
    ("toml", "pinned", "keep", "removed", "protected"),
    [
        (None, None, 2, (1, 2, 3), ()),
        (None, 2, 2, (1, 3), (2,)),
        ("[versions]\nlatest = 3\n", None, 1, (1, 2), (3, 4)),
        ('[versions]\npolicy = "all"\n', None, 1, (), (1, 2, 3, 4)),
        ('[versions]\npolicy = "specific"\nspecific = [1]\n', 3, 1, (2, 4), (1, 3)),
        (None, None, 9, (), ()),
    ],
)
def test_gc_never_removes_pinned_or_served_versions(
    tmp_path: Path,
    onnx_file: Path,
    toml: str | None,
    pinned: int | None,
    keep: int,
    removed: tuple[int, ...],
    protected: tuple[int, ...],
) -> None:
    root = registry_with(tmp_path, onnx_file, 5, toml)
    if pinned is not None:
        pin(root, "m", pinned)
    dry = gc(root, "m", keep, dry_run=True)
    assert (dry.removed, dry.protected, dry.dry_run) == (removed, protected, True)
    assert scan_registry(root)["m"].versions == (1, 2, 3, 4, 5)
    result = gc(root, "m", keep)
    assert (result.removed, result.protected) == (removed, protected)
    left = tuple(v for v in (1, 2, 3, 4, 5) if v not in removed)
    assert result.kept == left
    assert scan_registry(root)["m"].versions == left
    assert sorted(p.name for p in (root / "m").iterdir() if p.name.startswith(".")) == []


def test_gc_cli_prints_what_it_removed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, onnx_file: Path
) -> None:
    root = registry_with(tmp_path, onnx_file, 4)
    pin(root, "m", 1)
    status, out, err = cli(capsys, "gc", "--registry", root, "m", "--keep", "1", "--dry-run")
    assert (status, out) == (0, "2\n3\n")
    assert "would remove 2, 3" in err
    assert "kept 1 beyond the newest 1: pinned or served" in err
    assert "dry run, nothing deleted" in err
    status, out, err = cli(capsys, "gc", "--registry", root, "m", "--keep", "1")
    assert (status, out) == (0, "2\n3\n")
    assert "removed 2, 3; kept 1, 4" in err
    assert scan_registry(root)["m"].versions == (1, 4)
    status, out, err = cli(capsys, "gc", "--registry", root, "m", "--keep", "0")
    assert (status, out) == (2, "")
    assert "--keep: must be >= 1" in err


def test_gc_clears_leftover_trash_and_refuses_a_broken_config(tmp_path: Path, onnx_file: Path) -> None:
    root = registry_with(tmp_path, onnx_file, 3)
    leftover = root / "m" / f"{TRASH_PREFIX}7-abc"
    (leftover / "sub").mkdir(parents=True)
    assert gc(root, "m", 1).removed == (1, 2)
    assert not leftover.exists()
    (root / "m" / "model.toml").write_text("[versions]\npolicy = 'typo'\n")
    with pytest.raises(PublishError, match="refusing to delete while the config is broken"):
        gc(root, "m", 1)
    (root / "m" / "model.toml").unlink()
    (root / "m" / "pin").write_text("garbage")
    with pytest.raises(PublishError, match="pin"):
        gc(root, "m", 1)
    with pytest.raises(NotFoundError):
        gc(root, "absent", 1)
