"""Exact two-sample KS kernels of :mod:`monitor.stats` (the contracts are the package's): the statistic by
merging a window's sorted values with the sorted reference, and its exact p-value.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import numpy.typing as npt

from monitor.errors import StatsError
from monitor.stats.jit import F64, I64, THREADED_SORT_VALUES, jit

__all__ = ["ks_exact", "ks_exact_pvalue", "ks_exact_pvalues"]


@jit("int64(float64[:], float64, boolean)")
def _partition(row: F64, bound: float, inclusive: bool) -> int:
    lo, hi = 0, row.size  # the first index whose value is not below (or at, if inclusive) bound
    while lo < hi:
        mid = (lo + hi) >> 1
        if row[mid] < bound or (inclusive and row[mid] == bound):
            lo = mid + 1
        else:
            hi = mid
    return lo


@jit("void(float64[:, ::1], float64[::1], int64[::1], int64[::1], int64[::1], int64[::1])", parallel=True)
def _ks_merge(cur: F64, ref: F64, ref_off: I64, imax: I64, n1: I64, n2: I64) -> None:
    for f in numba.prange(cur.shape[0]):
        row = cur[f]  # sorted: -inf first, then the finite values, then +inf and NaN
        i = _partition(row, -np.inf, True)
        end = _partition(row, np.inf, False)
        k = end - i
        r0 = ref_off[f]
        nr = ref_off[f + 1] - r0
        n1[f] = k
        n2[f] = nr
        best = 0
        if k > 0 and nr > 0:  # a branch-free merge; the gap counts only after the last copy of a value
            c = 0
            j = 0
            x = row[i]
            y = ref[r0]
            while c < k or j < nr:
                take = x <= y
                v = x if take else y
                c += take
                j += 1 - take
                x = row[i + c] if c < k else np.inf
                y = ref[r0 + j] if j < nr else np.inf
                gap = abs(c * nr - j * k)
                best = gap if (min(x, y) > v and gap > best) else best
        imax[f] = best


@jit("float64(int64, int64, int64)")
def _ks_inside_pvalue(m: int, n: int, h: int) -> float:
    # P(D >= h / lcm(m, n)) as the share of monotone lattice paths (0, 0) -> (m, n) that reach the band
    # edge |ng*x - mg*y| >= h, by columns x: B(x, y) = (x B(x-1, y) + y B(x, y-1)) / (x + y) inside the
    # band and 1 outside (Hodges' inside method, carried as 1 - p so every step is a convex combination).
    if m < n:
        m, n = n, m
    g = np.gcd(m, n)
    mg = m // g
    ng = n // g
    col = np.ones(n + 1)
    inverse = 1.0 / np.arange(1, m + n + 1)  # inverse[s - 1] = 1 / s: no division in the inner loop
    top = min(n, -(-h // mg) - 1)
    col[: top + 1] = 0.0
    low = 0
    for x in range(1, m + 1):
        new_low = max(0, (ng * x - h) // mg + 1)
        new_top = min(n, -(-(ng * x + h) // mg) - 1)
        if new_low > new_top:
            return 1.0
        for y in range(low, min(new_low, n + 1)):
            col[y] = 1.0
        low = new_low
        below = 1.0 if low > 0 else 0.0
        for y in range(low, new_top + 1):
            below = col[y] + (y * inverse[x + y - 1]) * (below - col[y])
            col[y] = below
    return float(col[n])


@jit("float64(int64, int64)")
def _ks_square_pvalue(n: int, h: int) -> float:
    # Equal sizes: P(D >= h / n) = 2 sum_k (-1)^(k+1) C(2n, n - kh) / C(2n, n), evaluated from the
    # last term back as 2 A_1 (1 - A_2 (1 - A_3 (...))) with A_k the ratio of consecutive binomials.
    total = 0.0
    for k in range(n // h, -1, -1):
        ratio = 1.0
        for j in range(h):
            ratio = (n - k * h - j) * ratio / (n + k * h + j + 1)
        total = ratio * (1.0 - total)
    return 2.0 * total


@jit("void(int64[::1], int64[::1], int64[::1], float64[::1])", parallel=True)
def _ks_inside_many(n1: I64, n2: I64, h: I64, out: F64) -> None:
    for f in numba.prange(h.size):
        if h[f] == 0:
            out[f] = 1.0
        elif n1[f] == n2[f]:
            out[f] = _ks_square_pvalue(n1[f], h[f])
        else:
            out[f] = _ks_inside_pvalue(n1[f], n2[f], h[f])


def ks_exact(current: F64, ref_sorted: F64, ref_off: I64) -> tuple[I64, I64, I64]:
    """Exact two-sample KS for every feature: ``(imax, n, m)``, the statistic being ``imax / (n * m)``.

    ``current[f]`` holds feature ``f``'s window values in any order; NaN and +-inf (NaN is also the
    padding of short rows) are left out. Its sorted finite reference is
    ``ref_sorted[ref_off[f]:ref_off[f + 1]]``. Ties count as in scipy's ``ks_2samp`` (both ECDFs are
    taken after every copy of a tied value). The window is sorted by numpy (SIMD) and merged by numba.
    """
    if current.ndim != 2 or ref_sorted.ndim != 1 or ref_off.shape != (current.shape[0] + 1,):
        raise StatsError("current must be 2-D (features x values) and ref_off must have features + 1 entries")
    if ref_off[0] != 0 or ref_off[-1] != ref_sorted.size or np.any(np.diff(ref_off) < 0):
        raise StatsError("ref_off must rise from 0 to ref_sorted.size")
    ordered = _sorted_rows(current)
    features = current.shape[0]
    imax, n1, n2 = (np.zeros(features, dtype=np.int64) for _ in range(3))
    _ks_merge(
        ordered, np.ascontiguousarray(ref_sorted, dtype=np.float64), ref_off.astype(np.int64), imax, n1, n2
    )
    return imax, n1, n2


def ks_exact_pvalue(n1: int, n2: int, h: int) -> float:
    """P(D >= h / lcm(n1, n2)) for the two-sided two-sample KS statistic, exactly (no ties assumed)."""
    return float(ks_exact_pvalues(np.array([n1]), np.array([n2]), np.array([h]))[0])


def ks_exact_pvalues(n1: npt.ArrayLike, n2: npt.ArrayLike, h: npt.ArrayLike) -> F64:
    """:func:`ks_exact_pvalue` for many features at once, in parallel."""
    a, b, c = (np.ascontiguousarray(v, dtype=np.int64).reshape(-1) for v in (n1, n2, h))
    if not a.size == b.size == c.size or np.any(a < 1) or np.any(b < 1) or np.any(c < 0):
        raise StatsError("need equal-length n1, n2 >= 1 and h >= 0")
    out = np.empty(a.size)
    _ks_inside_many(a, b, c, out)
    return out


def _sorted_rows(values: npt.ArrayLike) -> F64:
    """A sorted copy of each row; large inputs are sorted by several threads (numpy releases the GIL)."""
    out = np.array(values, dtype=np.float64, order="C", copy=True)
    threads = min(numba.get_num_threads(), out.shape[0])
    if out.size < THREADED_SORT_VALUES or threads < 2:
        out.sort(axis=1)
        return out
    cuts = np.linspace(0, out.shape[0], threads + 1).astype(np.int64)
    with ThreadPoolExecutor(threads, thread_name_prefix="monitor-sort") as pool:
        list(pool.map(lambda i: out[cuts[i] : cuts[i + 1]].sort(axis=1), range(threads)))
    return out
