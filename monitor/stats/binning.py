"""Binning, ingest and evaluation kernels of :mod:`monitor.stats` over a :class:`monitor.grid.Grid` (the
contracts are the package's): fine-bin counts from rows, then PSI and the grid KS with its bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numba
import numpy as np
import numpy.typing as npt

from monitor.errors import StatsError
from monitor.stats.jit import BLOCK_ROWS, CELLS, EPS, F64, I64, MAX_STEPS, PARALLEL_MIN_VALUES, jit

if TYPE_CHECKING:
    from monitor.grid import Grid

__all__ = ["Evaluation", "build_lut", "evaluate", "ingest"]


@jit("int64(float64, float64, float64)")
def _cell(x: float, lo: float, scale: float) -> int:
    return int(min(max((x - lo) * scale, 0.0), CELLS - 1.0))


@jit("void(float64[::1], int64[::1], float64[::1], float64[::1], int32[::1], int64[::1])")
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


@jit(
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


@jit(_INGEST_SIG)
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
    for start in range(0, rows, BLOCK_ROWS):  # row blocks keep the block's cache lines warm
        stop = min(rows, start + BLOCK_ROWS)
        for j in range(values.shape[1]):
            _bin_column(
                values, j, f0 + j, start, stop, bounds, bin_off, lut, lo, scale, steps, counts, special
            )


@jit(_INGEST_SIG, parallel=True)
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
        for start in range(rows * t // chunks, rows * (t + 1) // chunks, BLOCK_ROWS):
            stop = min(rows * (t + 1) // chunks, start + BLOCK_ROWS)
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


@jit(
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


def _check_state(grid: Grid, counts: I64, special: I64) -> None:
    if counts.dtype != np.int64 or counts.shape != (grid.n_bins,) or not counts.flags.c_contiguous:
        raise StatsError(f"counts must be C-contiguous int64 of shape ({grid.n_bins},)")
    if special.dtype != np.int64 or special.shape != (3 * grid.n_features,) or not special.flags.c_contiguous:
        raise StatsError(f"special must be C-contiguous int64 of shape ({3 * grid.n_features},)")
