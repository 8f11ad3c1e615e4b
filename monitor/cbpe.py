"""Quality estimated before labels arrive: confidence-based performance estimation (CBPE).

In the spirit of NannyML's CBPE: when a classifier's probabilities are calibrated, the probability it
gives its predicted class is the chance that prediction is right, so a window's expected accuracy and
expected confusion counts follow from its probabilities alone. Calibration is learned on the version's
labelled reference rows. Pure numpy; the choices:

* **Calibrator** (:func:`fit_calibrator`, :mod:`monitor.calibration`): fitted on part of the labelled
  reference, checked on the rest; ``reliable`` when its held-out calibration error is small.
* **Estimate** (:func:`estimate`). The predicted class is the argmax of the model's probabilities (ties
  to the lower class, as ONNX ArgMax). Expected accuracy: the mean calibrated probability of the
  predicted class. Expected macro F1: F1 per class from expected confusion counts (``TP_c`` the summed
  calibrated probability of ``c`` over rows predicted ``c``; ``actual_c`` its sum over all rows), the mean
  over classes where it is defined. Each has a stated error, a half-width at ``confidence``:
  ``z * sqrt(s_window^2 + s_fit^2)``, where ``s_window`` is the spread of the realized value given the
  calibrated probabilities (for accuracy ``sqrt(sum q(1-q)) / n``; for F1 the standard deviation over
  ``simulations`` label draws from them) and ``s_fit`` the calibrator's held-out error
  (``sqrt(gap^2 + spread^2)``). CBPE assumes no concept drift: when ``P(y|x)`` moves, the estimate is
  wrong and only labels show it (:func:`estimate_error` measures exactly that).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from monitor.calibration import (
    MIN_HOLDOUT_ROWS,
    Calibrator,
    draw_labels,
    expected_f1,
    f1_spread,
    fit_calibrator,
    proba_rows,
)
from monitor.errors import StatsError
from monitor.intervals import check_confidence, normal_ppf
from monitor.quality import ClassifierQuality, check_proba

__all__ = [
    "MIN_HOLDOUT_ROWS",
    "Calibrator",
    "Estimate",
    "estimate",
    "estimate_error",
    "fit_calibrator",
]


@dataclass(frozen=True)
class Estimate:
    """Expected quality of a window without labels, each with its stated error (half-width at
    ``confidence``), and whether the calibrator behind it is ``reliable``."""

    rows: int
    accuracy: float
    accuracy_error: float
    f1_macro: float
    f1_macro_error: float
    reliable: bool
    confidence: float

    def as_dict(self) -> dict[str, float | bool]:
        """Flat, JSON-ready."""
        return {
            "rows": self.rows,
            "accuracy": self.accuracy,
            "accuracy_error": self.accuracy_error,
            "f1_macro": self.f1_macro,
            "f1_macro_error": self.f1_macro_error,
            "reliable": self.reliable,
            "confidence": self.confidence,
        }


def estimate(
    calibrator: Calibrator,
    proba_window: npt.ArrayLike,
    *,
    confidence: float = 0.95,
    simulations: int = 200,
    seed: int = 0,
) -> Estimate:
    """Expected accuracy and macro F1 of a window from its probabilities (see the module docstring).
    Deterministic for a ``seed``. StatsError for invalid probabilities."""
    level = check_confidence(confidence)
    p = check_proba(proba_window, calibrator.n_classes, rows=proba_rows(proba_window))
    n = p.shape[0]
    q = calibrator.calibrate(p)
    pred = p.argmax(axis=1)
    conf = q[np.arange(n), pred]
    z = normal_ppf(0.5 + level / 2.0)
    accuracy_spread = math.sqrt(float((conf * (1.0 - conf)).sum())) / n
    draws = draw_labels(q, simulations, np.random.default_rng(seed))
    spread = f1_spread(draws, pred, calibrator.n_classes)
    return Estimate(
        rows=n,
        accuracy=float(conf.mean()),
        accuracy_error=z * math.hypot(accuracy_spread, calibrator.accuracy_error),
        f1_macro=expected_f1(q, pred),
        f1_macro_error=z * math.hypot(spread, calibrator.f1_error),
        reliable=calibrator.reliable,
        confidence=level,
    )


def estimate_error(estimate: Estimate, realized: ClassifierQuality) -> dict[str, float | bool]:
    """The estimate against the realized quality of the same window: for ``accuracy`` and ``f1_macro``,
    ``<m>_estimate``, ``<m>_realized``, ``<m>_difference`` (estimate minus realized) and ``<m>_within``
    (``|difference| <= <m>_error``); and ``reliable``. StatsError if the row counts differ."""
    if estimate.rows != realized.rows:
        raise StatsError(f"estimate over {estimate.rows} rows, realized over {realized.rows}")
    out: dict[str, float | bool] = {"reliable": estimate.reliable}
    for name, value, error, actual in (
        ("accuracy", estimate.accuracy, estimate.accuracy_error, realized.accuracy),
        ("f1_macro", estimate.f1_macro, estimate.f1_macro_error, realized.f1_macro),
    ):
        out[f"{name}_estimate"] = value
        out[f"{name}_realized"] = actual
        out[f"{name}_difference"] = value - actual
        out[f"{name}_error"] = error
        out[f"{name}_within"] = bool(abs(value - actual) <= error)
    return out
