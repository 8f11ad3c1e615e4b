"""Numpy training for the demo registry: synthetic data, two small models, and their metrics.

This module owns the numeric half of :mod:`registry.demo`: data with a known ground truth, full-batch
gradient-descent training (vectorised numpy, no per-row loops), the float32 forward passes that the
exported ONNX graphs reproduce, and held-out metrics. Everything is deterministic for a numpy Generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "CLASSIFIER_FEATURES",
    "REGRESSOR_FEATURES",
    "Dataset",
    "LinearClassifier",
    "MLPRegressor",
    "classification_metrics",
    "classifier_data",
    "regression_metrics",
    "regressor_data",
    "train_classifier",
    "train_regressor",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

CLASSIFIER_FEATURES = 16
REGRESSOR_FEATURES = 8


@dataclass(frozen=True)
class Dataset:
    """Features ``x`` (float32, rows x features) and targets ``y`` (int64 labels or float32 values)."""

    x: F32
    y: npt.NDArray[Any]

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.y.shape[0] != self.x.shape[0]:
            raise ValueError(f"dataset shapes disagree: x {self.x.shape}, y {self.y.shape}")

    def split(self, rows: int) -> tuple[Dataset, Dataset]:
        """The first ``rows`` rows and the rest."""
        return Dataset(self.x[:rows], self.y[:rows]), Dataset(self.x[rows:], self.y[rows:])


def classifier_data(rng: np.random.Generator, rows: int, truth: F64) -> Dataset:
    """Gaussian features; label ~ Bernoulli(sigmoid(x @ truth[:-1] + truth[-1]))."""
    x = rng.standard_normal((rows, CLASSIFIER_FEATURES))
    p = _sigmoid(x @ truth[:-1] + truth[-1])
    y = (rng.random(rows) < p).astype(np.int64)
    return Dataset(x.astype(np.float32), y)


def regressor_data(rng: np.random.Generator, rows: int) -> Dataset:
    """Gaussian features; a smooth non-linear target of five of them plus small noise (two are unused)."""
    x = rng.standard_normal((rows, REGRESSOR_FEATURES))
    y = (
        np.sin(1.5 * x[:, 0])
        + 0.5 * x[:, 1] * x[:, 2]
        + 0.3 * x[:, 3] ** 2
        - 0.8 * x[:, 4]
        + 0.2 * x[:, 5]
        + 0.1 * rng.standard_normal(rows)
    )
    return Dataset(x.astype(np.float32), y.astype(np.float32)[:, None])


@dataclass(frozen=True)
class LinearClassifier:
    """Two-class logistic regression as ``softmax(x @ weight + bias)``; column 0 of ``weight`` is zero."""

    weight: F32  # [features, 2]
    bias: F32  # [2]

    def forward(self, x: F32) -> tuple[F32, npt.NDArray[np.int64]]:
        """(probabilities [rows, 2], label [rows]) in float32, the computation of the ONNX graph."""
        logits = x @ self.weight + self.bias
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
        return probabilities, probabilities.argmax(axis=1).astype(np.int64)


def train_classifier(data: Dataset, *, l2: float, lr: float, epochs: int) -> LinearClassifier:
    """Full-batch gradient descent on the L2-regularised logistic loss (float64 internally)."""
    x = data.x.astype(np.float64)
    y = data.y.astype(np.float64)
    w = np.zeros(x.shape[1])
    b = 0.0
    for _ in range(epochs):
        err = _sigmoid(x @ w + b) - y
        w -= lr * (x.T @ err / len(y) + l2 * w)
        b -= lr * float(err.mean())
    weight = np.zeros((x.shape[1], 2), dtype=np.float32)
    weight[:, 1] = w
    return LinearClassifier(weight=weight, bias=np.array([0.0, b], dtype=np.float32))


@dataclass(frozen=True)
class MLPRegressor:
    """``relu(x @ w1 + b1) @ w2 + b2``, the target scaling folded into ``w2``/``b2``."""

    w1: F32  # [features, hidden]
    b1: F32  # [hidden]
    w2: F32  # [hidden, 1]
    b2: F32  # [1]

    def forward(self, x: F32) -> F32:
        """Predictions [rows, 1] in float32, the computation of the ONNX graph."""
        hidden = np.maximum(x @ self.w1 + self.b1, np.float32(0.0))
        prediction: F32 = (hidden @ self.w2 + self.b2).astype(np.float32)
        return prediction


def train_regressor(
    data: Dataset, rng: np.random.Generator, *, hidden: int, lr: float, steps: int, l2: float
) -> MLPRegressor:
    """Full-batch Adam on mean squared error against the standardised target."""
    x = data.x.astype(np.float64)
    mean, std = float(data.y.mean()), float(data.y.std())
    y = (data.y.astype(np.float64) - mean) / std
    params = [
        rng.standard_normal((x.shape[1], hidden)) * np.sqrt(2.0 / x.shape[1]),
        np.zeros(hidden),
        rng.standard_normal((hidden, 1)) * np.sqrt(1.0 / hidden),
        np.zeros(1),
    ]
    moments = [np.zeros_like(p) for p in params]
    squares = [np.zeros_like(p) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(1, steps + 1):
        w1, b1, w2, b2 = params
        pre = x @ w1 + b1
        act = np.maximum(pre, 0.0)
        d_out = 2.0 * (act @ w2 + b2 - y) / len(y)
        d_pre = (d_out @ w2.T) * (pre > 0.0)
        grads = [x.T @ d_pre + l2 * w1, d_pre.sum(axis=0), act.T @ d_out + l2 * w2, d_out.sum(axis=0)]
        for p, g, m, v in zip(params, grads, moments, squares, strict=True):
            m *= beta1
            m += (1 - beta1) * g
            v *= beta2
            v += (1 - beta2) * g * g
            p -= lr * (m / (1 - beta1**step)) / (np.sqrt(v / (1 - beta2**step)) + eps)
    w1, b1, w2, b2 = params
    return MLPRegressor(
        w1=w1.astype(np.float32),
        b1=b1.astype(np.float32),
        w2=(w2 * std).astype(np.float32),
        b2=(b2 * std + mean).astype(np.float32),
    )


def classification_metrics(y: npt.NDArray[np.int64], probabilities: F32) -> dict[str, float]:
    """accuracy and macro F1 of the predicted class (the argmax, as the exported graph's ArgMax), log_loss
    (natural log, probabilities clipped to [1e-7, 1 - 1e-7]) and ROC AUC: the names and definitions of
    the monitor's realized quality (monitor/quality.py), so windows compare with them."""
    p1 = np.clip(probabilities[:, 1].astype(np.float64), 1e-7, 1 - 1e-7)
    predicted = probabilities.argmax(axis=1)
    log_loss = float(-(y * np.log(p1) + (1 - y) * np.log1p(-p1)).mean())
    f1 = [
        2 * np.sum((predicted == c) & (y == c)) / (np.sum(predicted == c) + np.sum(y == c)) for c in (0, 1)
    ]  # both classes occur in the held-out data
    return {
        "accuracy": float((predicted == y).mean()),
        "f1_macro": float(np.mean(f1)),
        "log_loss": log_loss,
        "auc": _auc(y, probabilities[:, 1].astype(np.float64)),
    }


def regression_metrics(y: F32, prediction: F32) -> dict[str, float]:
    """rmse, mae and r2 (coefficient of determination) of ``prediction`` against ``y``."""
    truth = y.astype(np.float64).ravel()
    err = prediction.astype(np.float64).ravel() - truth
    r2 = 1.0 - float((err**2).sum()) / float(((truth - truth.mean()) ** 2).sum())
    return {"rmse": float(np.sqrt((err**2).mean())), "mae": float(np.abs(err).mean()), "r2": r2}


def _auc(y: npt.NDArray[np.int64], scores: F64) -> float:
    """Mann-Whitney U / (n_pos * n_neg), with tied scores given their average rank."""
    _values, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    average_rank = ends - (counts - 1) / 2.0  # 1-based average rank of each distinct value
    ranks = average_rank[inverse]
    positives = y == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    u = float(ranks[positives].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def _sigmoid(z: F64) -> F64:
    return 0.5 * (1.0 + np.tanh(0.5 * z))
