"""Two gaps of the data-drift rules (issue 17, item 7): values a reference never had must be flagged in
calibrated mode (a one-category feature has a finite PSI threshold), and values above a point mass at the
reference maximum (a constant feature) must be visible to PSI and the grid KS, not only to the audit."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps

from monitor.config import ProfileSettings
from monitor.drift import WindowResult, evaluate_window
from monitor.reference import Profile, build_profile
from monitor.windows import VersionWindows
from registry.config import DriftConfig
from registry.signature import Signature, TensorSpec
from tests import monitor_oracles as oracle

REF_ROWS, WINDOW = 2000, 1000
MODES = ("fixed", "calibrated")


def profile_of(name: str, datatype: str, reference: np.ndarray[Any, Any]) -> Profile:
    signature = Signature(
        inputs=(TensorSpec(name, datatype, (-1,)),), outputs=(TensorSpec("y", "FP32", (-1,)),)
    )
    return build_profile(signature, {f"input:{name}": reference}, ProfileSettings(), bins=10)


def run(profile: Profile, x: np.ndarray[Any, Any], mode: str, audit: bool = True) -> WindowResult:
    config = DriftConfig(window_rows=len(x), psi_threshold_mode=mode, audit_max_rows=100_000 if audit else 0)
    windows = VersionWindows(profile, config)
    tensor = profile.layout.tensors[0]
    (closed,) = windows.add([(tensor, tensor.matrix(x))], len(x), now=0.0, wall=1.7e9)
    return evaluate_window(profile, config, closed)


@pytest.fixture(scope="module")
def one_category() -> Profile:
    return profile_of("c", "INT64", np.full(REF_ROWS, 3, dtype=np.int64))


@pytest.mark.parametrize("mode", MODES)
def test_unseen_values_of_a_one_category_feature_drift_in_both_modes(
    one_category: Profile, mode: str
) -> None:
    x = np.full(WINDOW, 3, dtype=np.int64)
    x[::20] = 7  # 5 % of the window: a value the reference never had
    (f,) = run(one_category, x, mode).features
    assert f.kind == "categorical"
    assert f.psi == pytest.approx(oracle.categorical_psi(np.full(REF_ROWS, 3), x), abs=1e-12)
    # one filled cell and the unseen one: a 2-cell comparison, 1 degree of freedom
    assert one_category.psi_df(0) == 1
    null = sps.chi2.isf(0.01, 1) * (1 / WINDOW + 1 / REF_ROWS)
    assert f.psi_null_threshold == pytest.approx(null, rel=1e-10)
    assert f.psi_threshold == pytest.approx(0.2 if mode == "fixed" else null, rel=1e-10)
    assert "psi" in f.reasons


@pytest.mark.parametrize("mode", MODES)
def test_a_window_of_the_one_category_is_clean(one_category: Profile, mode: str) -> None:
    (f,) = run(one_category, np.full(WINDOW, 3, dtype=np.int64), mode).features
    assert (f.psi, f.ks, f.reasons) == (0.0, 0.0, ())


def test_categorical_degrees_of_freedom_are_the_categories_less_one() -> None:
    profile = profile_of("c", "INT64", np.arange(REF_ROWS, dtype=np.int64) % 4)
    assert profile.psi_df(0) == 3
    assert profile.coarse_bins(0) == 5  # four categories and the unseen bin


@pytest.fixture(scope="module")
def constant() -> Profile:
    return profile_of("v", "FP64", np.full(REF_ROWS, 1.5))


def test_a_constant_reference_has_bins_on_both_sides(constant: Profile) -> None:
    assert constant.grid.edges(0).tolist() == [1.5, np.nextafter(1.5, np.inf)]
    assert constant.coarse_bins(0) == 3  # below, at, above: only the middle one filled
    assert constant.psi_df(0) == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("offset", [1.0, 1e-9, -1.0])
def test_values_off_a_constant_drift_without_the_audit(constant: Profile, mode: str, offset: float) -> None:
    x = np.full(WINDOW, 1.5)
    x[::8] += offset  # 12.5 % off the constant, above (even by a hair) or below
    (f,) = run(constant, x, mode, audit=False).features
    assert not f.ks_exact
    edges = np.array([1.5, np.nextafter(1.5, np.inf)])
    reference = np.full(REF_ROWS, 1.5)
    assert f.psi == pytest.approx(oracle.psi(reference, x, edges), abs=1e-12)
    assert f.psi is not None
    assert f.psi > 0.2
    # the grid is exact here: the reference has no mass off the constant
    assert f.ks == pytest.approx(sps.ks_2samp(x, reference).statistic, abs=1e-12)
    assert f.ks_bound == f.ks
    assert f.reasons[:2] == ("psi", "ks")


@pytest.mark.parametrize("mode", MODES)
def test_a_window_at_the_constant_is_clean(constant: Profile, mode: str) -> None:
    for audit in (False, True):
        (f,) = run(constant, np.full(WINDOW, 1.5), mode, audit=audit).features
        assert (f.psi, f.ks, f.reasons) == (0.0, 0.0, ())


def test_a_point_mass_at_the_maximum_gets_a_bin_above_it() -> None:
    rng = np.random.default_rng(5)
    reference = np.minimum(rng.normal(size=REF_ROWS), 0.5)  # ~31 % capped at 0.5
    profile = profile_of("v", "FP64", reference)
    assert profile.grid.edges(0)[-2:].tolist() == [0.5, np.nextafter(0.5, np.inf)]
    x = np.minimum(rng.normal(size=WINDOW), 0.5)
    x[x == 0.5] = 3.0  # the cap broke: the capped mass moved above it
    (f,) = run(profile, x, "fixed", audit=False).features
    coarse = oracle.quantile_edges(reference, [Fraction(k, 10) for k in range(1, 10)])
    edges = np.append(coarse, np.nextafter(0.5, np.inf))
    assert f.psi == pytest.approx(oracle.psi(reference, x, edges), abs=1e-12)
    assert "psi" in f.reasons
    assert "ks" in f.reasons
    clean = np.minimum(rng.normal(size=WINDOW), 0.5)
    for mode in MODES:
        assert not run(profile, clean, mode).drift


def test_an_ordinary_continuous_reference_keeps_its_grid() -> None:
    reference = np.random.default_rng(6).normal(size=REF_ROWS)
    profile = profile_of("v", "FP64", reference)
    assert profile.grid.edges(0)[-1] < reference.max()
    assert profile.coarse_bins(0) == 10
    assert profile.psi_df(0) == 9
