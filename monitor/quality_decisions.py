"""Quality decisions: is a window's realized quality worse than the version's baseline?

This module owns the verdict on one window of joined rows (:func:`judge_window`) against a baseline.
It is pure: numpy and :mod:`monitor.intervals` only. The choices, in order:

* **Metrics.** ``metrics`` when given, else every metric of :mod:`monitor.quality` for this kind of model
  (classifier or regressor) that the baseline has. A requested metric without a baseline is a
  StatsError; one the window cannot compute (a precision of a class never predicted, log loss without
  probabilities) is listed in ``skipped``.
* **Effect.** ``min_effect`` is absolute, in the metric's own units (0.02 = two points of accuracy): a
  float for every metric, or a mapping that must name each judged metric. The *threshold* is
  ``baseline - effect`` for a metric where higher is better and ``baseline + effect`` otherwise. ``bias``
  is judged by its magnitude: its threshold is ``|baseline| + effect``, exceeded on either side.
* **Test.** One-sided, ``H1``: the metric is worse than its threshold. The baseline is taken as a known
  constant (its own sampling error is not modelled). Proportions (``accuracy``, ``precision_<c>``:
  ``TP`` out of the rows predicted ``c``; ``recall_<c>``: ``TP`` out of the rows of true class ``c``) use
  the score test the Wilson interval inverts (:func:`monitor.intervals.score_test_less`); every other
  metric uses the percentile bootstrap of its rows (``resamples`` resamples, ``seed``):
  ``p = (1 + #{resamples not worse than the threshold}) / (1 + #{resamples where it is defined})``.
* **Multiplicity.** Benjamini-Hochberg at ``alpha`` across the judged metrics of the window.
* **Interval.** Wilson (proportions) or percentile bootstrap (others), two-sided at ``confidence``.
* **Verdict.** A metric is ``degraded`` when BH rejects it **and** its interval lies wholly on the worse
  side of the threshold (for ``bias``: wholly beyond ``+-threshold``); the window is degraded when any
  metric is. The interval condition makes the effect size matter at ``confidence`` even when ``alpha``
  is loose, and keeps a verdict readable: the interval shown is clear of the threshold shown.
* **Baseline.** Given by the caller: the version's ``validation.metrics`` from its manifest, else its own
  first windows; :mod:`monitor.quality_baseline` builds and chooses it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from monitor.errors import StatsError
from monitor.intervals import (
    benjamini_hochberg,
    bootstrap_distribution,
    check_confidence,
    percentile_interval,
    score_test_less,
    wilson_interval,
)
from monitor.quality import (
    ECE_BINS,
    HIGHER_IS_BETTER,
    LOG_LOSS_EPS,
    ClassifierQuality,
    RegressorQuality,
    batched_f1,
    check_labels,
    check_proba,
    classifier_quality,
    ece_bins,
    regressor_quality,
)

__all__ = [
    "JoinedRows",
    "MetricVerdict",
    "QualityVerdict",
    "judge_window",
]

F64 = npt.NDArray[np.float64]
_REGRESSOR_METRICS = frozenset({"mae", "rmse", "bias"})


@dataclass(frozen=True)
class JoinedRows:
    """A window's joined rows: ground truth, the model's prediction and, for a classifier, its
    probabilities (optional). ``n_classes`` None means a regressor."""

    y_true: npt.NDArray[Any]
    y_pred: npt.NDArray[Any]
    proba: npt.NDArray[Any] | None = None
    n_classes: int | None = None

    def quality(self) -> ClassifierQuality | RegressorQuality:
        """The realized quality of these rows (:mod:`monitor.quality`)."""
        if self.n_classes is None:
            return regressor_quality(self.y_true, self.y_pred)
        return classifier_quality(self.y_true, self.y_pred, self.proba, self.n_classes)


@dataclass(frozen=True)
class MetricVerdict:
    """One judged metric: ``value`` with its ``interval``, the ``baseline`` and the ``threshold``
    (baseline moved by the effect), the one-sided ``pvalue``, BH's ``rejected``, whether the interval is
    ``clear`` of the threshold on the worse side, and ``degraded = rejected and clear``."""

    name: str
    value: float
    interval: tuple[float, float]
    baseline: float
    threshold: float
    higher_is_better: bool
    method: str
    trials: int
    pvalue: float
    rejected: bool
    clear: bool

    @property
    def degraded(self) -> bool:
        """BH rejected "not worse" and the interval is clear of the threshold."""
        return self.rejected and self.clear

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN as None)."""
        return {
            "name": self.name,
            "value": _json(self.value),
            "interval": [_json(self.interval[0]), _json(self.interval[1])],
            "baseline": self.baseline,
            "threshold": self.threshold,
            "higher_is_better": self.higher_is_better,
            "method": self.method,
            "trials": self.trials,
            "pvalue": self.pvalue,
            "rejected": self.rejected,
            "degraded": self.degraded,
        }


