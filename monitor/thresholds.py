"""Decision thresholds: the null-calibrated PSI cut and the Benjamini-Hochberg correction.

This module owns the two pieces of statistics the drift decisions need besides the kernels:

* :func:`psi_null_threshold`: under "no drift", PSI between a window of ``n`` values and a reference of
  ``m`` values over ``B`` bins is approximately ``(1/n + 1/m) * chi2(B - 1)``, so the cut
  ``chi2_{B-1}(1 - alpha) * (1/n + 1/m)`` false-alarms at about rate ``alpha`` whatever the window size
  (a fixed 0.1 or 0.2 false-alarms on small windows and misses drift on large ones). ``df = B - 1``.
* :func:`benjamini_hochberg`: step-up adjusted p-values across one version's features.

The chi-square quantile is solved from the regularized incomplete gamma function (series below
``a + 1``, Lentz's continued fraction above), in plain Python; scipy is a test-only dependency.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import numpy.typing as npt

__all__ = ["benjamini_hochberg", "chi2_isf", "gamma_q", "psi_null_threshold"]

_TINY = 1e-300


def psi_null_threshold(df: int, n: int, m: int, alpha: float) -> float:
    """``chi2_df(1 - alpha) * (1/n + 1/m)``; +inf when ``df < 1`` or a side has no value."""
    if df < 1 or n < 1 or m < 1:
        return math.inf
    return chi2_isf(alpha, df) * (1.0 / n + 1.0 / m)


@lru_cache(maxsize=256)
def chi2_isf(alpha: float, df: int) -> float:
    """The ``x`` with ``P(chi2_df > x) = alpha`` (scipy's ``chi2.isf``), to about 1e-13 relative."""
    if not 0.0 < alpha < 1.0 or df < 1:
        raise ValueError(f"need 0 < alpha < 1 and df >= 1, got {alpha}, {df}")
    a = df / 2.0
    lo, hi = 0.0, max(1.0, float(df))
    while gamma_q(a, hi / 2.0) > alpha:
        lo, hi = hi, hi * 2.0
    for _ in range(200):  # bisection: Q is decreasing in x
        mid = 0.5 * (lo + hi)
        if gamma_q(a, mid / 2.0) > alpha:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * hi:
            break
    return 0.5 * (lo + hi)


def gamma_q(a: float, x: float) -> float:
    """The regularized upper incomplete gamma function ``Q(a, x) = Gamma(a, x) / Gamma(a)``."""
    if x <= 0.0:
        return 1.0
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1.0:  # series for P(a, x)
        term = total = 1.0 / a
        k = a
        while abs(term) > abs(total) * 1e-17:
            k += 1.0
            term *= x / k
            total += term
        return max(0.0, 1.0 - total * math.exp(log_front))
    b = x + 1.0 - a  # continued fraction for Q(a, x) (modified Lentz)
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, 10000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return h * math.exp(log_front)


def benjamini_hochberg(pvalues: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Benjamini-Hochberg adjusted p-values (same order as given); NaN entries stay NaN and are not
    counted among the hypotheses."""
    p = np.asarray(pvalues, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    present = np.flatnonzero(~np.isnan(p))
    if present.size == 0:
        return adjusted
    order = present[np.argsort(p[present], kind="stable")]
    # p * (m / rank), in scipy's order of operations: a p-value exactly at its step-up threshold then
    # compares equal to alpha (p * m / rank rounds 0.1 * 6 / 3 up to 0.20000000000000004)
    ranked = p[order] * (present.size / np.arange(1, present.size + 1))
    adjusted[order] = np.minimum(1.0, np.minimum.accumulate(ranked[::-1])[::-1])
    return adjusted
