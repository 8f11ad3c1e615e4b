"""Drift statistics: the numba kernels of the monitor (the only module that imports numba).

This module owns the arithmetic of the drift engine, at the point of the data path where sampled rows
become counts and counts become statistics:

* **Binning** over a :class:`monitor.grid.Grid`: a finite value ``x`` goes to fine bin
  ``searchsorted(edges, x, side="right")``. NaN, +inf and -inf are never binned; they are counted apart
  in ``special[3f:3f+3] = (nan, +inf, -inf)``. A per-feature lookup table over ``CELLS`` equal cells
  narrows the search to the few edges of one cell; the result is exactly ``searchsorted``'s.
* **Ingest** (:func:`ingest`): adds rows to a window's counts, O(features x bins) state, never rows.
* **Evaluate** (:func:`evaluate`): PSI on the coarse (decile) bins and the grid KS statistic over the fine
  bins, with its guaranteed bound ``D_grid <= D <= D_grid + max_b min(p_b, q_b)`` (``<= max bin mass``).
* **Exact KS** (:func:`ks_exact`): merges a window's sorted raw values with the sorted reference, and the
  exact two-sample p-value (:func:`ks_exact_pvalue`): for equal sizes the alternating binomial sum, else
  the lattice-path "inside" recursion (the two methods scipy's ``ks_2samp`` uses).

Kernels are private, compiled eagerly from explicit signatures with ``cache=True`` and ``nogil=True``;
the public wrappers validate shapes and dtypes and cast once. ``NUMBA_DISABLE_JIT=1`` runs the same
code as plain Python (the test suite does, for coverage of the kernel logic).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

from monitor.errors import StatsError

if TYPE_CHECKING:
    from monitor.grid import Grid

__all__ = [
    "CELLS",
    "EPS",
    "Evaluation",
    "build_lut",
    "evaluate",
    "ingest",
    "ks_exact",
    "ks_exact_pvalue",
    "ks_exact_pvalues",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
_Fn = TypeVar("_Fn", bound=Callable[..., Any])

EPS = 1e-4
"""A zero bin proportion counts as EPS in PSI (no renormalisation)."""
CELLS = 4096
"""Lookup-table cells per feature."""
MAX_STEPS = 8
"""A feature whose fullest lookup cell holds more edges than this bins by binary search within the cell."""
PARALLEL_MIN_VALUES = 1 << 16
"""Ingest batches of at least this many values use the multi-threaded kernel."""
THREADED_SORT_VALUES = 1 << 20
"""Exact-KS windows of at least this many values are sorted by several threads."""
_BLOCK_ROWS = 256


def _jit(signature: str, *, parallel: bool = False) -> Callable[[_Fn], _Fn]:
    return cast(Callable[[_Fn], _Fn], numba.njit(signature, cache=True, nogil=True, parallel=parallel))


@_jit("int64(float64, float64, float64)")
def _cell(x: float, lo: float, scale: float) -> int:
    return int(min(max((x - lo) * scale, 0.0), CELLS - 1.0))


@_jit("void(float64[::1], int64[::1], float64[::1], float64[::1], int32[::1], int64[::1])")
def _build_lut(bounds: F64, bin_off: I64, lo: F64, scale: F64, lut: Any, steps: I64) -> None:
    for f in range(bin_off.size - 1):
        base = f * (CELLS + 1)
        lut[base : base + CELLS + 1] = 0
        for i in range(bin_off[f], bin_off[f + 1] - 1):
            lut[base + _cell(bounds[i], lo[f], scale[f]) + 1] += 1
        most = 0
        for c in range(CELLS):
            most = max(most, lut[base + c + 1])
            lut[base + c + 1] += lut[base + c]
        steps[f] = most if most <= MAX_STEPS else 0


@_jit(
    "void(float64[:, ::1], int64, int64, int64, int64, float64[::1], int64[::1], int32[::1], float64[::1],"
    " float64[::1], int64[::1], int64[::1], int64[::1])"
)
def _bin_column(
    values: F64,
    j: int,
    f: int,
    start: int,
    stop: int,
    bounds: F64,
    bin_off: I64,
    lut: Any,
    lo: F64,
    scale: F64,
    steps: I64,
    counts: I64,
    special: I64,
) -> None:
    # Edges in cells below the value's cell are smaller than it, edges in cells above (and the +inf
    # sentinel) are larger, so the answer lies in the value's cell. A feature whose fullest cell holds at
    # most MAX_STEPS edges steps through them without data-dependent branches; others binary-search.
    b0 = bin_off[f]
    l0 = f * (CELLS + 1)
    top = steps[f]
    lof = lo[f]
    scf = scale[f]
    for r in range(start, stop):
        x = values[r, j]
        if not np.isfinite(x):
            special[3 * f + (0 if x != x else (1 if x > 0 else 2))] += 1
            continue
        c = l0 + _cell(x, lof, scf)
        a = lut[c]
        if top > 0:
            for _ in range(top):
                a += bounds[b0 + a] <= x
        else:
            hi = lut[c + 1]
            while a < hi:
                mid = (a + hi) >> 1
                if bounds[b0 + mid] <= x:
                    a = mid + 1
                else:
                    hi = mid
        counts[b0 + a] += 1


_INGEST_SIG = (
    "void(float64[:, ::1], int64, float64[::1], int64[::1], int32[::1], float64[::1], float64[::1],"
    " int64[::1], int64[::1], int64[::1], int64)"
)


@_jit(_INGEST_SIG)
def _ingest_serial(
    values: F64,
    f0: int,
    bounds: F64,
    bin_off: I64,
    lut: Any,
    lo: F64,
    scale: F64,
    steps: I64,
    counts: I64,
    special: I64,
    chunks: int,
) -> None:
    rows = values.shape[0]
    for start in range(0, rows, _BLOCK_ROWS):  # row blocks keep the block's cache lines warm
        stop = min(rows, start + _BLOCK_ROWS)
        for j in range(values.shape[1]):
            _bin_column(
                values, j, f0 + j, start, stop, bounds, bin_off, lut, lo, scale, steps, counts, special
            )


@_jit(_INGEST_SIG, parallel=True)
def _ingest_parallel(
    values: F64,
    f0: int,
    bounds: F64,
    bin_off: I64,
    lut: Any,
    lo: F64,
    scale: F64,
    steps: I64,
    counts: I64,
    special: I64,
    chunks: int,
) -> None:
    # Threads take contiguous row ranges into private counts (rows are row-major, so splitting by
    # feature would make every thread stride over all of memory), then the counts are summed.
    rows = values.shape[0]
    local = np.zeros((chunks, counts.size), dtype=np.int64)
    local_special = np.zeros((chunks, special.size), dtype=np.int64)
    for t in numba.prange(chunks):
        for start in range(rows * t // chunks, rows * (t + 1) // chunks, _BLOCK_ROWS):
            stop = min(rows * (t + 1) // chunks, start + _BLOCK_ROWS)
            for j in range(values.shape[1]):
                _bin_column(
                    values,
                    j,
                    f0 + j,
                    start,
                    stop,
                    bounds,
                    bin_off,
                    lut,
                    lo,
                    scale,
                    steps,
                    local[t],
                    local_special[t],
                )
    for t in range(chunks):
        counts += local[t]
        special += local_special[t]


@_jit(
    "void(int64[::1], int64[::1], int64[::1], int32[::1], int64[::1], uint8[::1], float64,"
    " float64[::1], float64[::1], float64[::1], int64[::1])"
)
def _evaluate(
    ref: I64,
    cur: I64,
    bin_off: I64,
    coarse_of: Any,
    coarse_off: I64,
    point_bins: Any,
    eps: float,
    psi: F64,
    ks: F64,
    bound: F64,
    n_cur: I64,
) -> None:
    for f in range(bin_off.size - 1):
        b0 = bin_off[f]
        nb = bin_off[f + 1] - b0
        nr = 0
        nc = 0
        for b in range(b0, b0 + nb):
            nr += ref[b]
            nc += cur[b]
        n_cur[f] = nc
        if nr == 0 or nc == 0:
            psi[f] = np.nan
            ks[f] = np.nan
            bound[f] = np.nan
            continue
        c0 = coarse_off[f]
        k = coarse_off[f + 1] - c0
        pr = np.zeros(k)
        pc = np.zeros(k)
        inr = 1.0 / nr
        inc = 1.0 / nc
        cr = 0
        cc = 0
        dmax = 0.0
        slack = 0.0
        for b in range(b0, b0 + nb):
            pr[coarse_of[b]] += ref[b]
            pc[coarse_of[b]] += cur[b]
            slack = max(slack, min(ref[b] * inr, cur[b] * inc))
            cr += ref[b]
            cc += cur[b]
            dmax = max(dmax, abs(cr * inr - cc * inc))
        total = 0.0
        for c in range(k):
            p = pr[c] * inr if pr[c] > 0 else eps
            q = pc[c] * inc if pc[c] > 0 else eps
            total += (q - p) * np.log(q / p)
        psi[f] = total
        ks[f] = dmax
        bound[f] = dmax if point_bins[f] else min(1.0, dmax + slack)


@_jit("int64(float64[:], float64, boolean)")
def _partition(row: F64, bound: float, inclusive: bool) -> int:
    lo, hi = 0, row.size  # the first index whose value is not below (or at, if inclusive) bound
    while lo < hi:
        mid = (lo + hi) >> 1
        if row[mid] < bound or (inclusive and row[mid] == bound):
            lo = mid + 1
        else:
            hi = mid
    return lo


@_jit("void(float64[:, ::1], float64[::1], int64[::1], int64[::1], int64[::1], int64[::1])", parallel=True)
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


@_jit("float64(int64, int64, int64)")
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


@_jit("float64(int64, int64)")
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


@_jit("void(int64[::1], int64[::1], int64[::1], float64[::1])", parallel=True)
def _ks_inside_many(n1: I64, n2: I64, h: I64, out: F64) -> None:
    for f in numba.prange(h.size):
        if h[f] == 0:
            out[f] = 1.0
        elif n1[f] == n2[f]:
            out[f] = _ks_square_pvalue(n1[f], h[f])
        else:
            out[f] = _ks_inside_pvalue(n1[f], n2[f], h[f])


@dataclass(frozen=True)
class Evaluation:
    """Per-feature results of :func:`evaluate`; NaN where the window or the reference has no finite value.

    ``ks_bound`` is the guaranteed upper bound of the true KS statistic given the grid value ``ks``.
    """

    psi: F64
    ks: F64
    ks_bound: F64
    n: I64


def build_lut(bounds: F64, bin_off: I64, lo: F64, scale: F64) -> tuple[npt.NDArray[np.int32], I64]:
    """The lookup table (``CELLS + 1`` entries per feature) and per-feature step counts for ``bounds``
    (each feature's strictly increasing edges then +inf, at ``bin_off``) and cells ``(x - lo) * scale``."""
    n = bin_off.size - 1
    if lo.shape != (n,) or scale.shape != (n,) or bounds.shape != (int(bin_off[-1]),):
        raise StatsError("bounds, bin_off, lo and scale do not describe the same features")
    lut = np.empty(n * (CELLS + 1), dtype=np.int32)
    steps = np.empty(n, dtype=np.int64)
    _build_lut(bounds, bin_off, lo, scale, lut, steps)
    return lut, steps


def ingest(grid: Grid, values: npt.ArrayLike, first: int, counts: I64, special: I64) -> None:
    """Add the rows of ``values`` (2-D: rows x k) to features ``first .. first + k - 1`` of the counts.

    ``counts`` and ``special`` come from :meth:`Grid.zeros` (int64, C-contiguous, updated in place).
    ``values`` is cast once to C-contiguous float64. StatsError on a shape or dtype mismatch.
    """
    array = np.ascontiguousarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise StatsError(f"values must be 2-D (rows x features), got shape {array.shape}")
    if not 0 <= first <= grid.n_features - array.shape[1]:
        raise StatsError(f"features {first}..{first + array.shape[1] - 1} outside 0..{grid.n_features - 1}")
    _check_state(grid, counts, special)
    parallel = array.size >= PARALLEL_MIN_VALUES
    kernel = _ingest_parallel if parallel else _ingest_serial
    chunks = numba.get_num_threads() if parallel else 1
    kernel(array, first, *grid.binning, counts, special, chunks)


def evaluate(grid: Grid, reference: I64, current: I64, eps: float = EPS) -> Evaluation:
    """PSI over the coarse bins and the grid KS statistic with its bound, from fine-bin counts."""
    for name, counts in (("reference", reference), ("current", current)):
        if counts.dtype != np.int64 or counts.shape != (grid.n_bins,) or not counts.flags.c_contiguous:
            raise StatsError(f"{name} counts must be C-contiguous int64 of shape ({grid.n_bins},)")
    if not 0.0 < eps < 1.0:
        raise StatsError(f"eps must be in (0, 1), got {eps}")
    n = grid.n_features
    psi, ks, bound = np.empty(n), np.empty(n), np.empty(n)
    n_cur = np.empty(n, dtype=np.int64)
    _evaluate(reference, current, *grid.coarse, eps, psi, ks, bound, n_cur)
    return Evaluation(psi=psi, ks=ks, ks_bound=bound, n=n_cur)


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


def _check_state(grid: Grid, counts: I64, special: I64) -> None:
    if counts.dtype != np.int64 or counts.shape != (grid.n_bins,) or not counts.flags.c_contiguous:
        raise StatsError(f"counts must be C-contiguous int64 of shape ({grid.n_bins},)")
    if special.dtype != np.int64 or special.shape != (3 * grid.n_features,) or not special.flags.c_contiguous:
        raise StatsError(f"special must be C-contiguous int64 of shape ({3 * grid.n_features},)")
