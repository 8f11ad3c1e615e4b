"""Realized model quality: the metrics of joined rows (ground truth beside the model's prediction).

This module owns the arithmetic that turns a window's joined rows into quality metrics. It is pure
(numpy only, no I/O); :mod:`monitor.quality_decisions` judges the numbers and :mod:`monitor.cbpe`
estimates them before labels arrive. Every function validates its arrays and raises
:class:`monitor.errors.StatsError` with the reason: no rows, mismatched lengths, labels that are not
integers in ``[0, n_classes)``, NaN/inf or out-of-range probabilities, rows of ``proba`` that do not
sum to 1 (within :data:`PROBA_SUM_TOLERANCE`).

Classifier metrics (:func:`classifier_quality`), with ``TP/FP/FN`` counted per class from
``y_true``/``y_pred``:

* ``accuracy``: the share of rows where ``y_pred == y_true``.
* ``precision_<c> = TP/(TP+FP)``: NaN when class ``c`` is never predicted; ``recall_<c> = TP/(TP+FN)``:
  NaN when ``c`` never occurs in ``y_true``; ``f1_<c> = 2TP/(2TP+FP+FN)``: NaN only when ``c`` neither
  occurs nor is predicted (a class that occurs but is never predicted has F1 0, not NaN).
* ``f1_macro``: the mean of the defined per-class F1 (classes absent from both ``y_true`` and
  ``y_pred`` are left out, as scikit-learn does when it is not given ``labels``).
* from ``proba`` (None when it is not given): ``log_loss``, natural log of the probability given to
  the true class, clipped below at :data:`LOG_LOSS_EPS` (the demo registry's clip, so a version's
  validation score and its window scores agree); ``brier``, the multiclass Brier score
  ``mean_i sum_k (p_ik - [y_i = k])^2`` (0 to 2); ``ece``, the expected calibration error of the
  top-class confidence ``max_k p_ik`` against ``argmax_k p_ik == y_i`` (the probabilities' own
  prediction, not ``y_pred``), over :data:`ECE_BINS` equal-width bins closed on the right
  (``(0, 0.1], (0.1, 0.2], ...``; a confidence of exactly 0 goes to the first bin).

For two classes ``proba`` may also be the positive class's probability alone (shape ``(n,)`` or
``(n, 1)``). Regressor metrics (:func:`regressor_quality`): ``mae``, ``rmse`` and ``bias``, the mean of
``y_pred - y_true`` (positive: the model over-predicts).

:data:`HIGHER_IS_BETTER` says the direction of every metric name, per-class ones included. ``bias`` is
judged by its magnitude (smaller ``|bias|`` is better), so it maps to False.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from monitor.errors import StatsError

__all__ = [
    "ECE_BINS",
    "HIGHER_IS_BETTER",
    "LOG_LOSS_EPS",
    "PROBA_SUM_TOLERANCE",
    "ClassifierQuality",
    "RegressorQuality",
    "check_labels",
    "check_proba",
    "classifier_quality",
    "batched_f1",
    "calibration_error",
    "confusion_counts",
    "ece_bins",
    "f1_from_counts",
    "regressor_quality",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

LOG_LOSS_EPS = 1e-7
"""The probability of the true class is clipped below at this value in ``log_loss``."""
ECE_BINS = 10
"""Equal-width confidence bins of ``ece``."""
PROBA_SUM_TOLERANCE = 1e-3
"""Rows of ``proba`` must sum to 1 within this (float32 softmax outputs do, to about 1e-6)."""

_FIXED = {
    "accuracy": True,
    "f1_macro": True,
    "log_loss": False,
    "brier": False,
    "ece": False,
    "mae": False,
    "rmse": False,
    "bias": False,
}
_PER_CLASS = re.compile(r"(precision|recall|f1)_(0|[1-9][0-9]*)")


class _Directions(Mapping[str, bool]):
    """``name -> higher is better`` for the fixed names, and for ``precision_<c>``, ``recall_<c>`` and
    ``f1_<c>`` for any class ``c`` (membership and lookup; iteration lists the fixed names only)."""

    def __getitem__(self, name: str) -> bool:
        if name in _FIXED:
            return _FIXED[name]
        if _PER_CLASS.fullmatch(name):
            return True
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in _FIXED or _PER_CLASS.fullmatch(name) is not None)

    def __iter__(self) -> Iterator[str]:
        return iter(_FIXED)

    def __len__(self) -> int:
        return len(_FIXED)


HIGHER_IS_BETTER: Mapping[str, bool] = _Directions()


@dataclass(frozen=True)
class ClassifierQuality:
    """Realized classifier quality over ``rows`` joined rows (see the module docstring for each metric)."""

    rows: int
    n_classes: int
    accuracy: float
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    f1: tuple[float, ...]
    f1_macro: float
    log_loss: float | None = None
    brier: float | None = None
    ece: float | None = None

    def as_dict(self) -> dict[str, float]:
        """Flat ``metric name -> value``; metrics that are NaN (undefined) or None are left out, so the
        result is valid JSON and every value is a number."""
        out = {"accuracy": self.accuracy, "f1_macro": self.f1_macro}
        for name, values in (("precision", self.precision), ("recall", self.recall), ("f1", self.f1)):
            out.update({f"{name}_{c}": v for c, v in enumerate(values)})
        for name in ("log_loss", "brier", "ece"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return {k: float(v) for k, v in out.items() if not np.isnan(v)}


@dataclass(frozen=True)
class RegressorQuality:
    """Realized regressor quality over ``rows`` joined rows; ``bias = mean(y_pred - y_true)``."""

    rows: int
    mae: float
    rmse: float
    bias: float

    def as_dict(self) -> dict[str, float]:
        """Flat ``metric name -> value``: mae, rmse, bias."""
        return {"mae": self.mae, "rmse": self.rmse, "bias": self.bias}


def classifier_quality(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, proba: npt.ArrayLike | None, n_classes: int
) -> ClassifierQuality:
    """The realized quality of ``y_pred`` (and ``proba``, when given) against ``y_true``.

    ``y_true``/``y_pred``: 1-D (or ``(n, 1)``) integer-valued labels in ``[0, n_classes)``; ``proba``:
    ``(n, n_classes)`` probabilities (or the positive class's, for two classes). StatsError if not.
    """
    truth = check_labels("y_true", y_true, n_classes)
    pred = check_labels("y_pred", y_pred, n_classes, rows=truth.size)
    counts = confusion_counts(truth, pred, n_classes)
    tp = np.diagonal(counts).astype(np.float64)
    predicted = counts.sum(axis=0).astype(np.float64)
    actual = counts.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / predicted
        recall = tp / actual
    f1 = f1_from_counts(tp, predicted, actual)
    quality: dict[str, Any] = {}
    if proba is not None:
        p = check_proba(proba, n_classes, rows=truth.size)
        quality = _probability_metrics(truth, p)
    return ClassifierQuality(
        rows=truth.size,
        n_classes=n_classes,
        accuracy=float(tp.sum() / truth.size),
        precision=tuple(float(v) for v in precision),
        recall=tuple(float(v) for v in recall),
        f1=tuple(float(v) for v in f1),
        f1_macro=float(np.nanmean(f1)),
        **quality,
    )


def regressor_quality(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> RegressorQuality:
    """MAE, RMSE and bias (``mean(y_pred - y_true)``) of 1-D (or ``(n, 1)``) finite numbers."""
    truth = _column("y_true", y_true)
    pred = _column("y_pred", y_pred, rows=truth.size)
    for name, values in (("y_true", truth), ("y_pred", pred)):
        if values.dtype.kind not in "biuf":
            raise StatsError(f"{name}: expected numbers, got dtype {values.dtype}")
        if not np.isfinite(values).all():
            raise StatsError(f"{name}: NaN or infinite values")
    residual = pred.astype(np.float64) - truth.astype(np.float64)
    return RegressorQuality(
        rows=truth.size,
        mae=float(np.abs(residual).mean()),
        rmse=float(np.sqrt((residual**2).mean())),
        bias=float(residual.mean()),
    )


def confusion_counts(y_true: I64, y_pred: I64, n_classes: int) -> I64:
    """``counts[j, c]``: rows of true class ``j`` predicted as ``c`` (checked labels)."""
    codes = y_true * n_classes + y_pred
    return np.bincount(codes, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def f1_from_counts(tp: F64, predicted: F64, actual: F64) -> F64:
    """Per-class ``2TP / (2TP + FP + FN) = 2TP / (predicted + actual)``; NaN where both are 0.
    Broadcasts over leading axes (bootstrap resamples, CBPE's expected counts)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(2.0 * tp / (predicted + actual), dtype=np.float64)


def batched_f1(codes: I64, n_classes: int) -> F64:
    """Per-class F1 of each row of ``codes`` (``(m, n)`` of ``true * n_classes + pred``): ``(m, k)``.
    One bincount over all ``m`` rows (bootstrap resamples, simulated label draws)."""
    m, k = codes.shape[0], n_classes
    offsets = (np.arange(m, dtype=np.int64) * k * k)[:, None]
    counts = np.bincount((codes + offsets).ravel(), minlength=m * k * k).reshape(m, k, k)
    tp = np.diagonal(counts, axis1=1, axis2=2).astype(np.float64)
    return f1_from_counts(tp, counts.sum(axis=1).astype(np.float64), counts.sum(axis=2).astype(np.float64))


def ece_bins(confidence: F64, bins: int = ECE_BINS) -> I64:
    """The equal-width bin, closed on the right, of each confidence in [0, 1]."""
    return np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)


def calibration_error(confidence: F64, correct: F64, bins: int = ECE_BINS) -> float:
    """``sum_b |sum_{i in b} (correct_i - confidence_i)| / n`` over :func:`ece_bins` (the ECE when
    ``confidence`` is the top-class probability and ``correct`` whether the top class is right)."""
    gap = np.bincount(ece_bins(confidence, bins), weights=correct - confidence, minlength=bins)
    return float(np.abs(gap).sum() / confidence.size)


def _probability_metrics(truth: I64, p: F64) -> dict[str, float]:
    rows = np.arange(truth.size)
    true_p = p[rows, truth]
    log_loss = float(-np.log(np.maximum(true_p, LOG_LOSS_EPS)).mean())
    onehot_error = p.copy()
    onehot_error[rows, truth] -= 1.0
    brier = float((onehot_error**2).sum(axis=1).mean())
    correct = (p.argmax(axis=1) == truth).astype(np.float64)
    return {"log_loss": log_loss, "brier": brier, "ece": calibration_error(p.max(axis=1), correct)}


def check_labels(name: str, values: npt.ArrayLike, n_classes: int, *, rows: int | None = None) -> I64:
    """``values`` as int64 labels, checked: 1-D or ``(n, 1)``, integer-valued, in ``[0, n_classes)``,
    at least one row (and exactly ``rows``, when given). StatsError naming ``name`` otherwise."""
    if isinstance(n_classes, bool) or not isinstance(n_classes, int | np.integer) or n_classes < 2:
        raise StatsError(f"n_classes: expected an integer >= 2, got {n_classes!r}")
    column = _column(name, values, rows=rows)
    if column.dtype.kind == "f":
        if not np.isfinite(column).all() or (column != np.round(column)).any():
            raise StatsError(f"{name}: labels must be integers, got non-integer or non-finite values")
    elif column.dtype.kind not in "biu":
        raise StatsError(f"{name}: expected integer labels, got dtype {column.dtype}")
    if column.min() < 0 or column.max() >= n_classes:
        raise StatsError(f"{name}: labels must lie in [0, {n_classes}), got {column.min()}..{column.max()}")
    return column.astype(np.int64)


def check_proba(proba: npt.ArrayLike, n_classes: int, *, rows: int) -> F64:
    """``proba`` as float64 ``(rows, n_classes)``, checked finite, in [0, 1], rows summing to 1; for two
    classes a ``(rows,)`` or ``(rows, 1)`` positive-class probability is expanded to both columns."""
    p = np.asarray(proba)
    if p.dtype.kind not in "biuf":
        raise StatsError(f"proba: expected numbers, got dtype {p.dtype}")
    p = p.astype(np.float64)
    if n_classes == 2 and (p.ndim == 1 or (p.ndim == 2 and p.shape[1] == 1)):
        p = p.reshape(-1, 1)
        p = np.hstack([1.0 - p, p])
    if p.shape != (rows, n_classes):
        raise StatsError(f"proba: shape {list(p.shape)}, expected [{rows}, {n_classes}]")
    if not np.isfinite(p).all():
        raise StatsError("proba: NaN or infinite probabilities")
    if (p < 0.0).any() or (p > 1.0).any():
        raise StatsError("proba: probabilities must lie in [0, 1]")
    worst = float(np.abs(p.sum(axis=1) - 1.0).max())
    if worst > PROBA_SUM_TOLERANCE:
        raise StatsError(
            f"proba: rows must sum to 1 (within {PROBA_SUM_TOLERANCE}), worst is off by {worst:.3g}"
        )
    return p


def _column(name: str, values: npt.ArrayLike, *, rows: int | None = None) -> npt.NDArray[Any]:
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise StatsError(f"{name}: expected a 1-D array (or [n, 1]), got shape {list(array.shape)}")
    if array.size == 0:
        raise StatsError(f"{name}: no rows")
    if rows is not None and array.size != rows:
        raise StatsError(f"{name}: {array.size} rows, expected {rows} (as y_true)")
    return array
