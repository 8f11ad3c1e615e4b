"""Confidence intervals and multiple testing for the monitor's quality decisions (numpy and math only).

* :func:`wilson_interval`: the Wilson score interval of a binomial proportion (scipy's
  ``binomtest(k, n).proportion_ci(method="wilson")``), and :func:`score_test_less`, the one-sided score
  test that it inverts: ``H0: p >= p0`` is rejected at level ``a`` exactly when ``p0`` lies above the
  upper end of the Wilson interval of confidence ``1 - 2a``.
* :func:`bootstrap_distribution` / :func:`bootstrap_interval`: the percentile bootstrap, vectorised: the
  statistic sees ``(resamples, n)`` arrays (rows resampled jointly across aligned arrays) and returns one
  value per resample. Deterministic for a seed: ``numpy.random.default_rng(seed)`` draws the row indices
  in chunks of at most :data:`BOOTSTRAP_CHUNK_VALUES` indices, in order.
* :func:`benjamini_hochberg`: the BH step-up procedure as a rejection mask (adjusted p-values, as
  scipy's ``false_discovery_control``, from :func:`monitor.thresholds.benjamini_hochberg`, at most
  ``alpha``).
* :func:`normal_cdf` / :func:`normal_ppf`: the standard normal, without scipy (Acklam's rational
  approximation polished by one Halley step on ``math.erfc``: relative error near 1e-15).

Bad arguments raise :class:`monitor.errors.StatsError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from monitor.errors import StatsError
from monitor.thresholds import benjamini_hochberg as adjusted_pvalues

__all__ = [
    "BOOTSTRAP_CHUNK_VALUES",
    "benjamini_hochberg",
    "bootstrap_distribution",
    "bootstrap_interval",
    "check_confidence",
    "normal_cdf",
    "normal_ppf",
    "percentile_interval",
    "score_test_less",
    "wilson_interval",
]

F64 = npt.NDArray[np.float64]
Statistic = Callable[..., npt.NDArray[Any]]

BOOTSTRAP_CHUNK_VALUES = 1 << 22
"""At most this many resampled row indices are held at once (32 MiB of int64)."""

_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
      -3.066479806614716e01, 2.506628277459239e00)  # fmt: skip
_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
      -1.328068155288572e01)  # fmt: skip
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
      4.374664141464968e00, 2.938163982698783e00)  # fmt: skip
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)


def normal_cdf(x: float) -> float:
    """``P(Z <= x)`` for a standard normal ``Z``."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def normal_ppf(q: float) -> float:
    """The ``q`` quantile of the standard normal, ``0 < q < 1``."""
    if not 0.0 < q < 1.0:
        raise StatsError(f"normal quantile: q must lie in (0, 1), got {q}")
    if q > 0.5:  # 1 - q is exact here (Sterbenz), and the lower tail keeps its precision
        return -normal_ppf(1.0 - q)
    low = 0.02425
    if q < low:
        t = math.sqrt(-2.0 * math.log(q))
        x = (((((_C[0] * t + _C[1]) * t + _C[2]) * t + _C[3]) * t + _C[4]) * t + _C[5]) / (
            (((_D[0] * t + _D[1]) * t + _D[2]) * t + _D[3]) * t + 1.0
        )
    else:
        r = q - 0.5
        s = r * r
        x = (
            (((((_A[0] * s + _A[1]) * s + _A[2]) * s + _A[3]) * s + _A[4]) * s + _A[5])
            * r
            / (((((_B[0] * s + _B[1]) * s + _B[2]) * s + _B[3]) * s + _B[4]) * s + 1.0)
        )
    error = normal_cdf(x) - q  # one Halley step
    u = error * math.sqrt(2.0 * math.pi) * math.exp(x * x / 2.0)
    return x - u / (1.0 + x * u / 2.0)


def check_confidence(confidence: float) -> float:
    """``confidence`` as a float in (0, 1); StatsError otherwise."""
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0.0 < confidence < 1.0:
        raise StatsError(f"confidence: expected a number in (0, 1), got {confidence!r}")
    return float(confidence)


