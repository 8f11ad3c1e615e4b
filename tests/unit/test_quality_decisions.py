"""Quality verdicts: degraded only when a drop beyond the effect is significant after BH and its interval
is clear of the threshold; p-values and BH checked against scipy; baselines folded exactly."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from monitor.errors import StatsError
from monitor.quality import classifier_quality, regressor_quality
from monitor.quality_baseline import WindowBaseline, baseline_from_validation, select_baseline
from monitor.quality_decisions import JoinedRows, judge_window

BASELINE = {"accuracy": 0.9, "f1_macro": 0.9, "log_loss": 0.3, "brier": 0.15}


def classifier_window(seed: int, n: int, accuracy: float, k: int = 2) -> JoinedRows:
    """Rows whose prediction is right with probability ``accuracy``; probabilities honest about it."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    right = rng.random(n) < accuracy
    pred = np.where(right, y, (y + rng.integers(1, k, n)) % k)
    proba = np.full((n, k), (1 - 0.9) / (k - 1))
    proba[np.arange(n), pred] = 0.9
    return JoinedRows(y, pred, proba, k)


def test_a_real_drop_is_degraded_with_its_evidence() -> None:
    verdict = judge_window(classifier_window(1, 2000, 0.75), BASELINE, 0.03, 0.05, 0.95)
    assert verdict.degraded
    accuracy = next(m for m in verdict.metrics if m.name == "accuracy")
    assert accuracy.method == "wilson"
    assert accuracy.trials == 2000
    assert accuracy.threshold == pytest.approx(0.87)
    assert accuracy.rejected
    assert accuracy.clear
    assert accuracy.interval[1] < 0.87
    assert accuracy.interval == pytest.approx(
        tuple(stats.binomtest(round(accuracy.value * 2000), 2000).proportion_ci(0.95, method="wilson"))
    )
    log_loss = next(m for m in verdict.metrics if m.name == "log_loss")
    assert log_loss.method == "bootstrap"
    assert log_loss.degraded
    assert log_loss.interval[0] > 0.33
    json.dumps(verdict.as_dict(), allow_nan=False)
    assert {m.name for m in verdict.metrics} == set(BASELINE)


def test_no_false_alarm_at_the_baseline_and_none_below_the_effect() -> None:
    for seed in range(30):
        at_baseline = judge_window(classifier_window(seed, 1000, 0.9), {"accuracy": 0.9}, 0.02, 0.05, 0.95)
        small_drop = judge_window(classifier_window(seed, 1000, 0.89), {"accuracy": 0.9}, 0.02, 0.05, 0.95)
        assert not at_baseline.degraded
        assert not small_drop.degraded


def test_accuracy_pvalue_is_the_score_test() -> None:
    verdict = judge_window(classifier_window(3, 500, 0.85), {"accuracy": 0.9}, 0.01, 0.05, 0.9)
    (m,) = verdict.metrics
    p0 = 0.89
    naive = stats.norm.cdf((m.value - p0) / math.sqrt(p0 * (1 - p0) / 500))
    assert m.pvalue == pytest.approx(naive, rel=1e-9)


def test_bh_across_metrics_matches_scipy() -> None:
    baseline = {"accuracy": 0.9, "precision_0": 0.9, "recall_1": 0.9, "f1_macro": 0.9, "brier": 0.17}
    verdict = judge_window(classifier_window(5, 300, 0.87), baseline, 0.0, 0.1, 0.9, resamples=400)
    pvalues = np.array([m.pvalue for m in verdict.metrics])
    rejected = [m.rejected for m in verdict.metrics]
    np.testing.assert_array_equal(rejected, stats.false_discovery_control(pvalues) <= 0.1)
    assert 0 < sum(rejected) < len(rejected)  # a mixed case: some rejected, some not
    assert {m.name for m in verdict.metrics} == set(baseline)


def test_bootstrap_pvalue_counts_resamples_not_worse() -> None:
    rows = classifier_window(5, 400, 0.8)
    verdict = judge_window(rows, {"f1_macro": 0.85}, 0.02, 0.05, 0.95, resamples=500, seed=9)
    (m,) = verdict.metrics
    # the same resamples, naively: F1 macro of each, compared with the threshold 0.83
    index = np.random.default_rng(9).integers(0, 400, size=(500, 400))
    naive = [classifier_quality(rows.y_true[i], rows.y_pred[i], None, 2).f1_macro for i in index]
    assert m.pvalue == pytest.approx((1 + sum(v >= 0.83 for v in naive)) / 501)
    assert m.interval == pytest.approx(tuple(np.quantile(naive, [0.025, 0.975])))


def test_regressor_rmse_and_bias_in_either_direction() -> None:
    rng = np.random.default_rng(6)
    y = rng.normal(size=1500)
    baseline = {"rmse": 1.0, "mae": 0.8, "bias": 0.0}
    fine = judge_window(JoinedRows(y, y + rng.normal(size=1500)), baseline, 0.1, 0.05, 0.95)
    assert not fine.degraded
    worse = judge_window(JoinedRows(y, y + rng.normal(0, 1.5, 1500)), baseline, 0.1, 0.05, 0.95)
    assert {m.name for m in worse.metrics if m.degraded} == {"rmse", "mae"}
    under = judge_window(JoinedRows(y, y - 0.5 + rng.normal(size=1500)), {"bias": 0.05}, 0.1, 0.05, 0.95)
    (bias,) = under.metrics
    assert under.degraded
    assert bias.value < 0
    assert bias.threshold == pytest.approx(0.15)
    assert bias.interval[1] < -0.15
    assert bias.value == pytest.approx(regressor_quality(y, under.quality.as_dict()["bias"] + y).bias)


