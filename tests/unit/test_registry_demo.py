"""The demo registry: it builds, its models run in onnxruntime and match their reference rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from monitor.quality import classifier_quality, regressor_quality
from monitor.reference import ProfileSettings, load_profile
from registry.artifacts import read_reference_labels
from registry.demo import build_demo
from registry.demo_train import classification_metrics
from registry.errors import PublishError
from registry.layout import VersionInfo, scan_registry, select_versions
from registry.manifest import Manifest, load_manifest, sha256_file
from registry.signature import Signature, TensorSpec
from registry.verify import verify_version


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[VersionInfo]]:
    root = tmp_path_factory.mktemp("demo") / "registry"
    return root, build_demo(root, seed=0)


def manifest(info: VersionInfo) -> Manifest:
    return load_manifest(info.manifest_path)


def run(info: VersionInfo, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(info.onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"input": x}), strict=True))


def test_demo_publishes_three_versions(demo: tuple[Path, list[VersionInfo]]) -> None:
    root, published = demo
    assert [(v.model, v.version) for v in published] == [
        ("classifier", 1),
        ("classifier", 2),
        ("regressor", 1),
    ]
    models = scan_registry(root)
    assert sorted(models) == ["classifier", "regressor"]  # _data is invisible
    assert models["classifier"].versions == (1, 2)
    assert models["classifier"].config_error is None
    assert models["classifier"].config.batching.max_batch_size == 64
    assert models["classifier"].config.batching.latency_budget_ms == 50.0
    assert select_versions(models["classifier"]) == (1, 2)
    assert models["regressor"].config.batching.max_batch_size == 32
    assert [verify_version(v) for v in published] == [[], [], []]


def test_signatures(demo: tuple[Path, list[VersionInfo]]) -> None:
    _, (c1, c2, r1) = demo
    classifier = Signature(
        (TensorSpec("input", "FP32", (-1, 16)),),
        (TensorSpec("probabilities", "FP32", (-1, 2)), TensorSpec("label", "INT64", (-1,))),
    )
    assert manifest(c1).signature == manifest(c2).signature == classifier
    regressor = Signature(
        (TensorSpec("input", "FP32", (-1, 8)),), (TensorSpec("prediction", "FP32", (-1, 1)),)
    )
    assert manifest(r1).signature == regressor


@pytest.mark.parametrize("index", [0, 1, 2])
@pytest.mark.parametrize("file_name", ["reference.npz", "golden.npz"])
def test_onnxruntime_reproduces_stored_outputs(
    demo: tuple[Path, list[VersionInfo]], index: int, file_name: str
) -> None:
    info = demo[1][index]
    with np.load(info.path / file_name, allow_pickle=False) as npz:
        stored = {key: npz[key] for key in npz.files if not key.startswith("label:")}  # labels: below
    x = stored.pop("input:input")
    assert x.dtype == np.float32
    assert len(x) >= (1000 if file_name == "reference.npz" else 1)
    outputs = run(info, x)
    assert {f"output:{k}" for k in outputs} == set(stored)
    for name, actual in outputs.items():
        expected = stored[f"output:{name}"]
        assert actual.dtype == expected.dtype
        assert actual.shape == expected.shape
        if name == "label":  # argmax may only differ where the two probabilities tie within rounding
            margin = np.abs(np.diff(outputs["probabilities"], axis=1)).ravel()
            assert np.array_equal(actual[margin > 1e-5], expected[margin > 1e-5])
        else:
            np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5)


def test_training_data_and_lineage(demo: tuple[Path, list[VersionInfo]]) -> None:
    root, published = demo
    for info in published:
        training = manifest(info).training
        assert training.data_uri is not None
        data = Path(training.data_uri.removeprefix("file://"))
        assert data.is_relative_to(root / "_data")
        assert training.data_sha256 == sha256_file(data)
        with np.load(data, allow_pickle=False) as npz:
            x = npz["input:input"]
            assert training.rows == len(x) == len(npz["y"])
        with np.load(info.training_path, allow_pickle=False) as npz:
            assert npz.files == ["input:input"]
            assert np.array_equal(npz["input:input"], x)  # under 20000 rows: all of them
        assert manifest(info).artifacts["training.npz"] == sha256_file(info.training_path)
        assert training.params["algorithm"] in {"logistic_regression", "mlp"}
    c1, c2, r1 = published
    assert (manifest(c1).parent_version, manifest(c2).parent_version, manifest(r1).parent_version) == (
        None,
        1,
        None,
    )
    assert (manifest(c1).training.rows, manifest(c2).training.rows) == (3000, 12000)


def test_metrics_are_sane(demo: tuple[Path, list[VersionInfo]]) -> None:
    c1, c2, r1 = demo[1]
    for info in (c1, c2):
        metrics = manifest(info).validation.metrics
        assert set(metrics) == {"accuracy", "f1_macro", "log_loss", "auc"}
        assert metrics["accuracy"] > 0.7  # chance is about 0.5
        assert metrics["auc"] > 0.8
        assert 0.7 < metrics["f1_macro"] <= 1.0
        assert metrics["log_loss"] < 0.6  # chance is ln 2 = 0.693
    metrics = manifest(r1).validation.metrics
    assert set(metrics) == {"rmse", "mae", "r2"}
    assert metrics["r2"] > 0.9
    assert 0 < metrics["mae"] <= metrics["rmse"] < 0.5


def test_references_carry_labels_the_monitor_can_score(demo: tuple[Path, list[VersionInfo]]) -> None:
    """Each reference holds the held-out truth as ``label:<output>``; the monitor's realized quality of
    those rows agrees with the demo's own metric code, and is close to the recorded validation score
    (the reference is half of the held-out rows); the drift profile ignores the labels."""
    *classifiers, regressor = demo[1]
    for info in classifiers:
        signature = manifest(info).signature
        labels = read_reference_labels(info.reference_path, signature)
        assert list(labels) == ["label"]
        with np.load(info.reference_path, allow_pickle=False) as npz:
            proba, predicted = npz["output:probabilities"], npz["output:label"]
        realized = classifier_quality(labels["label"], predicted, proba, 2)
        ours = classification_metrics(labels["label"], proba)
        assert realized.accuracy == pytest.approx(ours["accuracy"], abs=1e-12)
        assert realized.f1_macro == pytest.approx(ours["f1_macro"], abs=1e-12)
        assert realized.log_loss == pytest.approx(ours["log_loss"], rel=1e-6)
        validation = manifest(info).validation.metrics
        assert abs(realized.accuracy - validation["accuracy"]) < 0.03
        assert abs(realized.f1_macro - validation["f1_macro"]) < 0.03
        profile = load_profile(
            info.reference_path, signature, ProfileSettings(), 10, "0" * 64, cache_name="t.npz"
        )
        assert profile.rows == 2000
    labels = read_reference_labels(regressor.reference_path, manifest(regressor).signature)
    with np.load(regressor.reference_path, allow_pickle=False) as npz:
        realized_reg = regressor_quality(labels["prediction"], npz["output:prediction"])
    assert abs(realized_reg.rmse - manifest(regressor).validation.metrics["rmse"]) < 0.05


def test_classifier_predicts_both_classes(demo: tuple[Path, list[VersionInfo]]) -> None:
    c1 = demo[1][0]
    with np.load(c1.reference_path, allow_pickle=False) as npz:
        label = run(c1, npz["input:input"])["label"]
    assert set(np.unique(label)) == {0, 1}  # both classes predicted


def test_demo_is_deterministic_and_refuses_to_overwrite(
    demo: tuple[Path, list[VersionInfo]], tmp_path: Path
) -> None:
    root, published = demo
    again = build_demo(tmp_path / "again", seed=0)
    for a, b in zip(published, again, strict=True):
        assert manifest(a).model_sha256 == manifest(b).model_sha256
        assert manifest(a).artifacts == manifest(b).artifacts
        assert manifest(a).validation == manifest(b).validation
    with pytest.raises(PublishError, match="already exists"):
        build_demo(root)
