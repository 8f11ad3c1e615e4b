"""KS p-value machinery (kstwo, Smirnov, Kolmogorov limit), the chi-square cut and BH against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from monitor import kolmogorov, thresholds

SIZES = [1, 2, 3, 5, 10, 40, 140, 141, 500, 5000, 50000, 100000, 100001, 400000]


@pytest.mark.parametrize("n", SIZES)
def test_kstwo_sf_matches_scipy_on_every_method(n: int) -> None:
    grid = np.linspace(1e-4, 0.999, 80 if n <= 5000 else 16)  # large n: long sums on both sides
    xs = np.concatenate([grid, [0.5 / n, 1 / n, 1.5 / n, 3 / np.sqrt(n), (n - 1) / n, 0.5, 0.6]])
    for x in xs[(xs > 0) & (xs < 1)]:
        ours, theirs = kolmogorov.kstwo_sf(n, float(x)), float(stats.kstwo.sf(x, n))
        assert abs(ours - theirs) <= max(1e-12, 1e-9 * theirs), (n, x, ours, theirs)


def test_kstwo_sf_ends() -> None:
    assert kolmogorov.kstwo_sf(10, 0.0) == 1.0
    assert kolmogorov.kstwo_sf(10, 1.0) == 0.0
    with pytest.raises(ValueError, match="n must be"):
        kolmogorov.kstwo_sf(0, 0.5)


def test_limit_and_smirnov_match_scipy() -> None:
    for z in np.linspace(0.01, 4, 60):
        assert kolmogorov.kolmogorov_sf(float(z)) == pytest.approx(
            stats.kstwobign.sf(z), rel=1e-10, abs=1e-15
        )
    for n in (1, 7, 100, 5000, 60000):
        for d in (1e-3, 0.01, 0.1, 0.3, 0.7, 0.99):
            assert kolmogorov.smirnov_sf(n, d) == pytest.approx(special.smirnov(n, d), rel=1e-9, abs=1e-300)


def test_large_exact_cases_skip_the_recursion_only_below_1e12() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.4, 1, 6000), rng.normal(size=7000)
    expect = stats.ks_2samp(a, b)
    imax = round(expect.statistic * a.size * b.size)
    d, p = kolmogorov.ks_2samp_pvalue(imax, a.size, b.size)
    assert d == pytest.approx(expect.statistic, abs=1e-12)
    assert p < 1e-12
    assert abs(p - expect.pvalue) < 1e-6
    with pytest.raises(ValueError, match="imax"):
        kolmogorov.ks_2samp_pvalue(-1, 3, 4)


@pytest.mark.parametrize("df", [1, 2, 3, 9, 10, 47, 999])
def test_chi2_isf_matches_scipy(df: int) -> None:
    for alpha in (0.5, 0.05, 0.01, 1e-4, 1e-9):
        assert thresholds.chi2_isf(alpha, df) == pytest.approx(stats.chi2.isf(alpha, df), rel=1e-11)
    with pytest.raises(ValueError, match="alpha"):
        thresholds.chi2_isf(0.0, df)


def test_psi_null_threshold() -> None:
    cut = thresholds.psi_null_threshold(9, 1000, 2000, 0.01)
    assert cut == pytest.approx(stats.chi2.isf(0.01, 9) * (1 / 1000 + 1 / 2000), rel=1e-11)
    assert thresholds.psi_null_threshold(0, 1000, 2000, 0.01) == math.inf
    assert thresholds.psi_null_threshold(9, 0, 2000, 0.01) == math.inf
    assert thresholds.gamma_q(3.0, 0.0) == 1.0


def test_benjamini_hochberg_matches_scipy_and_skips_nan() -> None:
    rng = np.random.default_rng(1)
    for size in (1, 2, 7, 40):
        p = rng.uniform(size=size) ** 4
        assert np.allclose(
            thresholds.benjamini_hochberg(p), stats.false_discovery_control(p), rtol=1e-13, atol=0
        )
    with_nan = np.array([0.01, np.nan, 0.04, 0.03])
    adjusted = thresholds.benjamini_hochberg(with_nan)
    assert np.isnan(adjusted[1])
    assert np.allclose(adjusted[[0, 2, 3]], stats.false_discovery_control([0.01, 0.04, 0.03]))
    assert np.isnan(thresholds.benjamini_hochberg([np.nan])).all()
