"""The registry scan: visible models and versions, pin and config handling, version policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.config import ModelConfig, VersionsConfig
from registry.errors import ConfigError, NotFoundError
from registry.layout import (
    READY,
    ModelInfo,
    VersionInfo,
    default_version,
    parse_version,
    read_pin,
    scan_registry,
    select_versions,
    version_info,
)


def make_version(model_dir: Path, name: str, *, ready: bool = True) -> Path:
    path = model_dir / name
    path.mkdir(parents=True)
    (path / "model.onnx").write_bytes(b"not read by the scan")
    if ready:
        (path / READY).write_bytes(b"")
    return path


def test_only_ready_integer_versions_are_visible(tmp_path: Path) -> None:
    model = tmp_path / "m"
    for name in ("1", "3", "10", "007", "0", "-1", "v4", "2.0", ".tmp-abc123", "+5"):
        make_version(model, name)
    make_version(model, "2", ready=False)  # a publish that never finished
    (model / "4").write_text("a file, not a directory")
    (model / "11").mkdir()
    (model / "11" / READY).mkdir()  # READY must be a file
    info = scan_registry(tmp_path)["m"]
    assert info.versions == (1, 3, 10)
    assert info == ModelInfo("m", model, (1, 3, 10), None, ModelConfig(), None)


@pytest.mark.parametrize(
    ("name", "version"), [("1", 1), ("42", 42), ("0", None), ("01", None), ("1a", None), ("", None)]
)
def test_parse_version(name: str, version: int | None) -> None:
    assert parse_version(name) == version


def test_only_valid_model_names_are_models(tmp_path: Path) -> None:
    for name in ("good", "Good.v2", "a-b_c", "9lives", "x" * 128):
        make_version(tmp_path / name, "1")
    for name in ("_data", ".hidden", ".tmp-123", "-dash", "x" * 129, "sp ace"):
        make_version(tmp_path / name, "1")
    (tmp_path / "file-model").write_text("not a directory")
    models = scan_registry(tmp_path)
    assert sorted(models) == sorted(["good", "Good.v2", "a-b_c", "9lives", "x" * 128])
    assert list(models) == sorted(models)


def test_model_without_versions_is_listed_empty(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert scan_registry(tmp_path)["empty"].versions == ()


def test_missing_root_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        scan_registry(tmp_path / "nope")


def test_bad_config_is_reported_not_raised(tmp_path: Path) -> None:
    make_version(tmp_path / "bad", "1")
    (tmp_path / "bad" / "model.toml").write_text("[batching]\nmax_batch_sise = 3\n")
    make_version(tmp_path / "ok", "1")
    (tmp_path / "ok" / "model.toml").write_text("[batching]\nmax_batch_size = 3\n")
    models = scan_registry(tmp_path)
    assert models["bad"].config == ModelConfig()
    assert models["bad"].config_error is not None
    assert "[batching].max_batch_sise: unknown key" in models["bad"].config_error
    assert models["bad"].versions == (1,)
    assert models["ok"].config_error is None
    assert models["ok"].config.batching.max_batch_size == 3


def test_pin_is_read_and_a_bad_pin_is_reported(tmp_path: Path) -> None:
    make_version(tmp_path / "m", "1")
    (tmp_path / "m" / "pin").write_text("1\n")
    assert scan_registry(tmp_path)["m"].pin == 1
    (tmp_path / "m" / "pin").write_text("latest")
    info = scan_registry(tmp_path)["m"]
    assert info.pin is None
    assert info.config_error is not None
    assert "pin" in info.config_error


@pytest.mark.parametrize(("text", "pin"), [("3", 3), ("3\n", 3), ("  12 \n", 12)])
def test_read_pin(tmp_path: Path, text: str, pin: int) -> None:
    (tmp_path / "pin").write_text(text)
    assert read_pin(tmp_path) == pin


@pytest.mark.parametrize("text", ["", "03", "0", "-1", "one", "1 2"])
def test_read_pin_refuses_garbage(tmp_path: Path, text: str) -> None:
    (tmp_path / "pin").write_text(text)
    with pytest.raises(ConfigError, match="pin"):
        read_pin(tmp_path)


def test_read_pin_absent(tmp_path: Path) -> None:
    assert read_pin(tmp_path) is None


def test_version_info(tmp_path: Path) -> None:
    path = make_version(tmp_path / "m", "2")
    make_version(tmp_path / "m", "3", ready=False)
    info = version_info(tmp_path, "m", 2)
    assert info == VersionInfo("m", 2, path)
    assert (info.onnx_path, info.manifest_path) == (path / "model.onnx", path / "manifest.json")
    assert (info.reference_path, info.golden_path) == (path / "reference.npz", path / "golden.npz")
    with pytest.raises(NotFoundError, match="version 3"):
        version_info(tmp_path, "m", 3)
    with pytest.raises(NotFoundError, match="model 'other'"):
        version_info(tmp_path, "other", 1)
    for bad in (0, -2, True):
        with pytest.raises(NotFoundError):
            version_info(tmp_path, "m", bad)
    with pytest.raises(NotFoundError, match="not a valid model name"):
        version_info(tmp_path, "../m", 2)


def model(versions: tuple[int, ...], pin: int | None = None, **policy: object) -> ModelInfo:
    config = ModelConfig(versions=VersionsConfig(**policy))  # type: ignore[arg-type]
    return ModelInfo("m", Path("/r/m"), versions, pin, config)


@pytest.mark.parametrize(
    ("info", "selected"),
    [
        (model(()), ()),
        (model((1, 2, 5)), (5,)),
        (model((1, 2, 5), latest=2), (2, 5)),
        (model((1, 2, 5), latest=9), (1, 2, 5)),
        (model((1, 2, 5), policy="all"), (1, 2, 5)),
        (model((1, 2, 5), policy="specific", specific=(2, 4)), (2,)),
        (model((1, 2, 5), pin=1), (1, 5)),
        (model((1, 2, 5), pin=1, latest=2), (1, 2, 5)),
        (model((1, 2, 5), pin=4), (5,)),  # a pin that is not READY adds nothing
        (model((1, 2, 5), pin=5, policy="specific", specific=(1,)), (1, 5)),
        (model((), pin=1, policy="all"), ()),
    ],
)
def test_select_versions(info: ModelInfo, selected: tuple[int, ...]) -> None:
    assert select_versions(info) == selected


@pytest.mark.parametrize(
    ("pin", "loaded", "default"),
    [
        (None, [1, 3, 2], 3),
        (2, [1, 2, 3], 2),
        (4, [1, 2, 3], 3),
        (2, [1, 3], 3),
        (None, [], None),
        (1, [], None),
    ],
)
def test_default_version(pin: int | None, loaded: list[int], default: int | None) -> None:
    assert default_version(model((1, 2, 3), pin=pin), iter(loaded)) == default


def test_scan_is_cheap_on_many_versions(tmp_path: Path) -> None:
    for version in range(1, 301):
        make_version(tmp_path / "big", str(version), ready=version % 3 != 0)
    info = scan_registry(tmp_path)["big"]
    assert len(info.versions) == 200
    assert info.versions[-1] == 299
    assert select_versions(info) == (299,)
