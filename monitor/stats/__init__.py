"""Drift statistics: the numba kernels of the monitor (the only package that imports numba).

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

Layout: :mod:`monitor.stats.jit` (how kernels compile, array types, constants), :mod:`monitor.stats.binning`
(binning, ingest, evaluate), :mod:`monitor.stats.exact_ks` (exact KS and its p-value).
"""

from __future__ import annotations

from monitor.stats.binning import Evaluation, build_lut, evaluate, ingest
from monitor.stats.exact_ks import ks_exact, ks_exact_pvalue, ks_exact_pvalues
from monitor.stats.jit import CELLS, EPS, MAX_STEPS, PARALLEL_MIN_VALUES, THREADED_SORT_VALUES

__all__ = [
    "CELLS",
    "EPS",
    "MAX_STEPS",
    "PARALLEL_MIN_VALUES",
    "THREADED_SORT_VALUES",
    "Evaluation",
    "build_lut",
    "evaluate",
    "ingest",
    "ks_exact",
    "ks_exact_pvalue",
    "ks_exact_pvalues",
]
