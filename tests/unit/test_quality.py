"""Realized quality metrics against naive per-row re-implementations, and their edge cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.errors import StatsError
from monitor.quality import (
    HIGHER_IS_BETTER,
    LOG_LOSS_EPS,
    ClassifierQuality,
    classifier_quality,
    regressor_quality,
)


def naive_classifier(y: list[int], pred: list[int], proba: np.ndarray | None, k: int) -> dict[str, float]:
    """Per-row loops, textbook definitions (the oracle)."""
    out: dict[str, float] = {"accuracy": sum(a == b for a, b in zip(y, pred, strict=True)) / len(y)}
    f1s = []
    for c in range(k):
        tp = sum(1 for a, b in zip(y, pred, strict=True) if a == c and b == c)
        fp = sum(1 for a, b in zip(y, pred, strict=True) if a != c and b == c)
        fn = sum(1 for a, b in zip(y, pred, strict=True) if a == c and b != c)
        out[f"precision_{c}"] = tp / (tp + fp) if tp + fp else math.nan
        out[f"recall_{c}"] = tp / (tp + fn) if tp + fn else math.nan
        out[f"f1_{c}"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
        if tp + fp + fn:
            f1s.append(out[f"f1_{c}"])
    out["f1_macro"] = sum(f1s) / len(f1s)
    if proba is not None:
        n = len(y)
        out["log_loss"] = -sum(math.log(max(proba[i][y[i]], LOG_LOSS_EPS)) for i in range(n)) / n
        out["brier"] = sum(sum((proba[i][j] - (j == y[i])) ** 2 for j in range(k)) for i in range(n)) / n
        bins: list[list[tuple[float, float]]] = [[] for _ in range(10)]
        for i in range(n):
            conf = max(proba[i])
            top = int(np.argmax(proba[i]))
            b = next(j for j in range(10) if conf <= (j + 1) / 10) if conf > 0 else 0
            bins[b].append((conf, float(top == y[i])))
        out["ece"] = sum(
            len(rows) / n * abs(sum(c for _, c in rows) / len(rows) - sum(p for p, _ in rows) / len(rows))
            for rows in bins
            if rows
        )
    return {k: v for k, v in out.items() if not math.isnan(v)}


@st.composite
def classified(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    k = draw(st.integers(2, 5))
    n = draw(st.integers(1, 60))
    y = np.array(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    pred = np.array(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    seed = draw(st.integers(0, 2**32 - 1))
    proba = np.random.default_rng(seed).dirichlet(np.full(k, 0.7), n)
    if draw(st.booleans()):
        proba[0] = np.eye(k)[0]  # exact 0 and 1 probabilities (log loss clip, bin edges)
    return y, pred, proba, k


@settings(max_examples=200, deadline=None)
@given(classified())
def test_classifier_metrics_match_the_naive_oracle(
    case: tuple[np.ndarray, np.ndarray, np.ndarray, int],
) -> None:
    y, pred, proba, k = case
    quality = classifier_quality(y, pred, proba, k)
    expected = naive_classifier(y.tolist(), pred.tolist(), proba, k)
    got = quality.as_dict()
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert quality.rows == y.size
    assert all(name in HIGHER_IS_BETTER for name in got)
    json.dumps(got, allow_nan=False)


def test_without_probabilities_the_probability_metrics_are_none() -> None:
    quality = classifier_quality([0, 1, 1], [0, 1, 0], None, 2)
    assert quality.log_loss is None
    assert quality.brier is None
    assert quality.ece is None
    assert set(quality.as_dict()) == {
        "accuracy",
        "f1_macro",
        "precision_0",
        "precision_1",
        "recall_0",
        "recall_1",
        "f1_0",
        "f1_1",
    }


def test_one_class_only() -> None:
    quality = classifier_quality(np.zeros(5, dtype=np.int64), np.zeros(5, dtype=np.int64), None, 3)
    assert quality.accuracy == 1.0
    assert quality.f1_macro == 1.0
    assert quality.precision[0] == 1.0
    assert all(math.isnan(v) for v in quality.precision[1:])
    assert all(math.isnan(v) for v in quality.f1[1:])
    assert set(quality.as_dict()) == {"accuracy", "f1_macro", "precision_0", "recall_0", "f1_0"}
    missed = classifier_quality(
        [1, 1], [0, 0], None, 2
    )  # class 1 occurs, never predicted: F1 0, precision NaN
    assert missed.f1 == (0.0, 0.0)
    assert math.isnan(missed.precision[1])
    assert missed.recall[1] == 0.0


def test_binary_positive_column_equals_two_columns() -> None:
    rng = np.random.default_rng(2)
    p1 = rng.random(50)
    y = (rng.random(50) < p1).astype(np.int64)
    pred = (p1 > 0.5).astype(np.int64)
    both = classifier_quality(y, pred, np.column_stack([1 - p1, p1]), 2)
    assert classifier_quality(y, pred, p1, 2) == both
    assert classifier_quality(y[:, None], pred[:, None], p1[:, None], 2) == both
    assert classifier_quality(y.astype(np.float32), pred, p1.astype(np.float32), 2).accuracy == both.accuracy


@pytest.mark.parametrize(
    ("y", "pred", "proba", "k", "message"),
    [
        ([], [], None, 2, "no rows"),
        ([0, 1], [0], None, 2, "expected 2"),
        ([0, 2], [0, 1], None, 2, r"\[0, 2\)"),
        ([0, -1], [0, 1], None, 2, r"\[0, 2\)"),
        ([0, 0.5], [0, 1], None, 2, "integers"),
        ([0, math.nan], [0, 1], None, 2, "integers"),
        (["a", "b"], [0, 1], None, 2, "integer labels"),
        ([[0, 1]], [[0, 1]], None, 2, "1-D"),
        ([0, 1], [0, 1], None, 1, "n_classes"),
        ([0, 1], [0, 1], [[0.5, 0.5], [math.nan, 0.5]], 2, "NaN"),
        ([0, 1], [0, 1], [[0.5, 0.5], [np.inf, 0.5]], 2, "NaN or infinite"),
        ([0, 1], [0, 1], [[0.5, 0.5], [1.5, -0.5]], 2, r"\[0, 1\]"),
        ([0, 1], [0, 1], [[0.5, 0.4], [0.5, 0.5]], 2, "sum to 1"),
        ([0, 1], [0, 1], [[0.5, 0.5, 0.0]] * 2, 2, "shape"),
        ([0, 1], [0, 1], [0.5], 2, "shape"),
    ],
)
def test_classifier_refuses_bad_input(y: object, pred: object, proba: object, k: int, message: str) -> None:
    with pytest.raises(StatsError, match=message):
        classifier_quality(y, pred, proba, k)  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6)), min_size=1, max_size=50))
def test_regressor_metrics_match_the_naive_oracle(pairs: list[tuple[float, float]]) -> None:
    y = np.array([a for a, _ in pairs])
    pred = np.array([b for _, b in pairs])
    quality = regressor_quality(y, pred[:, None])
    n = len(pairs)
    assert quality.mae == pytest.approx(sum(abs(b - a) for a, b in pairs) / n, rel=1e-9, abs=1e-9)
    assert quality.rmse == pytest.approx(
        math.sqrt(sum((b - a) ** 2 for a, b in pairs) / n), rel=1e-9, abs=1e-9
    )
    assert quality.bias == pytest.approx(sum(b - a for a, b in pairs) / n, rel=1e-9, abs=1e-6)
    assert set(quality.as_dict()) == {"mae", "rmse", "bias"}


def test_bias_sign_is_prediction_minus_truth() -> None:
    assert regressor_quality([1.0, 2.0], [2.0, 3.0]).bias == 1.0  # over-prediction is positive


def test_regressor_refuses_bad_input() -> None:
    with pytest.raises(StatsError, match="no rows"):
        regressor_quality([], [])
    with pytest.raises(StatsError, match="NaN"):
        regressor_quality([1.0, math.nan], [1.0, 2.0])
    with pytest.raises(StatsError, match="expected 2"):
        regressor_quality([1.0, 2.0], [1.0])
    with pytest.raises(StatsError, match="numbers"):
        regressor_quality(["a"], ["b"])


def test_directions() -> None:
    assert HIGHER_IS_BETTER["accuracy"]
    assert HIGHER_IS_BETTER["f1_macro"]
    assert HIGHER_IS_BETTER["recall_12"]
    assert not HIGHER_IS_BETTER["log_loss"]
    assert not HIGHER_IS_BETTER["rmse"]
    assert not HIGHER_IS_BETTER["bias"]
    assert "precision_01" not in HIGHER_IS_BETTER
    assert "auc" not in HIGHER_IS_BETTER
    with pytest.raises(KeyError):
        HIGHER_IS_BETTER["r2"]
    assert set(HIGHER_IS_BETTER) == {
        "accuracy",
        "f1_macro",
        "log_loss",
        "brier",
        "ece",
        "mae",
        "rmse",
        "bias",
    }


def test_quality_is_frozen() -> None:
    quality: ClassifierQuality = classifier_quality([0, 1], [0, 1], None, 2)
    with pytest.raises(AttributeError):
        quality.accuracy = 0.0  # type: ignore[misc]
