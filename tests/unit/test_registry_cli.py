"""infergate-registry: every subcommand through main([...]), outputs and exit statuses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import registry.__main__
from registry.cli import main
from registry.demo import build_demo
from registry.layout import read_pin, scan_registry
from registry.manifest import load_manifest


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "registry"
    build_demo(root)
    return root


@pytest.fixture
def reg(built: Path, tmp_path: Path) -> Path:
    """A private copy of the demo registry, so each test may change it."""
    return Path(shutil.copytree(built, tmp_path / "registry"))


def call(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_entry_point_is_the_cli_main() -> None:
    assert registry.__main__.main is main


def test_demo(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, out, _ = call(capsys, "demo", tmp_path / "d")
    assert status == 0
    assert [line.split()[:2] for line in out.splitlines()] == [
        ["classifier", "1"],
        ["classifier", "2"],
        ["regressor", "1"],
    ]
    status, _, err = call(capsys, "demo", tmp_path / "d")
    assert status == 2
    assert "already exists" in err


def test_publish_prints_the_version_alone(
    capsys: pytest.CaptureFixture[str], reg: Path, tmp_path: Path
) -> None:
    source = reg / "classifier" / "2"
    train = tmp_path / "train.npz"
    shutil.copy(reg / "_data" / "classifier" / "train-v2.npz", train)
    status, out, err = call(
        capsys,
        "publish", "--registry", reg, "--model", "classifier", "--onnx", source / "model.onnx",
        "--reference", source / "reference.npz", "--golden", source / "golden.npz", "--train-data", train,
        "--params", '{"lr": 0.1}', "--metrics", '{"accuracy": 0.9}', "--notes", "from the CLI",
    )  # fmt: skip
    assert (status, out, err) == (0, "3\n", "")
    manifest = load_manifest(reg / "classifier" / "3" / "manifest.json")
    assert manifest.training.params == {"lr": 0.1}
    assert manifest.validation.metrics == {"accuracy": 0.9}
    assert (manifest.notes, manifest.parent_version, manifest.training.rows) == ("from the CLI", 2, 12000)
    status, out, _ = call(
        capsys,
        "publish",
        "--registry",
        reg,
        "--model",
        "fresh",
        "--onnx",
        source / "model.onnx",
        "--parent-version",
        "1",
    )
    assert status == 2  # fresh has no version 1 to descend from
    status, out, _ = call(
        capsys, "publish", "--registry", reg, "--model", "fresh", "--onnx", source / "model.onnx"
    )
    assert (status, out) == (0, "1\n")


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--params", "{bad"], "--params: invalid JSON"),
        (["--params", "[1]"], "--params: expected a JSON object"),
        (["--metrics", '{"auc": "high"}'], "validation.metrics.auc"),
        (["--reference", "/nonexistent.npz"], "no such file"),
    ],
)
def test_publish_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], reg: Path, extra: list[str], fragment: str
) -> None:
    onnx_path = reg / "classifier" / "1" / "model.onnx"
    status, out, err = call(
        capsys, "publish", "--registry", reg, "--model", "classifier", "--onnx", onnx_path, *extra
    )
    assert (status, out) == (2, "")
    assert err.startswith("infergate-registry: error: ")
    assert fragment in err
    assert err.count("\n") == 1
    assert scan_registry(reg)["classifier"].versions == (1, 2)


def test_list_table_and_json(capsys: pytest.CaptureFixture[str], reg: Path) -> None:
    (reg / "regressor" / "model.toml").write_text("[batching]\nmax_batch_sise = 1\n")
    status, out, _ = call(capsys, "list", "--registry", reg)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["MODEL", "VERSIONS", "SERVING", "PIN", "DEFAULT", "CONFIG"]
    assert lines[1].split() == ["classifier", "1,2", "1,2", "-", "2", "ok"]
    assert lines[2].split()[:6] == ["regressor", "1", "1", "-", "1", "error:"]
    assert "max_batch_sise" in lines[2]
    status, out, _ = call(capsys, "list", "--registry", reg, "--json")
    rows = json.loads(out)
    assert rows[0] == {
        "model": "classifier",
        "versions": [1, 2],
        "serving": [1, 2],
        "pin": None,
        "default": 2,
        "default_source": "policy",
        "failing": {},
        "config_error": None,
    }


def test_show_model_and_version(capsys: pytest.CaptureFixture[str], reg: Path) -> None:
    status, out, _ = call(capsys, "show", "--registry", reg, "classifier")
    doc = json.loads(out)
    assert status == 0
    assert (doc["model"], doc["default"], doc["serving"], doc["pin"]) == ("classifier", 2, [1, 2], None)
    assert [v["version"] for v in doc["versions"]] == [1, 2]
    assert [v["parent_version"] for v in doc["versions"]] == [None, 1]
    assert set(doc["versions"][0]["metrics"]) == {"accuracy", "f1_macro", "log_loss", "auc"}
    status, out, _ = call(capsys, "show", "--registry", reg, "classifier", "2")
    doc = json.loads(out)
    assert (doc["version"], doc["ancestors"]) == (2, [1])
    assert doc["manifest"] == load_manifest(reg / "classifier" / "2" / "manifest.json").to_dict()
    (reg / "classifier" / "1" / "manifest.json").write_text("{broken")
    status, out, _ = call(capsys, "show", "--registry", reg, "classifier")
    assert "error" in json.loads(out)["versions"][0]
    for argv in (["nope"], ["classifier", "9"]):
        status, out, err = call(capsys, "show", "--registry", reg, *argv)
        assert (status, out) == (2, "")
        assert "not found" in err


def test_pin_unpin_rollback(capsys: pytest.CaptureFixture[str], reg: Path) -> None:
    status, out, _ = call(capsys, "pin", "--registry", reg, "classifier", "1")
    assert (status, out) == (0, "classifier: pinned to version 1\n")
    assert read_pin(reg / "classifier") == 1
    status, _, err = call(capsys, "pin", "--registry", reg, "classifier", "5")
    assert status == 2
    assert "version 5" in err
    status, out, _ = call(capsys, "unpin", "--registry", reg, "classifier")
    assert (status, out) == (0, "classifier: unpinned (was 1)\n")
    status, out, _ = call(capsys, "rollback", "--registry", reg, "classifier")
    assert (status, out) == (0, "1\n")
    assert read_pin(reg / "classifier") == 1
    status, _, err = call(capsys, "rollback", "--registry", reg, "classifier")
    assert status == 2
    assert "no READY version older than 1" in err


def test_verify_detects_tampering(capsys: pytest.CaptureFixture[str], reg: Path) -> None:
    status, out, _ = call(capsys, "verify", "--registry", reg, "classifier")
    assert (status, out) == (0, "classifier/1: ok\nclassifier/2: ok\n")
    with (reg / "classifier" / "2" / "reference.npz").open("ab") as f:
        f.write(b"tampered")
    status, out, _ = call(capsys, "verify", "--registry", reg, "classifier", "2")
    assert status == 1
    assert out.startswith("classifier/2: ")
    assert "reference.npz: sha256" in out


@pytest.mark.parametrize(
    "argv",
    [[], ["frobnicate"], ["list"], ["pin", "--registry", "r", "m"], ["pin", "--registry", "r", "m", "one"]],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    status, out, err = call(capsys, *argv)
    assert (status, out) == (2, "")
    assert "usage:" in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = call(capsys, "--help")
    assert status == 0
    assert all(
        cmd in out
        for cmd in ("demo", "publish", "list", "show", "pin", "unpin", "rollback", "verify", "diff", "gc")
    )


def test_missing_registry_is_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, _, err = call(capsys, "list", "--registry", tmp_path / "absent")
    assert status == 2
    assert "does not exist" in err