def _check_counts(successes: int, n: int) -> None:
    for name, value in (("successes", successes), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise StatsError(f"{name}: expected an integer, got {value!r}")
    if n < 1:
        raise StatsError(f"n: expected at least one trial, got {n}")
    if not 0 <= successes <= n:
        raise StatsError(f"successes: expected 0..{n}, got {successes}")


def wilson_interval(successes: int, n: int, confidence: float) -> tuple[float, float]:
    """The two-sided Wilson score interval of ``successes / n`` at ``confidence``; exactly 0 (1) at
    its lower (upper) end when there are no successes (failures)."""
    _check_counts(successes, n)
    z = normal_ppf(0.5 + check_confidence(confidence) / 2.0)
    p = successes / n
    z2n = z * z / n
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n))
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def score_test_less(successes: int, n: int, p0: float) -> float:
    """One-sided p-value of ``H1: p < p0`` by the score test ``z = (p_hat - p0) / sqrt(p0 (1 - p0) / n)``,
    the test the Wilson interval inverts. ``p0 <= 0``: 1 (nothing is below 0); ``p0 >= 1``: 0 when any
    trial failed (impossible under ``p = 1``), else 1."""
    _check_counts(successes, n)
    if p0 <= 0.0:
        return 1.0
    if p0 >= 1.0:
        return 0.0 if successes < n else 1.0
    z = (successes / n - p0) / math.sqrt(p0 * (1.0 - p0) / n)
    return normal_cdf(z)


def bootstrap_distribution(
    per_row: npt.ArrayLike | tuple[npt.ArrayLike, ...],
    statistic: Statistic,
    resamples: int,
    seed: int,
) -> F64:
    """The statistic over ``resamples`` bootstrap resamples of the rows of ``per_row``.

    ``per_row``: one array or a tuple of arrays aligned on axis 0 (``n >= 1`` rows each), resampled
    jointly. ``statistic(*resampled)`` gets arrays of shape ``(m, n, ...)`` (``m`` resamples at a time)
    and returns ``m`` values. Returns float64 ``(resamples,)``; NaN where the statistic is undefined.
    """
    arrays = tuple(np.asarray(a) for a in (per_row if isinstance(per_row, tuple) else (per_row,)))
    if not arrays or any(a.ndim == 0 for a in arrays):
        raise StatsError("bootstrap: expected one or more arrays with a row axis")
    n = arrays[0].shape[0]
    if n < 1 or any(a.shape[0] != n for a in arrays):
        raise StatsError(
            f"bootstrap: arrays need the same positive row count, got {[a.shape[0] for a in arrays]}"
        )
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise StatsError(f"bootstrap: resamples must be a positive integer, got {resamples!r}")
    rng = np.random.default_rng(seed)
    out = np.empty(resamples, dtype=np.float64)
    step = max(1, BOOTSTRAP_CHUNK_VALUES // n)
    for start in range(0, resamples, step):
        m = min(step, resamples - start)
        index = rng.integers(0, n, size=(m, n))
        values = np.asarray(statistic(*(a[index] for a in arrays)), dtype=np.float64)
        if values.shape != (m,):
            raise StatsError(f"bootstrap: the statistic returned shape {list(values.shape)}, expected [{m}]")
        out[start : start + m] = values
    return out


def bootstrap_interval(
    per_row: npt.ArrayLike | tuple[npt.ArrayLike, ...],
    statistic: Statistic,
    confidence: float,
    resamples: int,
    seed: int,
) -> tuple[float, float]:
    """The percentile bootstrap interval at ``confidence`` (linear interpolation between order
    statistics, as numpy's and scipy's percentile method). Resamples where the statistic is NaN are
    left out; (NaN, NaN) when all are."""
    level = check_confidence(confidence)
    return percentile_interval(bootstrap_distribution(per_row, statistic, resamples, seed), level)


def percentile_interval(distribution: F64, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` percentile interval of the finite values of ``distribution``."""
    values = distribution[~np.isnan(distribution)]
    if values.size == 0:
        return math.nan, math.nan
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def benjamini_hochberg(pvalues: npt.ArrayLike, alpha: float) -> npt.NDArray[np.bool_]:
    """Which hypotheses the Benjamini-Hochberg step-up procedure rejects at false discovery rate
    ``alpha``: all ``i`` with ``p_i <= p_(k)``, ``k`` the largest rank with ``p_(k) <= k alpha / m``.
    ``pvalues``: 1-D, each in [0, 1] (StatsError for NaN or out of range); empty gives empty."""
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise StatsError(f"pvalues: expected a 1-D array, got shape {list(p.shape)}")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 < alpha < 1.0:
        raise StatsError(f"alpha: expected a number in (0, 1), got {alpha!r}")
    if np.isnan(p).any() or (p < 0.0).any() or (p > 1.0).any():
        raise StatsError("pvalues: each must be a number in [0, 1]")
    return np.asarray(adjusted_pvalues(p) <= alpha, dtype=np.bool_)
