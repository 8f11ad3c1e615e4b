"""A closed quality window judged against the validation score and against the version's first windows."""

from __future__ import annotations

import numpy as np

from monitor.quality_baseline import WindowBaseline
from monitor.quality_eval import JudgeInputs, evaluate_quality
from monitor.quality_windows import ClosedQuality
from registry.feedback_config import FeedbackConfig, FeedbackRoles

ROLES = FeedbackRoles(task="classifier", prediction="label", probabilities=None, label="label", classes=2)


def _window(accuracy: float, rows: int = 2000, seed: int = 0) -> ClosedQuality:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, rows).astype(np.float64)
    wrong = np.zeros(rows, dtype=bool)
    wrong[: round(rows * (1 - accuracy))] = True
    y_pred = np.where(rng.permutation(wrong), 1 - y_true, y_true)
    return ClosedQuality(7, 0, 60, "rows", 61, rows, rows, 0, rows, y_true, y_pred, None)


def _inputs(validation: dict[str, float], first_windows: list[float]) -> JudgeInputs:
    baseline = WindowBaseline()
    for accuracy in first_windows:
        baseline = baseline.fold({"accuracy": accuracy}, 1000)
    return JudgeInputs(ROLES, FeedbackConfig(), validation, baseline, None)


def test_a_drop_from_the_served_level_is_degraded_though_still_above_the_validation_score() -> None:
    window = _window(0.85)
    report = evaluate_quality(window, _inputs({"accuracy": 0.80}, [0.95, 0.95, 0.95]))
    decision = report["decision"]
    assert report["metrics"]["accuracy"] == 0.85
    assert decision["against"] == "validation"
    assert not any(m["degraded"] for m in decision["metrics"])  # 0.85 is above 0.80: fine by validation
    assert decision["self"]["degraded"]  # 0.85 is clearly below the 0.95 it served at
    assert decision["degraded"]
    assert report["baseline"]["windows"] == {"accuracy": 0.95}


def test_before_the_first_windows_are_folded_only_the_validation_score_judges() -> None:
    report = evaluate_quality(_window(0.85), _inputs({"accuracy": 0.80}, [0.95, 0.95]))
    assert report["decision"]["self"] is None
    assert not report["decision"]["degraded"]
    assert "windows" not in report["baseline"]


def test_a_window_at_its_served_level_is_not_degraded_against_either() -> None:
    report = evaluate_quality(_window(0.95, seed=3), _inputs({"accuracy": 0.93}, [0.95, 0.95, 0.95]))
    assert report["decision"]["self"] is not None
    assert not report["decision"]["degraded"]
