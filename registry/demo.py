"""The demo registry: real (small) models trained on synthetic data, published like any other.

This module owns ``infergate-registry demo DIR``. It trains with :mod:`registry.demo_train`, exports
each model to ONNX with ``onnx.helper`` (opset 17, IR version 8, dynamic batch dimension ``batch``) and
publishes it with :func:`registry.publish.publish`, so the demo exercises the real publish path:

* ``classifier``: input ``input`` FP32 [batch, 16] -> ``probabilities`` FP32 [batch, 2], ``label``
  INT64 [batch]; logistic regression. Version 1, then version 2 (more data, weaker L2, parent 1).
* ``regressor``: input ``input`` FP32 [batch, 8] -> ``prediction`` FP32 [batch, 1]; a one-hidden-layer
  ReLU MLP.

Training data stays in ``DIR/_data/<model>/train-v<N>.npz`` (keys ``input:input``, the model's input
rows, and ``y``, the targets): the leading ``_`` makes it invisible to the scan, and each manifest records
its ``file://`` URI, SHA-256 and rows, and its held-out metrics (classifier: accuracy, f1_macro, log_loss,
auc; regressor: rmse, mae, r2) as ``validation.metrics``. Each version carries a ``reference.npz``
(held-out inputs, the numpy model's outputs and the held-out truth as ``label:<output>``: ``label:label``
for the classifier, ``label:prediction`` for the regressor), a small ``golden.npz`` (no labels) and,
because the training file holds the model's inputs, a ``training.npz`` (the training inputs, for the
monitor's skew check). No downloads; deterministic for a seed up to ``created_at``; about a second.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from registry.config import load_model_config
from registry.demo_train import (
    CLASSIFIER_FEATURES,
    REGRESSOR_FEATURES,
    Dataset,
    LinearClassifier,
    MLPRegressor,
    classification_metrics,
    classifier_data,
    regression_metrics,
    regressor_data,
    train_classifier,
    train_regressor,
)
from registry.errors import PublishError
from registry.layout import CONFIG_FILE, VersionInfo
from registry.publish import publish

__all__ = ["DATA_DIR", "DEMO_MODELS", "build_demo", "classifier_onnx", "regressor_onnx"]

DATA_DIR = "_data"
DEMO_MODELS = ("classifier", "regressor")
OPSET = 17
IR_VERSION = 8
REFERENCE_ROWS = 2000
GOLDEN_ROWS = 8

_CLASSIFIER_TOML = """\
# Demo binary classifier: logistic regression on 16 synthetic features.
[batching]
max_batch_size = 64
latency_budget_ms = 50.0

[versions]
policy = "latest"
latest = 2

# Ground truth (POST /v1/feedback on the monitor; README "Feedback"): short quality windows, so that the
# README's snippet closes some (by rows) within seconds.
[feedback]
window_rows = 50
window_seconds = 300.0
grace_seconds = 60.0
"""

_REGRESSOR_TOML = """\
# Demo regressor: one-hidden-layer MLP on 8 synthetic features.
[batching]
max_batch_size = 32
latency_budget_ms = 100.0