@dataclass(frozen=True)
class QualityVerdict:
    """The verdict on a window: its realized ``quality``, each judged metric, and ``degraded``."""

    rows: int
    quality: ClassifierQuality | RegressorQuality
    metrics: tuple[MetricVerdict, ...]
    skipped: tuple[str, ...]
    alpha: float
    confidence: float

    @property
    def degraded(self) -> bool:
        """Some metric is degraded."""
        return any(m.degraded for m in self.metrics)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "rows": self.rows,
            "degraded": self.degraded,
            "alpha": self.alpha,
            "confidence": self.confidence,
            "metrics": [m.as_dict() for m in self.metrics],
            "skipped": list(self.skipped),
        }


def judge_window(
    rows: JoinedRows,
    baseline: Mapping[str, float],
    min_effect: float | Mapping[str, float],
    alpha: float,
    confidence: float,
    *,
    metrics: Collection[str] | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> QualityVerdict:
    """Judge ``rows`` against ``baseline`` (see the module docstring for every choice).

    StatsError for invalid rows (as :mod:`monitor.quality`), an ``alpha``/``confidence`` outside (0, 1),
    a negative or missing effect, or a requested metric without a baseline.
    """
    level = check_confidence(confidence)
    quality = rows.quality()
    values = quality.as_dict()
    regressor = isinstance(quality, RegressorQuality)
    kind = [m for m in baseline if m in HIGHER_IS_BETTER and (m in _REGRESSOR_METRICS) == regressor]
    wanted = set(kind) if metrics is None else set(metrics)
    unknown = sorted(m for m in wanted if m not in HIGHER_IS_BETTER or m not in baseline)
    if unknown:
        raise StatsError(f"metrics {unknown}: no baseline value (or not a quality metric)")
    names = sorted(m for m in wanted if m in values)
    skipped = tuple(sorted(wanted - set(names)))
    tests = _Tests(rows, quality, resamples, seed)
    partial = [tests.judge(name, float(baseline[name]), _effect(min_effect, name), level) for name in names]
    pvalues = np.array([v.pvalue for v in partial], dtype=np.float64)
    rejected = benjamini_hochberg(pvalues, alpha) if partial else np.zeros(0, dtype=np.bool_)
    verdicts = tuple(replace(v, rejected=bool(r)) for v, r in zip(partial, rejected, strict=True))
    return QualityVerdict(quality.rows, quality, verdicts, skipped, float(alpha), level)


def _effect(min_effect: float | Mapping[str, float], name: str) -> float:
    if isinstance(min_effect, Mapping):
        if name not in min_effect:
            raise StatsError(f"min_effect: no effect size for metric {name!r}")
        effect = min_effect[name]
    else:
        effect = min_effect
    if isinstance(effect, bool) or not isinstance(effect, int | float) or not effect >= 0.0:
        raise StatsError(f"min_effect for {name!r}: expected a finite number >= 0, got {effect!r}")
    if not math.isfinite(effect):
        raise StatsError(f"min_effect for {name!r}: expected a finite number >= 0, got {effect!r}")
    return float(effect)


class _Tests:
    """The per-metric tests of one window: proportions from counts, the rest by bootstrap of per-row
    arrays (computed once per window)."""

    def __init__(
        self, rows: JoinedRows, quality: ClassifierQuality | RegressorQuality, resamples: int, seed: int
    ):
        self.quality = quality
        self.resamples = resamples
        self.seed = seed
        self.statistics: dict[str, tuple[tuple[npt.NDArray[Any], ...], Callable[..., F64]]] = {}
        if isinstance(quality, RegressorQuality):
            residual = (
                np.asarray(rows.y_pred, dtype=np.float64).ravel()
                - np.asarray(rows.y_true, dtype=np.float64).ravel()
            )
            self.statistics["mae"] = ((np.abs(residual),), lambda a: a.mean(axis=1))
            self.statistics["rmse"] = ((residual**2,), lambda a: np.sqrt(a.mean(axis=1)))
            self.statistics["bias"] = ((residual,), lambda a: a.mean(axis=1))
            return
        k = quality.n_classes
        truth = check_labels("y_true", rows.y_true, k)
        pred = check_labels("y_pred", rows.y_pred, k, rows=truth.size)
        self.counts = np.bincount(truth * k + pred, minlength=k * k).reshape(k, k)
        codes = truth * k + pred
        self.statistics["f1_macro"] = ((codes,), lambda c: np.nanmean(batched_f1(c, k), axis=1))
        for c in range(k):
            self.statistics[f"f1_{c}"] = ((codes,), lambda a, c=c: batched_f1(a, k)[:, c])
        if rows.proba is not None:
            p = check_proba(rows.proba, k, rows=truth.size)
            true_p = p[np.arange(truth.size), truth]
            loss = -np.log(np.maximum(true_p, LOG_LOSS_EPS))
            brier = (p**2).sum(axis=1) - 2.0 * true_p + 1.0
            conf = p.max(axis=1)
            correct = (p.argmax(axis=1) == truth).astype(np.float64)
            index = ece_bins(conf)
            self.statistics["log_loss"] = ((loss,), lambda a: a.mean(axis=1))
            self.statistics["brier"] = ((brier,), lambda a: a.mean(axis=1))
            self.statistics["ece"] = ((index, correct - conf), _resampled_ece)

    def judge(self, name: str, baseline: float, effect: float, confidence: float) -> MetricVerdict:
        higher = HIGHER_IS_BETTER[name]
        value = self.quality.as_dict()[name]
        if name == "bias":
            threshold = abs(baseline) + effect
        else:
            threshold = baseline - effect if higher else baseline + effect
        proportion = self._proportion(name)
        if proportion is not None:
            successes, trials = proportion
            interval = wilson_interval(successes, trials, confidence)
            pvalue = score_test_less(successes, trials, threshold)
            method = "wilson"
        else:
            arrays, statistic = self.statistics[name]
            trials = int(arrays[0].shape[0])
            distribution = bootstrap_distribution(arrays, statistic, self.resamples, self.seed)
            interval = percentile_interval(distribution, confidence)
            finite = distribution[~np.isnan(distribution)]
            if name == "bias":
                not_worse = int((np.abs(finite) <= threshold).sum())
            else:
                not_worse = int((finite >= threshold).sum() if higher else (finite <= threshold).sum())
            pvalue = (1.0 + not_worse) / (finite.size + 1.0)
            method = "bootstrap"
        if name == "bias":
            clear = interval[0] > threshold or interval[1] < -threshold
        else:
            clear = interval[1] < threshold if higher else interval[0] > threshold
        return MetricVerdict(
            name, value, interval, baseline, threshold, higher, method, trials, pvalue, False, bool(clear)
        )

    def _proportion(self, name: str) -> tuple[int, int] | None:
        if not isinstance(self.quality, ClassifierQuality):
            return None
        counts = self.counts
        if name == "accuracy":
            return int(np.trace(counts)), int(counts.sum())
        kind, _, c = name.partition("_")
        if kind == "precision":
            return int(counts[int(c), int(c)]), int(counts[:, int(c)].sum())
        if kind == "recall":
            return int(counts[int(c), int(c)]), int(counts[int(c), :].sum())
        return None


def _resampled_ece(index: npt.NDArray[np.int64], gap: F64) -> F64:
    """ECE of each resample from per-row bin ``index`` and ``correct - confidence``, both ``(m, n)``."""
    m, n = index.shape
    offsets = (np.arange(m, dtype=np.int64) * ECE_BINS)[:, None]
    sums = np.bincount((index + offsets).ravel(), weights=gap.ravel(), minlength=m * ECE_BINS)
    return np.asarray(np.abs(sums.reshape(m, ECE_BINS)).sum(axis=1) / n, dtype=np.float64)


def _json(value: float) -> float | None:
    return None if math.isnan(value) else value
