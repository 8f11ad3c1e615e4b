"""KS p-values: the two-sample test's p-value as scipy's ``ks_2samp(method="auto")`` computes it.

This module owns the step from an exact KS statistic to its p-value in the audit path of the drift
engine. The statistic comes from :func:`monitor.stats.ks_exact` as an integer ``imax`` with
``D = imax / (n1 * n2)``; then, as scipy does:

* ``max(n1, n2) <= 10000``: the exact p-value, ``P(D >= h / lcm)`` with ``h = imax / gcd``, by
  :func:`monitor.stats.ks_exact_pvalue` (a closed-form sum for equal sizes, else the lattice-path
  recursion). When that recursion would take more than
  :data:`EXACT_MAX_STEPS` steps and the limiting distribution puts the p-value below 1e-12, the limiting
  value is returned instead (both are then far below any usable alpha, and within 1e-6 of scipy's).
* otherwise: ``kstwo.sf(D, round(n1 * n2 / (n1 + n2)))``, the one-sample two-sided KS distribution,
  evaluated with the methods scipy picks (Simard and L'Ecuyer, 2011): closed forms near the ends,
  the Durbin matrix (Marsaglia, Tsang and Wang, 2003), Pelz and Good's asymptotic series, and twice
  the exact one-sided Smirnov tail (Birnbaum and Tingey's sum) for large ``n x^2``.

Plain numpy and math: the only heavy loop (the exact recursion) lives in :mod:`monitor.stats`.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

from monitor.stats import ks_exact_pvalues

__all__ = [
    "EXACT_MAX_STEPS",
    "MAX_EXACT_N",
    "kolmogorov_sf",
    "ks_2samp_pvalue",
    "ks_2samp_pvalues",
    "kstwo_sf",
    "smirnov_sf",
]

MAX_EXACT_N = 10000
"""scipy's 'auto' uses the exact distribution when both samples have at most this many values."""
EXACT_MAX_STEPS = 4_000_000
"""Above this many recursion steps a p-value the limiting law puts below 1e-12 is not refined."""
THREADED_TERMS = 1_000_000
"""Asymptotic p-values are computed by several threads when their Smirnov sums total this many terms."""
_THREADS = min(4, os.cpu_count() or 1)
_LOG_2PI = math.log(2 * math.pi)
_PI2 = math.pi**2


def ks_2samp_pvalue(imax: int, n1: int, n2: int) -> tuple[float, float]:
    """``(statistic, pvalue)`` for ``D = imax / (n1 * n2)``, matching ``scipy.stats.ks_2samp``'s 'auto'."""
    d, p = ks_2samp_pvalues(np.array([imax]), np.array([n1]), np.array([n2]))
    return float(d[0]), float(p[0])


