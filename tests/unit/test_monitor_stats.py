"""monitor.stats kernels against plain-numpy oracles and scipy (also run with NUMBA_DISABLE_JIT=1)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from monitor import stats
from monitor.errors import StatsError
from monitor.grid import Grid
from monitor.kolmogorov import ks_2samp_pvalue
from tests import monitor_oracles as oracle

NO_JIT = os.environ.get("NUMBA_DISABLE_JIT") == "1"
EXAMPLES = int(os.environ.get("MONITOR_HYPOTHESIS_EXAMPLES", "15" if NO_JIT else "60"))
F64 = npt.NDArray[np.float64]


def grid_of(edges: list[F64], coarse: list[F64] | None = None, point: list[bool] | None = None) -> Grid:
    """A grid whose coarse bins are cut by ``coarse[f]`` (a subset of ``edges[f]``; default: one bin)."""
    coarse = coarse if coarse is not None else [np.empty(0)] * len(edges)
    maps = [
        np.concatenate([[0], np.searchsorted(c, e, side="right")]) for e, c in zip(edges, coarse, strict=True)
    ]
    return Grid.build(edges, maps, point if point is not None else [False] * len(edges))


def counts_of(grid: Grid, columns: list[F64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    counts, special = grid.zeros()
    stats.ingest(grid, np.column_stack(columns), 0, counts, special)
    return counts, special


def feature_counts(grid: Grid, counts: npt.NDArray[np.int64], f: int) -> npt.NDArray[np.int64]:
    return counts[grid.bin_off[f] : grid.bin_off[f + 1]]


finite_floats = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=64)
any_floats = st.one_of(finite_floats, st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0]))


@st.composite
def edges_and_values(draw: st.DrawFn) -> tuple[F64, F64]:
    edges = np.unique(np.array(draw(st.lists(finite_floats, min_size=0, max_size=40)), dtype=np.float64))
    values = draw(st.lists(st.one_of(any_floats, st.sampled_from(list(edges) or [0.0])), max_size=300))
    return edges, np.array(values, dtype=np.float64)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edges_and_values())
def test_ingest_matches_the_binning_oracle(case: tuple[F64, F64]) -> None:
    edges, values = case
    grid = grid_of([edges])
    counts, special = counts_of(grid, [values])
    assert np.array_equal(counts, oracle.bin_counts(edges, values))
    assert tuple(special) == oracle.special_counts(values)


def test_ingest_heavy_tails_and_wide_cells_still_match_searchsorted() -> None:
    rng = np.random.default_rng(1)
    tails = np.unique(np.quantile(rng.standard_cauchy(5000) ** 3, np.arange(1, 200) / 200))
    narrow = np.unique(np.round(rng.normal(size=300), 2))
    grid = grid_of([tails, narrow, np.array([1e-300, 1e300])])
    assert grid.steps.max() > 0  # the fast path is used somewhere
    x = np.column_stack([rng.standard_cauchy(3000) ** 3, rng.normal(size=3000), rng.lognormal(50, 300, 3000)])
    counts, _ = grid.zeros()
    stats.ingest(grid, x, 0, counts, np.zeros(9, dtype=np.int64))
    for f, e in enumerate((tails, narrow, np.array([1e-300, 1e300]))):
        column = x[np.isfinite(x[:, f]), f]
        expect = np.bincount(np.searchsorted(e, column, side="right"), minlength=e.size + 1)
        assert np.array_equal(feature_counts(grid, counts, f), expect)


def test_parallel_ingest_equals_serial_and_accepts_float32() -> None:
    rng = np.random.default_rng(2)
    edges = [np.unique(rng.normal(size=50)) for _ in range(4)]
    grid = grid_of(edges)
    rows = stats.PARALLEL_MIN_VALUES // 4 + 7
    x = rng.normal(size=(rows, 4)).astype(np.float32)
    x[::13, 2] = np.nan
    big, big_special = counts_of(grid, list(x.T))
    small, small_special = grid.zeros()
    for start in range(0, rows, 1000):
        stats.ingest(grid, x[start : start + 1000], 0, small, small_special)
    assert np.array_equal(big, small)
    assert np.array_equal(big_special, small_special)
    assert big_special[6] == len(range(0, rows, 13))


def test_ingest_into_a_slice_of_features_and_validation() -> None:
    grid = grid_of([np.array([0.0]), np.array([1.0, 2.0]), np.array([5.0])])
    counts, special = grid.zeros()
    stats.ingest(grid, np.array([[1.5, 9.0], [3.0, 0.0]]), 1, counts, special)
    assert counts.tolist() == [0, 0, 0, 1, 1, 1, 1]
    with pytest.raises(StatsError, match="outside"):
        stats.ingest(grid, np.zeros((2, 3)), 1, counts, special)
    with pytest.raises(StatsError, match="2-D"):
        stats.ingest(grid, np.zeros(3), 0, counts, special)
    with pytest.raises(StatsError, match="counts"):
        stats.ingest(grid, np.zeros((1, 1)), 0, counts[:-1], special)
    with pytest.raises(StatsError, match="strictly increasing"):
        Grid.build([np.array([1.0, 1.0])], [np.zeros(3)], [False])
    with pytest.raises(StatsError, match="coarse_of"):
        Grid.build([np.array([1.0])], [np.array([0, 2])], [False])


@st.composite
def two_samples(draw: st.DrawFn) -> tuple[F64, F64]:
    kind = draw(st.sampled_from(["random", "tied", "constant", "disjoint", "nan"]))
    n, m = draw(st.integers(1, 120)), draw(st.integers(1, 120))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(draw(st.floats(-2, 2)), 1, size=m)
    if kind == "tied":
        a, b = np.round(a, 0), np.round(b, 0)
    elif kind == "constant":
        a, b = np.full(n, 1.5), np.full(m, draw(st.sampled_from([1.5, 2.5])))
    elif kind == "disjoint":
        b = b - b.min() + a.max() + 1.0
    elif kind == "nan":
        a[rng.random(n) < 0.3] = np.nan
        b[rng.random(m) < 0.1] = rng.choice([np.inf, -np.inf])
    return a, b


def _grid_for(reference: F64, fine: int = 20, coarse: int = 4) -> tuple[Grid, F64, F64]:
    ref = oracle.finite(reference)
    levels = np.union1d(np.arange(1, fine) / fine, np.arange(1, coarse) / coarse)
    edges = np.unique(np.quantile(ref, levels, method="inverted_cdf")) if ref.size else np.empty(0)
    cuts = (
        np.unique(np.quantile(ref, np.arange(1, coarse) / coarse, method="inverted_cdf"))
        if ref.size
        else edges
    )
    return grid_of([edges], [cuts]), edges, cuts


@settings(max_examples=EXAMPLES, deadline=None)
@given(two_samples())
def test_psi_and_grid_ks_match_the_oracles_and_the_bound_holds(samples: tuple[F64, F64]) -> None:
    reference, current = samples
    grid, edges, cuts = _grid_for(reference)
    ref_counts, _ = counts_of(grid, [reference])
    cur_counts, _ = counts_of(grid, [current])
    result = stats.evaluate(grid, ref_counts, cur_counts)
    ref, cur = oracle.finite(reference), oracle.finite(current)
    if ref.size == 0 or cur.size == 0:
        assert np.isnan(result.psi[0])
        assert np.isnan(result.ks[0])
        return
    assert result.psi[0] == pytest.approx(oracle.psi(reference, current, cuts), abs=1e-12)
    assert result.ks[0] == pytest.approx(oracle.grid_ks(reference, current, edges), abs=1e-12)
    exact = sps.ks_2samp(ref, cur).statistic
    assert result.ks[0] <= exact + 1e-12
    assert exact <= result.ks_bound[0] + 1e-12
    assert result.ks_bound[0] <= result.ks[0] + oracle.max_bin_mass(reference, current, edges) + 1e-12


def test_identical_samples_give_zero_and_disjoint_give_one() -> None:
    x = np.random.default_rng(3).normal(size=500)
    grid, _, _ = _grid_for(x)
    counts, _ = counts_of(grid, [x])
    same = stats.evaluate(grid, counts, counts)
    assert same.psi[0] == 0.0
    assert same.ks[0] == 0.0
    imax, n, m = stats.ks_exact(x[None, :], np.sort(x), np.array([0, x.size]))
    assert imax[0] == 0
    assert ks_2samp_pvalue(int(imax[0]), int(n[0]), int(m[0])) == (0.0, 1.0)
    far = x + 100.0
    imax, n, m = stats.ks_exact(far[None, :], np.sort(x), np.array([0, x.size]))
    assert imax[0] / (n[0] * m[0]) == 1.0
    far_counts, _ = counts_of(grid, [far])
    assert stats.evaluate(grid, counts, far_counts).ks_bound[0] == 1.0


def test_categorical_psi_counts_unseen_categories() -> None:
    ref = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 5], dtype=np.float64)
    cur = np.array([0, 1, 1, 3, 3, 3, 7, 2, -4, 5], dtype=np.float64)
    levels = np.unique(ref)
    edges = np.union1d(levels, levels + 1)
    lower = np.concatenate([[-np.inf], edges])
    coarse = np.array([int(np.flatnonzero(levels == e)[0]) if e in levels else levels.size for e in lower])
    grid = Grid.build([edges], [coarse], [True])
    result = stats.evaluate(grid, counts_of(grid, [ref])[0], counts_of(grid, [cur])[0])
    assert result.psi[0] == pytest.approx(oracle.categorical_psi(ref, cur), abs=1e-12)
    assert result.ks_bound[0] == result.ks[0] == pytest.approx(sps.ks_2samp(ref, cur).statistic, abs=1e-12)


@settings(max_examples=EXAMPLES, deadline=None)
@given(two_samples())
def test_exact_ks_statistic_and_pvalue_match_scipy(samples: tuple[F64, F64]) -> None:
    current, reference = samples
    ref = np.sort(oracle.finite(reference))
    imax, n, m = stats.ks_exact(current[None, :], ref, np.array([0, ref.size]))
    cur = oracle.finite(current)
    assert (n[0], m[0]) == (cur.size, ref.size)
    if cur.size == 0 or ref.size == 0:
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        expect = sps.ks_2samp(cur, ref)
    # scipy warns "Exact calculation unsuccessful" and answers its asymptotic p-value for some tied
    # samples: then it is no oracle for the exact p-value, only for the statistic.
    exact_oracle = not any("Exact calculation unsuccessful" in str(w.message) for w in caught)
    d, p = ks_2samp_pvalue(int(imax[0]), int(n[0]), int(m[0]))
    assert d == pytest.approx(expect.statistic, abs=1e-12)
    if exact_oracle:
        assert p == pytest.approx(expect.pvalue, abs=1e-6)


@pytest.mark.parametrize(("n", "m", "shift"), [(10001, 300, 0.1), (12000, 15000, 0.02), (20000, 20000, 0.5)])
def test_asymptotic_pvalue_within_one_percent(n: int, m: int, shift: float) -> None:
    rng = np.random.default_rng(n + m)
    cur, ref = rng.normal(shift, 1, n), np.sort(rng.normal(size=m))
    imax, k, r = stats.ks_exact(cur[None, :], ref, np.array([0, m]))
    d, p = ks_2samp_pvalue(int(imax[0]), int(k[0]), int(r[0]))
    expect = sps.ks_2samp(cur, ref)
    assert d == pytest.approx(expect.statistic, abs=1e-12)
    assert abs(p - expect.pvalue) <= max(1e-8, 0.01 * expect.pvalue)


def test_many_features_at_once_and_short_rows() -> None:
    rng = np.random.default_rng(4)
    refs = [np.sort(rng.normal(size=s)) for s in (50, 80, 1)]
    window = np.full((3, 40), np.nan)
    window[0, :40] = rng.normal(size=40)
    window[1, :25] = rng.normal(1, 1, 25)
    imax, n, m = stats.ks_exact(window, np.concatenate(refs), np.cumsum([0] + [r.size for r in refs]))
    assert n.tolist() == [40, 25, 0]
    assert m.tolist() == [50, 80, 1]
    for f in (0, 1):
        expect = sps.ks_2samp(oracle.finite(window[f]), refs[f]).statistic
        assert imax[f] / (n[f] * m[f]) == pytest.approx(expect, abs=1e-12)
    with pytest.raises(StatsError):
        stats.ks_exact(window, np.concatenate(refs), np.array([0, 50, 130]))


def test_shifted_normal_distance_converges_to_two_phi_minus_one() -> None:
    rng = np.random.default_rng(5)
    d = 0.5
    size = 4000 if NO_JIT else 60000
    ref = rng.normal(size=size)
    cur = rng.normal(d, 1, size)
    grid, _, _ = _grid_for(ref, fine=1000, coarse=10)
    result = stats.evaluate(grid, counts_of(grid, [ref])[0], counts_of(grid, [cur])[0])
    imax, n, m = stats.ks_exact(cur[None, :], np.sort(ref), np.array([0, size]))
    tolerance = 4 / np.sqrt(size)
    assert imax[0] / (n[0] * m[0]) == pytest.approx(oracle.shifted_normal_ks(d), abs=tolerance)
    assert result.ks[0] == pytest.approx(oracle.shifted_normal_ks(d), abs=tolerance + 2e-3)


def test_exact_pvalues_validation() -> None:
    assert stats.ks_exact_pvalue(5, 7, 0) == 1.0
    with pytest.raises(StatsError):
        stats.ks_exact_pvalues([0], [3], [1])
