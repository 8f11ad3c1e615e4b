"""Window evaluation and decisions: thresholds, BH, non-finite rates, hysteresis, the skew check against a
training profile, the report entry."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sps

from monitor.config import ProfileSettings
from monitor.decisions import (
    DRIFT_ENDED,
    DRIFT_STARTED,
    DriftTracker,
    SkewSource,
    iso_time,
    large_enough,
    version_entry,
)
from monitor.drift import WindowResult, evaluate_window
from monitor.handlers import _since_ns
from monitor.reference import Profile, build_profile
from monitor.thresholds import benjamini_hochberg
from monitor.windows import VersionWindows
from registry.config import DriftConfig
from registry.signature import Signature, TensorSpec

SIGNATURE = Signature(inputs=(TensorSpec("x", "FP64", (-1, 4)),), outputs=(TensorSpec("y", "FP32", (-1,)),))
FEATURE_KEYS = {
    "name",
    "kind",
    "psi",
    "psi_threshold",
    "ks",
    "ks_bound",
    "ks_exact",
    "ks_pvalue",
    "nan_rate",
    "inf_rate",
    "drift",
}


@pytest.fixture(scope="module")
def reference() -> np.ndarray[Any, Any]:
    return np.random.default_rng(0).normal(size=(4000, 4))


@pytest.fixture(scope="module")
def profile(reference: np.ndarray[Any, Any]) -> Profile:
    return build_profile(SIGNATURE, {"input:x": reference}, ProfileSettings(), bins=10)


def run(profile: Profile, config: DriftConfig, x: np.ndarray[Any, Any]) -> WindowResult:
    windows = VersionWindows(profile, config)
    tensor = profile.layout.tensors[0]
    (closed,) = windows.add([(tensor, tensor.matrix(x))], len(x), now=0.0, wall=1.7e9)
    return evaluate_window(profile, config, closed)


def test_only_shifted_features_drift(profile: Profile, reference: np.ndarray[Any, Any]) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1000, 4))
    x[:, 2] += 0.5
    result = run(profile, DriftConfig(window_rows=1000), x)
    assert [f.drift for f in result.features] == [False, False, True, False]
    assert result.features[2].reasons == ("psi", "ks")
    assert all(f.ks_exact for f in result.features)
    raw = [sps.ks_2samp(x[:, f], reference[:, f]) for f in range(4)]
    assert [f.ks for f in result.features] == pytest.approx([r.statistic for r in raw], abs=1e-12)
    assert [f.ks_pvalue for f in result.features] == pytest.approx([r.pvalue for r in raw], abs=1e-6)
    adjusted = benjamini_hochberg([r.pvalue for r in raw])
    assert [f.ks_pvalue_adjusted for f in result.features] == pytest.approx(list(adjusted), abs=1e-6)
    assert result.drift


def test_without_audit_the_grid_statistic_decides(profile: Profile) -> None:
    x = np.random.default_rng(2).normal(size=(500, 4))
    x[:, 0] += 1.0
    result = run(profile, DriftConfig(window_rows=500, audit_max_rows=0), x)
    first = result.features[0]
    assert not first.ks_exact
    assert first.ks_pvalue is None
    assert first.ks == first.ks_grid
    assert first.ks_bound is not None
    assert first.ks is not None
    assert first.ks_bound >= first.ks
    assert first.drift
    assert not result.features[1].drift


def test_calibrated_psi_threshold_and_nonfinite_rates(profile: Profile) -> None:
    x = np.random.default_rng(3).normal(size=(800, 4))
    x[:40, 1] = np.nan
    x[:5, 3] = np.inf
    config = DriftConfig(window_rows=800, psi_threshold_mode="calibrated", nonfinite_threshold=0.02)
    result = run(profile, config, x)
    f1 = result.features[1]
    assert f1.nan_rate == pytest.approx(0.05)
    assert "nan_rate" in f1.reasons
    f3 = result.features[3]
    assert f3.inf_rate == pytest.approx(5 / 800)
    assert "inf_rate" not in f3.reasons
    expect = sps.chi2.isf(0.01 / 4, 9) * (1 / 800 + 1 / 4000)  # Bonferroni over the 4 features with values
    assert result.features[0].psi_threshold == pytest.approx(expect, rel=1e-10)
    assert result.features[0].psi_null_threshold == result.features[0].psi_threshold
    assert not result.features[0].drift


def test_tracker_enters_and_leaves_after_k_windows() -> None:
    tracker = DriftTracker(2)
    assert [tracker.update(d) for d in (True, False, True, True, True, False, True, False, False)] == [
        None,
        None,
        None,
        DRIFT_STARTED,
        None,
        None,
        None,
        None,
        DRIFT_ENDED,
    ]
    assert tracker.state.skew is None  # drift against the reference never decides skew
    assert tracker.state.windows == 9
    assert not tracker.state.in_drift
    with pytest.raises(ValueError, match="consecutive"):
        DriftTracker(0)


def test_report_entry_has_the_design_fields(profile: Profile) -> None:
    result = run(profile, DriftConfig(window_rows=300), np.random.default_rng(4).normal(size=(300, 4)))
    tracker = DriftTracker(2)
    tracker.update(result.drift)
    entry = version_entry("m", 3, tracker.state, result)
    assert {"model", "version", "drift", "skew", "window", "features"} <= set(entry)
    assert entry["version"] == "3"
    assert entry["skew"] is None  # no training profile
    assert {"rows", "opened_at", "closed_at"} <= set(entry["window"])
    assert entry["window"]["opened_at"] == iso_time(1.7e9) == "2023-11-14T22:13:20.000Z"
    assert [f["name"] for f in entry["features"]] == ["x[0]", "x[1]", "x[2]", "x[3]"]
    assert all(set(f) >= FEATURE_KEYS for f in entry["features"])
    assert len(entry["sliding"]["features"]) == 4
    empty = version_entry("m", 4, DriftTracker(2).state, None, status="no_reference", detail="why")
    assert (empty["window"], empty["features"], empty["skew"], empty["status"]) == (
        None,
        [],
        None,
        "no_reference",
    )


def shifted(seed: int, columns: tuple[int, ...], rows: int = 600) -> np.ndarray[Any, Any]:
    x = np.random.default_rng(seed).normal(size=(rows, 4))
    x[:, list(columns)] += 1.0
    return x


def test_skew_is_the_first_window_against_training(profile: Profile) -> None:
    # the bookkeeping of the skew check, on windows far from the fixed cut (seed 7's x[3] sits on the
    # calibrated one: PSI 0.0489 against 0.0488, one of the ~1 % of clean windows calibrated mode flags)
    config = DriftConfig(window_rows=600, psi_threshold_mode="fixed")
    skewed = DriftTracker(2)
    assert skewed.skew_pending(1)
    assert skewed.update_skew(run(profile, config, shifted(5, (1, 3))), 1) is True
    state = skewed.state
    assert (state.skew_features, state.skew_windows, state.skew_window) == (["x[1]", "x[3]"], 1, 1)
    assert [(f["name"], f["drift"], f["skew"]) for f in state.skew_results] == [
        ("x[0]", False, False),
        ("x[1]", True, True),
        ("x[2]", False, False),
        ("x[3]", True, True),
    ]
    assert not skewed.skew_pending(1)
    assert (
        skewed.update_skew(run(profile, config, shifted(6, ())), 1) is True
    )  # decided: later windows ignored
    assert state.skew_windows == 1
    clean = DriftTracker(2)
    assert clean.update_skew(run(profile, config, shifted(7, ())), 1) is False
    assert clean.state.skew_features == []
    assert (clean.state.in_drift, clean.state.windows) == (False, 0)  # the drift state is another matter


def test_with_several_skew_windows_a_feature_must_drift_in_all_of_them(profile: Profile) -> None:
    config = DriftConfig(window_rows=600)
    tracker = DriftTracker(2)
    assert tracker.update_skew(run(profile, config, shifted(8, (0, 2))), 3) is None  # pending
    assert tracker.state.skew_results[0]["skew"] is None
    assert tracker.update_skew(run(profile, config, shifted(9, (2,))), 3) is None
    assert tracker.state.skew_features == ["x[2]"]
    assert tracker.update_skew(run(profile, config, shifted(10, (2, 3))), 3) is True
    assert (tracker.state.skew_features, tracker.state.skew_windows) == (["x[2]"], 3)
    moving = DriftTracker(2)
    assert moving.update_skew(run(profile, config, shifted(11, (0,))), 3) is None
    assert moving.update_skew(run(profile, config, shifted(12, (1,))), 3) is False  # no feature in both
    assert not moving.skew_pending(3)


def test_windows_too_small_for_the_psi_rule_are_passed_over(profile: Profile) -> None:
    tracker = DriftTracker(2)
    small = run(profile, DriftConfig(window_rows=40), shifted(14, (), rows=40))
    assert small.drift  # 40 rows over 10 deciles: PSI is noise far above 0.2
    assert not large_enough(small)
    assert tracker.update_skew(small, 1) is None
    assert (tracker.state.skew_skipped, tracker.state.skew_windows) == (1, 0)
    # calibrated: 20 values per decile, 200 rows, before the chi-square null of PSI holds
    for rows, enough in ((40, False), (199, False), (200, True)):
        calibrated = DriftConfig(window_rows=rows, psi_threshold_mode="calibrated")
        result = run(profile, calibrated, shifted(14, (), rows=rows))
        assert [f.psi_sized for f in result.features] == [enough] * 4
        assert large_enough(result) is enough
    assert tracker.update_skew(run(profile, DriftConfig(window_rows=600), shifted(15, ())), 1) is False
    assert (tracker.state.skew_skipped, tracker.state.skew_windows) == (1, 1)


def test_report_entry_skew_fields(profile: Profile) -> None:
    config = DriftConfig(window_rows=600)
    result = run(profile, config, shifted(13, (1,)))
    tracker = DriftTracker(2)
    tracker.update(result.drift, result.index)
    tracker.update_skew(result, 1)
    without = version_entry("m", 1, tracker.state, result)
    assert (without["skew"], without["skew_check"]) == (None, None)  # no training profile: null
    assert all(f["skew"] is None for f in without["features"])
    entry = version_entry("m", 1, tracker.state, result, skew=SkewSource(1, 3000))
    assert entry["skew"] is True
    check = entry["skew_check"]
    assert {k: v for k, v in check.items() if k != "features"} == {
        "status": "done",
        "detail": None,
        "training_rows": 3000,
        "required": 1,
        "windows": 1,
        "skipped": 0,
        "window": 1,
    }
    assert [f["name"] for f in check["features"] if f["skew"]] == ["x[1]"]
    assert [f["name"] for f in entry["features"] if f["skew"]] == ["x[1]"]
    pending = version_entry("m", 2, DriftTracker(2).state, None, skew=SkewSource(1, 3000))
    assert (pending["skew"], pending["skew_check"]["status"], pending["skew_check"]["window"]) == (
        None,
        "pending",
        None,
    )
    broken = version_entry("m", 1, tracker.state, result, skew=SkewSource(1, None, "bad file"))
    assert (broken["skew"], broken["skew_check"]["status"], broken["skew_check"]["detail"]) == (
        None,
        "invalid_training",
        "bad file",
    )
    assert broken["skew_check"]["features"] == []


@given(st.floats(min_value=1.0e9, max_value=4.0e9, allow_nan=False))
def test_a_windows_closed_at_read_back_as_since_never_passes_its_stored_close_time(epoch_s: float) -> None:
    """History stores ``int(closed_wall * 1e9)`` and shows ``iso_time(closed_wall)``; ``since=`` with that
    text must select the window again, so the shown time is the stored one truncated to the millisecond."""
    stored = int(epoch_s * 1e9)
    since = _since_ns(iso_time(epoch_s))
    assert stored - 1_000_000 < since <= stored


def test_iso_time_truncates_where_microsecond_rounding_would_carry_into_the_next_millisecond() -> None:
    assert iso_time(1764950000.1239996) == "2025-12-05T15:53:20.123Z"
