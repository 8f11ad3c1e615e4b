"""The calibrator behind CBPE (:mod:`monitor.cbpe`): how far a version's probabilities can be trusted.

Fitted on the version's labelled reference rows (``label:<name>`` in ``reference.npz``). Pure numpy; the
choices:

* **Fit.** The reference rows are split at random (``seed``) into a fit part and a held-out part
  (``holdout``, 30% by default). On the fit part each class's probability is calibrated one-vs-rest (two
  classes: the positive class only, and ``P(0) = 1 - P(1)``): histogram binning on equal-mass bins
  (``n_fit // 100`` of them, 2 to 20), pool-adjacent-violators over the bins so the map is
  non-decreasing, then linear interpolation between the bins' (mean probability, share of positives),
  flat beyond the end bins. For three or more classes the calibrated row is renormalised to sum to 1.
  ``method="none"`` keeps the model's own probabilities (and still measures them).
* **Held-out diagnostics.** On the held-out part: the gap between expected and realized accuracy, and
  between expected and realized macro F1, with their sampling spread; and the calibration error (ECE of
  the calibrated confidence of the predicted class, :func:`monitor.quality.calibration_error`), less
  its mean under perfect calibration (simulated from the calibrated probabilities): the debiased ECE.
  The calibrator is ``reliable`` when that debiased ECE is at most ``max_calibration_error`` (0.05)
  and the held-out part has at least :data:`MIN_HOLDOUT_ROWS` rows.

Also the expected-count arithmetic both sides share: :func:`expected_f1`, :func:`draw_labels`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from monitor.errors import StatsError
from monitor.quality import (
    ECE_BINS,
    batched_f1,
    calibration_error,
    check_labels,
    check_proba,
    ece_bins,
    f1_from_counts,
)

__all__ = [
    "MIN_HOLDOUT_ROWS",
    "Calibrator",
    "draw_labels",
    "expected_f1",
    "f1_spread",
    "fit_calibrator",
    "macro_f1",
    "proba_rows",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

MIN_HOLDOUT_ROWS = 100
"""A calibrator checked on fewer held-out rows is never ``reliable``."""
_MIN_FIT_ROWS = 20
_SIMULATION_CHUNK_VALUES = 1 << 22


@dataclass(frozen=True, eq=False)
class Calibrator:
    """Per calibrated column ``j`` (the positive class for two classes, else every class), the knots
    ``(knots_x[j], knots_y[j])`` of a non-decreasing piecewise-linear map; and the held-out diagnostics.
    Compared by identity (it holds arrays)."""

    n_classes: int
    knots_x: tuple[F64, ...]
    knots_y: tuple[F64, ...]
    fit_rows: int
    holdout_rows: int
    holdout_ece: float
    """Debiased ECE of the calibrated predicted-class confidence on the held-out part."""
    accuracy_error: float
    """``sqrt(gap^2 + spread^2)`` of expected against realized accuracy on the held-out part."""
    f1_error: float
    """The same for macro F1."""
    max_calibration_error: float

    @property
    def reliable(self) -> bool:
        """Held-out debiased ECE within ``max_calibration_error``, on enough held-out rows."""
        return self.holdout_rows >= MIN_HOLDOUT_ROWS and self.holdout_ece <= self.max_calibration_error

    def calibrate(self, proba: npt.ArrayLike) -> F64:
        """Calibrated probabilities, ``(n, n_classes)`` rows summing to 1 (``proba`` as
        :func:`monitor.quality.check_proba` takes it; StatsError if invalid)."""
        p = check_proba(proba, self.n_classes, rows=proba_rows(proba))
        return self._apply(p)

    def _apply(self, p: F64) -> F64:
        if self.n_classes == 2:
            q1 = np.interp(p[:, 1], self.knots_x[0], self.knots_y[0])
            return np.column_stack([1.0 - q1, q1])
        q = np.column_stack(
            [
                np.interp(p[:, j], x, y)
                for j, (x, y) in enumerate(zip(self.knots_x, self.knots_y, strict=True))
            ]
        )
        total = q.sum(axis=1, keepdims=True)
        return np.where(total > 0.0, q / np.where(total > 0.0, total, 1.0), p)


def fit_calibrator(
    proba_ref: npt.ArrayLike,
    y_ref: npt.ArrayLike,
    *,
    n_classes: int | None = None,
    holdout: float = 0.3,
    seed: int = 0,
    method: str = "binning",
    max_calibration_error: float = 0.05,
    simulations: int = 200,
) -> Calibrator:
    """Fit a calibrator on labelled reference rows (see the module docstring).

    ``proba_ref`` ``(n, k)`` (``k`` is ``n_classes``, which defaults to ``proba_ref.shape[1]``; for two
    classes a positive-class column also works), ``y_ref`` labels in ``[0, k)``. StatsError for invalid
    arrays, an unknown ``method``, or fewer than 20 rows on either side of the split.
    """
    shape = np.shape(proba_ref)
    k = n_classes if n_classes is not None else (shape[1] if len(shape) == 2 and shape[1] > 1 else 2)
    y = check_labels("y_ref", y_ref, k)
    p = check_proba(proba_ref, k, rows=y.size)
    if method not in ("binning", "none"):
        raise StatsError(f"method: expected 'binning' or 'none', got {method!r}")
    if not 0.0 < holdout < 1.0:
        raise StatsError(f"holdout: expected a fraction in (0, 1), got {holdout!r}")
    held = round(y.size * holdout)
    if held < _MIN_FIT_ROWS or y.size - held < _MIN_FIT_ROWS:
        raise StatsError(
            f"fit_calibrator: {y.size} reference rows, need {_MIN_FIT_ROWS} on each side of the split"
        )
    order = np.random.default_rng(seed).permutation(y.size)
    fit, test = order[held:], order[:held]
    columns = [1] if k == 2 else list(range(k))
    knots = [_fit_column(p[fit, j], y[fit] == j, method) for j in columns]
    draft = Calibrator(
        k, tuple(x for x, _ in knots), tuple(v for _, v in knots), fit.size, held, 0.0, 0.0, 0.0, 1.0
    )
    q = draft._apply(p[test])
    pred = p[test].argmax(axis=1)
    correct = (pred == y[test]).astype(np.float64)
    confidence = q[np.arange(held), pred]
    rng = np.random.default_rng([seed, 1])
    draws = draw_labels(q, simulations, rng)
    null_ece = _batched_calibration_error(confidence, (draws == pred[None, :]).astype(np.float64)).mean()
    debiased = max(0.0, calibration_error(confidence, correct) - float(null_ece))
    accuracy_gap = float(correct.mean() - confidence.mean())
    accuracy_spread = math.sqrt(float((confidence * (1.0 - confidence)).sum())) / held
    f1_gap = expected_f1(q, pred) - float(macro_f1(batched_f1((y[test] * k + pred)[None, :], k))[0])
    return Calibrator(
        k,
        draft.knots_x,
        draft.knots_y,
        fit.size,
        held,
        debiased,
        math.hypot(accuracy_gap, accuracy_spread),
        math.hypot(f1_gap, f1_spread(draws, pred, k)),
        float(max_calibration_error),
    )


def proba_rows(proba: npt.ArrayLike) -> int:
    shape = np.shape(proba)
    if not shape:
        raise StatsError("proba: expected an array with a row axis")
    if shape[0] == 0:
        raise StatsError("proba: no rows")
    return int(shape[0])


def _fit_column(p: F64, positive: npt.NDArray[np.bool_], method: str) -> tuple[F64, F64]:
    """Knots of a non-decreasing map from ``p`` to the share of positives (identity for ``none``)."""
    if method == "none":
        return np.array([0.0, 1.0]), np.array([0.0, 1.0])
    bins = min(20, max(2, p.size // 100))
    edges = np.unique(np.quantile(p, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    index = np.searchsorted(edges, p, side="right")
    counts = np.bincount(index, minlength=edges.size + 1).astype(np.float64)
    sums = np.bincount(index, weights=p, minlength=edges.size + 1)
    hits = np.bincount(index, weights=positive.astype(np.float64), minlength=edges.size + 1)
    used = counts > 0
    x, y, w = sums[used] / counts[used], hits[used] / counts[used], counts[used]
    y = _pool_adjacent_violators(y, w)
    if x.size == 1:  # every probability equal: a constant map
        return np.array([0.0, 1.0]), np.array([y[0], y[0]])
    return x, y


def _pool_adjacent_violators(y: F64, w: F64) -> F64:
    """The weighted non-decreasing fit of ``y`` (at most 20 bins: a loop over bins, not rows)."""
    blocks: list[list[float]] = []  # [mean, weight, count]
    for value, weight in zip(y.tolist(), w.tolist(), strict=True):
        blocks.append([value, weight, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            mean_b, weight_b, count_b = blocks.pop()
            mean_a, weight_a, count_a = blocks.pop()
            total = weight_a + weight_b
            blocks.append([(mean_a * weight_a + mean_b * weight_b) / total, total, count_a + count_b])
    return np.repeat([b[0] for b in blocks], [int(b[2]) for b in blocks]).astype(np.float64)


def draw_labels(q: F64, simulations: int, rng: np.random.Generator) -> I64:
    """``simulations`` label vectors drawn row-wise from the probabilities ``q``: ``(simulations, n)``."""
    if isinstance(simulations, bool) or not isinstance(simulations, int) or simulations < 2:
        raise StatsError(f"simulations: expected an integer >= 2, got {simulations!r}")
    n, k = q.shape
    upper = np.cumsum(q, axis=1)[:, :-1]  # (n, k-1)
    out = np.empty((simulations, n), dtype=np.int64)
    step = max(1, _SIMULATION_CHUNK_VALUES // (n * k))
    for start in range(0, simulations, step):
        m = min(step, simulations - start)
        u = rng.random((m, n, 1))
        out[start : start + m] = (u >= upper[None, :, :]).sum(axis=2)
    return out


def _batched_calibration_error(confidence: F64, correct: F64) -> F64:
    """:func:`monitor.quality.calibration_error` of each row of ``correct`` ``(m, n)`` against one
    ``confidence`` ``(n,)``."""
    m, n = correct.shape
    index = ece_bins(confidence)[None, :] + (np.arange(m, dtype=np.int64) * ECE_BINS)[:, None]
    gap = np.bincount(index.ravel(), weights=(correct - confidence[None, :]).ravel(), minlength=m * ECE_BINS)
    return np.asarray(np.abs(gap.reshape(m, ECE_BINS)).sum(axis=1) / n, dtype=np.float64)


def expected_f1(q: F64, pred: I64) -> float:
    """Macro F1 from expected confusion counts: ``TP_c = sum_{pred=c} q_c``, ``actual_c = sum q_c``."""
    k = q.shape[1]
    tp = np.bincount(pred, weights=q[np.arange(pred.size), pred], minlength=k).astype(np.float64)
    predicted = np.bincount(pred, minlength=k).astype(np.float64)
    return float(macro_f1(f1_from_counts(tp, predicted, q.sum(axis=0))[None, :])[0])


def f1_spread(draws: I64, pred: I64, n_classes: int) -> float:
    """The standard deviation of the macro F1 of ``pred`` over simulated label vectors ``draws``."""
    return float(np.std(macro_f1(batched_f1(draws * n_classes + pred[None, :], n_classes))))


def macro_f1(f1: F64) -> F64:
    """Mean over classes of ``(m, k)`` per-class F1, NaN classes left out."""
    defined = ~np.isnan(f1)
    return np.asarray(
        np.where(defined, f1, 0.0).sum(axis=1) / np.maximum(defined.sum(axis=1), 1), dtype=np.float64
    )