def ks_2samp_pvalues(
    imax: npt.ArrayLike, n1: npt.ArrayLike, n2: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """:func:`ks_2samp_pvalue` for many features; the exact recursions run in parallel."""
    im, a, b = (np.asarray(v, dtype=np.int64).reshape(-1) for v in (imax, n1, n2))
    if np.any(a < 1) or np.any(b < 1) or np.any(im < 0) or np.any(im > a * b):
        raise ValueError("need n1, n2 >= 1 and 0 <= imax <= n1 * n2")
    d = im / (a * b)
    p = np.full(im.size, np.nan)
    exact, asymptotic = [], []
    for f in range(im.size):
        n_1, n_2 = int(a[f]), int(b[f])
        if max(n_1, n_2) > MAX_EXACT_N:
            big, small = float(max(n_1, n_2)), float(min(n_1, n_2))
            asymptotic.append((f, round(big * small / (big + small))))
            continue
        g = math.gcd(n_1, n_2)
        h = int(im[f]) // g  # |c * n2 - j * n1| is a multiple of gcd(n1, n2)
        d[f] = h / ((n_1 // g) * n_2)
        band = min(min(n_1, n_2) + 1, 2 * h // (max(n_1, n_2) // g) + 2)
        steps = n_1 if n_1 == n_2 else max(n_1, n_2) * band  # equal sizes: a closed-form sum
        limit = kolmogorov_sf(math.sqrt(n_1 * n_2 / (n_1 + n_2)) * float(d[f]))
        if h > 0 and steps > EXACT_MAX_STEPS and limit < 1e-12:
            p[f] = limit
        else:
            exact.append((f, h))
    if exact:
        rows = np.array([f for f, _ in exact])
        p[rows] = np.clip(ks_exact_pvalues(a[rows], b[rows], [h for _, h in exact]), 0.0, 1.0)
    if asymptotic:
        # Threads pay off only for long Smirnov sums (n x^2 >= 2.2, about n terms each; numpy releases
        # the GIL in them); the other methods take microseconds.
        work = sum(n for f, n in asymptotic if 2.2 <= n * float(d[f]) ** 2 < 370.0)
        threads = min(_THREADS, len(asymptotic)) if work >= THREADED_TERMS else 1
        if threads > 1:
            with ThreadPoolExecutor(threads, thread_name_prefix="monitor-kstwo") as pool:
                values = list(pool.map(lambda item: kstwo_sf(item[1], float(d[item[0]])), asymptotic))
        else:
            values = [kstwo_sf(n, float(d[f])) for f, n in asymptotic]
        p[[f for f, _ in asymptotic]] = values
    return d, p


def kolmogorov_sf(z: float) -> float:
    """The limiting distribution's tail ``P(sqrt(n) D_n > z)`` as n grows (scipy's ``kstwobign.sf``)."""
    if z <= 0.04:
        return 1.0
    if z <= 0.82:
        k = np.arange(1, 6)
        cdf = math.sqrt(2 * math.pi) / z * float(np.sum(np.exp(-((2 * k - 1) ** 2) * _PI2 / (8 * z * z))))
        return min(1.0, max(0.0, 1.0 - cdf))
    k = np.arange(1, 11)
    return min(1.0, max(0.0, 2.0 * float(np.sum((-1.0) ** (k - 1) * np.exp(-2.0 * k * k * z * z)))))


def kstwo_sf(n: int, x: float) -> float:
    """``P(D_n >= x)`` for the two-sided one-sample KS statistic of ``n`` values (scipy's ``kstwo.sf``)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if x >= 1.0:
        return 0.0
    t = n * x
    if t <= 0.5:
        return 1.0
    if t <= 1.0:  # Ruben and Gambino: P(D_n < x) = n! / n^n (2t - 1)^n
        return _clip(1.0 - math.exp(_log_factorial_ratio(n) + n * math.log(2 * t - 1)))
    if t >= n - 1:
        return _clip(2.0 * (1.0 - x) ** n)
    if x >= 0.5:
        return _clip(2.0 * smirnov_sf(n, x))
    nxx = t * x
    if n <= 140:
        return _clip(1.0 - _durbin_cdf(n, x)) if nxx <= 4.0 else _clip(2.0 * smirnov_sf(n, x))
    if nxx >= 370.0:
        return 0.0
    if nxx >= 2.2:
        return _clip(2.0 * smirnov_sf(n, x))
    if n <= 100000 and n * x**1.5 <= 1.4:
        return _clip(1.0 - _durbin_cdf(n, x))
    return _clip(1.0 - _pelz_good_cdf(n, x))


def smirnov_sf(n: int, d: float) -> float:
    """``P(D+_n >= d)``, the one-sided KS tail, exactly by Birnbaum and Tingey's sum (in log space)."""
    if d <= 0.0:
        return 1.0
    if d >= 1.0:
        return 0.0
    v = np.arange(math.floor(n * (1.0 - d)) + 1, dtype=np.float64)
    log_choose = np.concatenate([[0.0], np.cumsum(np.log((n - v[1:] + 1) / v[1:]))])
    with np.errstate(divide="ignore", invalid="ignore"):
        low = (n - v) / n - d
        terms = log_choose + math.log(d) + (v - 1) * np.log(d + v / n) + (n - v) * np.log(low)
    terms = np.where(low > 0, terms, -np.inf)
    top = float(np.max(terms))
    return _clip(math.exp(top) * float(np.sum(np.exp(terms - top)))) if math.isfinite(top) else 0.0


def _durbin_cdf(n: int, d: float) -> float:
    """``P(D_n < d)`` by the Durbin matrix: ``n!/n^n (H^n)[k-1, k-1]`` with ``d = (k - h) / n``."""
    k = math.ceil(n * d)
    h = k - n * d
    m = 2 * k - 1
    i = np.arange(m)
    diff = i[:, None] - i[None, :] + 1
    fact = np.array([math.factorial(j) for j in range(m + 1)], dtype=np.float64)
    mat = np.where(diff >= 0, 1.0 / fact[np.clip(diff, 0, m)], 0.0)
    mat[:, 0] = (1.0 - h ** (i + 1)) / fact[i + 1]
    mat[m - 1, :] = (1.0 - h ** (m - i)) / fact[m - i]
    mat[m - 1, 0] = (1.0 - 2.0 * h**m + max(0.0, 2.0 * h - 1.0) ** m) / fact[m]
    result, log_result = np.eye(m), 0.0
    log_h = 0.0
    power = n
    while power:  # square-and-multiply; each matrix is kept near 1 with its log scale carried apart
        if power & 1:
            result, log_result = _rescaled(result @ mat, log_result + log_h)
        power >>= 1
        if power:
            mat, log_h = _rescaled(mat @ mat, 2 * log_h)
    value = float(result[k - 1, k - 1])
    if value <= 0.0:
        return 0.0
    return min(1.0, math.exp(math.log(value) + log_result + _log_factorial_ratio(n)))


def _rescaled(matrix: np.ndarray, log_scale: float) -> tuple[np.ndarray, float]:
    top = float(np.max(np.abs(matrix)))
    return (matrix / top, log_scale + math.log(top)) if top > 0 else (matrix, log_scale)


def _pelz_good_cdf(n: int, x: float) -> float:
    """``P(D_n <= x)`` by Pelz and Good's series ``K0 + K1/sqrt(n) + K2/n + K3/n^1.5`` in z = x sqrt(n)."""
    z = math.sqrt(n) * x
    if _PI2 / (8 * z * z) > 708:
        return 0.0
    z2, z4, z6, z8 = z * z, z**4, z**6, z**8
    pi4, pi6 = _PI2 * _PI2, _PI2**3
    kmax = math.ceil(16 * z / math.pi)
    m2 = (2.0 * np.arange(1, kmax + 1) - 1.0) ** 2  # odd squares
    w = np.exp(-m2 * _PI2 / (8 * z2))
    j2 = np.arange(1, kmax + 1, dtype=np.float64) ** 2
    u = np.exp(-j2 * _PI2 / (2 * z2))
    root = math.sqrt(2 * math.pi)
    k0 = root / z * float(np.sum(w))
    k1 = root / (6 * z4) * float(np.sum(w * (_PI2 / 4 * m2 - z2)))
    k2 = root / (72 * z**7) * float(
        np.sum(w * (6 * z6 + 2 * z4 + (2 * z4 - 5 * z2) * _PI2 / 4 * m2 + pi4 * (1 - 2 * z2) / 16 * m2 * m2))
    ) - _PI2 * root / (36 * z**3) * float(np.sum(j2 * u))
    k3 = root / (6480 * z**10) * float(
        np.sum(
            w
            * (
                -30 * z6
                - 90 * z8
                + _PI2 * (135 * z4 - 96 * z6) / 4 * m2
                + pi4 * (212 * z4 - 60 * z2) / 16 * m2 * m2
                + pi6 * (5 - 30 * z2) / 64 * m2**3
            )
        )
    ) + _PI2 * root / (216 * z6) * float(np.sum((3 * z2 - _PI2 * j2) * j2 * u))
    return float(k0 + k1 / math.sqrt(n) + k2 / n + k3 / n**1.5)


def _log_factorial_ratio(n: int) -> float:
    """``log(n! / n^n)``."""
    return math.lgamma(n + 1) - n * math.log(n)


def _clip(p: float) -> float:
    return min(1.0, max(0.0, p))