def test_metric_choice_and_errors() -> None:
    rows = JoinedRows(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0]), None, 2)
    verdict = judge_window(rows, {"accuracy": 0.9, "precision_1": 0.9, "auc": 0.9}, 0.0, 0.05, 0.95)
    assert [m.name for m in verdict.metrics] == ["accuracy"]  # precision_1 undefined here, auc not ours
    assert verdict.skipped == ("precision_1",)
    picked = judge_window(
        rows, {"accuracy": 0.9, "precision_1": 0.9}, 0.0, 0.05, 0.95, metrics=["precision_1"]
    )
    assert picked.metrics == ()
    assert picked.skipped == ("precision_1",)
    assert not picked.degraded
    with pytest.raises(StatsError, match="no baseline"):
        judge_window(rows, {"accuracy": 0.9}, 0.0, 0.05, 0.95, metrics=["f1_macro"])
    with pytest.raises(StatsError, match="min_effect"):
        judge_window(rows, {"accuracy": 0.9}, {"f1_macro": 0.1}, 0.05, 0.95)
    for effect in (-0.1, math.nan, math.inf):
        with pytest.raises(StatsError, match="min_effect"):
            judge_window(rows, {"accuracy": 0.9}, effect, 0.05, 0.95)
    with pytest.raises(StatsError, match="alpha"):
        judge_window(rows, {"accuracy": 0.9}, 0.0, 1.5, 0.95)
    with pytest.raises(StatsError, match="no rows"):
        judge_window(JoinedRows(np.zeros(0), np.zeros(0), None, 2), {"accuracy": 0.9}, 0.0, 0.05, 0.95)


def test_window_baseline_pools_mean_metrics_exactly() -> None:
    windows = [classifier_window(s, n, 0.85) for s, n in ((10, 300), (11, 700), (12, 1000))]
    folded = WindowBaseline()
    for rows in windows:
        folded = folded.fold(rows.quality().as_dict() | {"auc": 0.5}, rows.y_true.size)
    pooled = classifier_quality(
        np.concatenate([w.y_true for w in windows]),
        np.concatenate([w.y_pred for w in windows]),
        np.concatenate([w.proba for w in windows if w.proba is not None]),
        2,
    )
    assert folded.windows == 3
    assert folded.rows == 2000
    assert "auc" not in folded.metrics
    for name in ("accuracy", "log_loss", "brier"):
        assert folded.metrics[name] == pytest.approx(getattr(pooled, name), rel=1e-12)
    rng = np.random.default_rng(0)
    parts = [(rng.normal(size=n), rng.normal(size=n)) for n in (50, 150)]
    reg = WindowBaseline()
    for y, pred in parts:
        reg = reg.fold(regressor_quality(y, pred).as_dict(), y.size)
    whole = regressor_quality(np.concatenate([y for y, _ in parts]), np.concatenate([p for _, p in parts]))
    for name in ("rmse", "mae", "bias"):
        assert reg.metrics[name] == pytest.approx(getattr(whole, name), rel=1e-12)
    with pytest.raises(StatsError, match="rows"):
        reg.fold({"rmse": 1.0}, 0)


def test_select_baseline() -> None:
    two = WindowBaseline().fold({"accuracy": 0.8}, 10).fold({"accuracy": 0.9}, 10)
    assert select_baseline({"accuracy": 0.95, "auc": 0.9}, two, 3) == ("validation", {"accuracy": 0.95})
    assert select_baseline({"auc": 0.9}, two, 3) is None
    chosen = select_baseline(None, two, 2)
    assert chosen is not None
    assert chosen[0] == "windows"
    assert chosen[1]["accuracy"] == pytest.approx(0.85)
    assert baseline_from_validation({"r2": 0.5, "rmse": 1.0, "mae": math.nan}) == {"rmse": 1.0}


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    k=st.integers(2, 4),
    seed=st.integers(0, 2**32 - 1),
    with_proba=st.booleans(),
    level=st.floats(0.01, 0.99),
)
def test_any_small_window_gets_a_consistent_verdict(
    n: int, k: int, seed: int, with_proba: bool, level: float
) -> None:
    """Tiny windows, one class only, perfect or hopeless predictions: a verdict, never a crash."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, rng.integers(1, k + 1), n)
    pred = np.where(rng.random(n) < rng.random(), y, rng.integers(0, k, n))
    proba = rng.dirichlet(np.ones(k), n) if with_proba else None
    baseline = {
        name: float(rng.random()) for name in ("accuracy", "f1_macro", "precision_0", "recall_0", "f1_0")
    }
    if with_proba:
        baseline |= {"log_loss": 0.5, "brier": 0.3, "ece": 0.05}
    verdict = judge_window(
        JoinedRows(y, pred, proba, k), baseline, 0.01, 0.05, level, resamples=50, seed=seed
    )
    json.dumps(verdict.as_dict(), allow_nan=False)
    for m in verdict.metrics:
        assert 0.0 < m.pvalue <= 1.0 or (m.method == "wilson" and m.pvalue >= 0.0)
        assert m.degraded == (m.rejected and m.clear)
    assert {m.name for m in verdict.metrics} | set(verdict.skipped) == set(baseline)
