"""Wilson interval, score test, percentile bootstrap and BH against scipy and naive numpy oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from monitor import intervals
from monitor.errors import StatsError
from monitor.intervals import (
    benjamini_hochberg,
    bootstrap_distribution,
    bootstrap_interval,
    normal_cdf,
    normal_ppf,
    score_test_less,
    wilson_interval,
)


def test_normal_quantile_and_cdf_match_scipy() -> None:
    qs = np.concatenate([np.logspace(-15, -1, 30), np.linspace(0.02, 0.98, 49), 1 - np.logspace(-12, -1, 20)])
    for q in qs:
        assert normal_ppf(float(q)) == pytest.approx(stats.norm.ppf(q), rel=1e-12, abs=1e-12)
    for x in np.linspace(-8, 8, 81):
        assert normal_cdf(float(x)) == pytest.approx(stats.norm.cdf(x), rel=1e-12, abs=1e-300)
    for bad in (0.0, 1.0, -0.1, math.nan):
        with pytest.raises(StatsError):
            normal_ppf(bad)


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 5000),
    share=st.floats(0.0, 1.0),
    confidence=st.sampled_from([0.5, 0.8, 0.9, 0.95, 0.99, 0.999]),
)
def test_wilson_matches_scipy(n: int, share: float, confidence: float) -> None:
    k = round(share * n)
    ci = stats.binomtest(k, n).proportion_ci(confidence, method="wilson")
    low, high = wilson_interval(k, n, confidence)
    assert low == pytest.approx(ci.low, abs=1e-12)
    assert high == pytest.approx(ci.high, abs=1e-12)
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_wilson_and_score_test_refuse_bad_counts() -> None:
    for args in ((0, 0), (-1, 5), (6, 5), (1.5, 5), (True, 5)):
        with pytest.raises(StatsError):
            wilson_interval(args[0], args[1], 0.95)  # type: ignore[arg-type]
        with pytest.raises(StatsError):
            score_test_less(args[0], args[1], 0.5)  # type: ignore[arg-type]
    for confidence in (0.0, 1.0, 1.5, math.nan):
        with pytest.raises(StatsError, match="confidence"):
            wilson_interval(3, 10, confidence)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 3000), share=st.floats(0.0, 1.0), p0=st.floats(0.001, 0.999))
def test_score_test_is_the_test_wilson_inverts(n: int, share: float, p0: float) -> None:
    k = round(share * n)
    pvalue = score_test_less(k, n, p0)
    naive = stats.norm.cdf((k / n - p0) / math.sqrt(p0 * (1 - p0) / n))
    assert pvalue == pytest.approx(naive, rel=1e-9, abs=1e-300)
    alpha = 0.05  # reject H0: p >= p0 at alpha  <=>  p0 above the upper end of the (1 - 2 alpha) interval
    _, high = wilson_interval(k, n, 1 - 2 * alpha)
    if abs(p0 - high) > 1e-9 and k < n:
        assert (pvalue <= alpha) == (p0 > high), (k, n, p0, pvalue, high)


def test_score_test_ends() -> None:
    assert score_test_less(3, 10, 0.0) == 1.0
    assert score_test_less(9, 10, 1.0) == 0.0
    assert score_test_less(10, 10, 1.0) == 1.0


def _mean(a: np.ndarray) -> np.ndarray:
    return np.asarray(a.mean(axis=-1))


def test_bootstrap_is_the_naive_loop_over_the_same_indices() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=37), rng.exponential(size=37)
    ratio = bootstrap_distribution((x, y), lambda a, b: a.sum(axis=1) / b.sum(axis=1), 300, seed=11)
    index = np.random.default_rng(11).integers(0, 37, size=(300, 37))
    naive = np.array([x[i].sum() / y[i].sum() for i in index])
    np.testing.assert_allclose(ratio, naive, rtol=1e-12)


def test_bootstrap_is_deterministic_and_chunking_does_not_change_it(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(1).normal(size=101)
    whole = bootstrap_distribution(x, _mean, 250, seed=3)
    np.testing.assert_array_equal(whole, bootstrap_distribution(x, _mean, 250, seed=3))
    assert not np.array_equal(whole, bootstrap_distribution(x, _mean, 250, seed=4))
    monkeypatch.setattr(intervals, "BOOTSTRAP_CHUNK_VALUES", 101 * 7)  # 7 resamples a chunk
    np.testing.assert_array_equal(whole, bootstrap_distribution(x, _mean, 250, seed=3))


def test_bootstrap_interval_agrees_with_scipy_percentile() -> None:
    """Same data, independent resamples: the endpoints agree to within Monte Carlo noise, and over 100
    normal samples the two intervals cover the true mean about equally often."""
    covered = [0, 0]
    for seed in range(100):
        x = np.random.default_rng(seed).normal(0.0, 1.0, 60)
        ours = bootstrap_interval(x, _mean, 0.9, 2000, seed)
        res = stats.bootstrap(
            (x,), np.mean, confidence_level=0.9, n_resamples=2000, method="percentile", rng=seed
        )
        theirs = (res.confidence_interval.low, res.confidence_interval.high)
        se = x.std() / math.sqrt(60)
        assert abs(ours[0] - theirs[0]) < 0.15 * se
        assert abs(ours[1] - theirs[1]) < 0.15 * se
        covered[0] += ours[0] <= 0.0 <= ours[1]
        covered[1] += theirs[0] <= 0.0 <= theirs[1]
    assert abs(covered[0] - covered[1]) <= 3
    assert 80 <= covered[0] <= 98  # nominal 90


def test_bootstrap_leaves_out_undefined_resamples() -> None:
    x = np.array([0.0, 0.0, 1.0, 2.0])

    def mean_of_positive(a: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.asarray(np.where(a > 0, a, 0).sum(axis=1) / (a > 0).sum(axis=1))

    low, high = bootstrap_interval(x, mean_of_positive, 0.95, 500, 0)
    assert 1.0 <= low <= high <= 2.0
    assert all(math.isnan(v) for v in bootstrap_interval(np.zeros(3), mean_of_positive, 0.95, 50, 0))


def test_bootstrap_refuses_bad_input() -> None:
    with pytest.raises(StatsError, match="row count"):
        bootstrap_interval(np.zeros(0), _mean, 0.9, 10, 0)
    with pytest.raises(StatsError, match="row count"):
        bootstrap_interval((np.zeros(3), np.zeros(4)), lambda a, b: a.mean(axis=1), 0.9, 10, 0)
    with pytest.raises(StatsError, match="resamples"):
        bootstrap_interval(np.zeros(3), _mean, 0.9, 0, 0)
    with pytest.raises(StatsError, match="shape"):
        bootstrap_interval(np.zeros(3), lambda a: a, 0.9, 10, 0)
    with pytest.raises(StatsError, match="confidence"):
        bootstrap_interval(np.zeros(3), _mean, 1.0, 10, 0)


@settings(max_examples=300, deadline=None)
@given(
    pvalues=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40),
    alpha=st.sampled_from([0.001, 0.01, 0.05, 0.1, 0.2]),
)
def test_benjamini_hochberg_matches_scipy(pvalues: list[float], alpha: float) -> None:
    p = np.array(pvalues)
    expected = stats.false_discovery_control(p, method="bh") <= alpha
    np.testing.assert_array_equal(benjamini_hochberg(p, alpha), expected)
    rejected = benjamini_hochberg(p, alpha)  # naive step-up: largest k with p_(k) <= k alpha / m
    ranks = np.sort(p)
    ok = [k for k in range(1, p.size + 1) if ranks[k - 1] <= k * alpha / p.size]
    if ok and all(abs(ranks[k - 1] - k * alpha / p.size) > 1e-12 for k in range(1, p.size + 1)):
        np.testing.assert_array_equal(rejected, p <= ranks[max(ok) - 1])


def test_benjamini_hochberg_edges() -> None:
    assert benjamini_hochberg(np.array([]), 0.05).shape == (0,)
    for bad in ([0.1, math.nan], [1.2], [-0.1]):
        with pytest.raises(StatsError, match="pvalues"):
            benjamini_hochberg(np.array(bad), 0.05)
    with pytest.raises(StatsError, match="alpha"):
        benjamini_hochberg(np.array([0.1]), 0.0)


def test_benjamini_hochberg_rejects_a_pvalue_exactly_at_its_threshold() -> None:
    """Found by Hypothesis: sorted 0, 0, 0.1 with m = 6 and alpha 0.2 puts 0.1 exactly at 3 alpha / m."""
    p = np.array([0.0, 0.0, 1.0, 1.0, 1.0, 0.1])
    expected = stats.false_discovery_control(p, method="bh") <= 0.2
    np.testing.assert_array_equal(benjamini_hochberg(p, 0.2), expected)
    assert benjamini_hochberg(p, 0.2).tolist() == [True, True, False, False, False, True]