[sampling]
rate = 0.1
"""


def classifier_onnx(model: LinearClassifier) -> onnx.ModelProto:
    """``Gemm -> Softmax(axis=1) -> ArgMax(axis=1, keepdims=0)`` with a dynamic batch dimension."""
    nodes = [
        helper.make_node("Gemm", ["input", "weight", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    return _model(
        "classifier",
        nodes,
        inputs=[("input", TensorProto.FLOAT, ["batch", CLASSIFIER_FEATURES])],
        outputs=[("probabilities", TensorProto.FLOAT, ["batch", 2]), ("label", TensorProto.INT64, ["batch"])],
        weights={"weight": model.weight, "bias": model.bias},
    )


def regressor_onnx(model: MLPRegressor) -> onnx.ModelProto:
    """``Gemm -> Relu -> Gemm`` with a dynamic batch dimension."""
    nodes = [
        helper.make_node("Gemm", ["input", "w1", "b1"], ["pre"]),
        helper.make_node("Relu", ["pre"], ["hidden"]),
        helper.make_node("Gemm", ["hidden", "w2", "b2"], ["prediction"]),
    ]
    return _model(
        "regressor",
        nodes,
        inputs=[("input", TensorProto.FLOAT, ["batch", REGRESSOR_FEATURES])],
        outputs=[("prediction", TensorProto.FLOAT, ["batch", 1])],
        weights={"w1": model.w1, "b1": model.b1, "w2": model.w2, "b2": model.b2},
    )


def _model(
    name: str,
    nodes: list[onnx.NodeProto],
    *,
    inputs: list[tuple[str, int, list[Any]]],
    outputs: list[tuple[str, int, list[Any]]],
    weights: dict[str, np.ndarray[Any, Any]],
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        name,
        inputs=[helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        outputs=[helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        initializer=[numpy_helper.from_array(array, name=key) for key, array in weights.items()],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="infergate-demo",
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def build_demo(root: Path, *, seed: int = 0) -> list[VersionInfo]:
    """Build the demo registry in ``root`` (created if missing); return the versions in publish order.

    PublishError if ``root`` already holds a demo model (the demo never adds to an existing one).
    """
    for name in DEMO_MODELS:
        if (root / name).exists():
            raise PublishError(f"{root / name} already exists; build the demo into a fresh directory")
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    classifier_rng, regressor_rng = rng.spawn(2)
    published = _classifier_versions(root, classifier_rng)
    published.append(_regressor_version(root, regressor_rng))
    return published


def _classifier_versions(root: Path, rng: np.random.Generator) -> list[VersionInfo]:
    truth = np.append(rng.normal(0.0, 0.8, CLASSIFIER_FEATURES), -0.3)
    held_out = classifier_data(rng, 4000, truth)
    _write_config(root, "classifier", _CLASSIFIER_TOML)
    published: list[VersionInfo] = []
    plans = [
        {"train_rows": 3000, "l2": 3e-2, "lr": 0.5, "epochs": 150},
        {"train_rows": 12000, "l2": 1e-3, "lr": 0.5, "epochs": 400},
    ]
    for generation, params in enumerate(plans, start=1):
        train = classifier_data(rng, int(params["train_rows"]), truth)
        model = train_classifier(train, l2=params["l2"], lr=params["lr"], epochs=int(params["epochs"]))
        probabilities, _ = model.forward(held_out.x)
        published.append(
            _publish(
                root,
                "classifier",
                generation,
                classifier_onnx(model),
                train,
                held_out,
                dict(
                    zip(("probabilities", "label"), model.forward(held_out.x[:REFERENCE_ROWS]), strict=True)
                ),
                truth="label",
                params={"algorithm": "logistic_regression", "optimizer": "gradient_descent", **params},
                metrics=classification_metrics(held_out.y, probabilities),
                notes=f"demo classifier v{generation}: logistic regression on synthetic data",
            )
        )
    return published


def _regressor_version(root: Path, rng: np.random.Generator) -> VersionInfo:
    data = regressor_data(rng, 8000)
    train, held_out = data.split(4000)
    params: dict[str, Any] = {"algorithm": "mlp", "hidden": 24, "lr": 0.02, "steps": 500, "l2": 1e-4}
    model = train_regressor(train, rng, hidden=24, lr=0.02, steps=500, l2=1e-4)
    _write_config(root, "regressor", _REGRESSOR_TOML)
    return _publish(
        root,
        "regressor",
        1,
        regressor_onnx(model),
        train,
        held_out,
        {"prediction": model.forward(held_out.x[:REFERENCE_ROWS])},
        truth="prediction",
        params={**params, "optimizer": "adam", "train_rows": len(train.y)},
        metrics=regression_metrics(held_out.y, model.forward(held_out.x)),
        notes="demo regressor v1: one-hidden-layer ReLU MLP on synthetic data",
    )


def _publish(
    root: Path,
    name: str,
    generation: int,
    model: onnx.ModelProto,
    train: Dataset,
    held_out: Dataset,
    outputs: dict[str, np.ndarray[Any, Any]],
    *,
    truth: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    notes: str,
) -> VersionInfo:
    data_dir = root / DATA_DIR / name
    data_dir.mkdir(parents=True, exist_ok=True)
    train_path = data_dir / f"train-v{generation}.npz"
    columns: dict[str, Any] = {"input:input": train.x, "y": train.y}  # the model's inputs, and the targets
    np.savez(train_path, **columns)
    with tempfile.TemporaryDirectory(prefix="infergate-demo-") as tmp:
        scratch = Path(tmp)
        onnx.save(model, scratch / "model.onnx")
        reference = {"input:input": held_out.x[:REFERENCE_ROWS]} | {
            f"output:{k}": v for k, v in outputs.items()
        }
        labelled: dict[str, Any] = reference | {f"label:{truth}": held_out.y[:REFERENCE_ROWS]}
        np.savez(scratch / "reference.npz", **labelled)  # label:<output>: the truth for that output
        np.savez(scratch / "golden.npz", **{k: v[:GOLDEN_ROWS] for k, v in reference.items()})
        return publish(
            root,
            name,
            scratch / "model.onnx",
            reference=scratch / "reference.npz",
            golden=scratch / "golden.npz",
            train_data=train_path,
            params=params,
            metrics=metrics,
            notes=notes,
        )


def _write_config(root: Path, name: str, text: str) -> None:
    path = root / name / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    load_model_config(path)  # the demo must ship a valid config; fail loudly here if not
