"""CBPE: the estimate holds within its stated error on calibrated models, and flags itself (``reliable``
or the error check) when the probabilities cannot be trusted."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.cbpe import Calibrator, estimate, estimate_error, fit_calibrator
from monitor.errors import StatsError
from monitor.quality import classifier_quality

WINDOWS = 200
WINDOW_ROWS = 500


def synthetic(
    seed: int, n: int, k: int = 2, temperature: float = 1.0, flip: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """A model whose shown probabilities are ``softmax(logits / temperature)``, with labels drawn from
    ``softmax(logits)``: calibrated at temperature 1, overconfident below it. ``flip``: the share of rows
    whose label is then moved to the next class (a concept shift the probabilities do not see)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, (n, k))
    truth = np.exp(logits - logits.max(axis=1, keepdims=True))
    truth /= truth.sum(axis=1, keepdims=True)
    y = (rng.random((n, 1)) >= np.cumsum(truth, axis=1)[:, :-1]).sum(axis=1)
    y = np.where(rng.random(n) < flip, (y + 1) % k, y)
    shown = np.exp((logits - logits.max(axis=1, keepdims=True)) / temperature)
    return shown / shown.sum(axis=1, keepdims=True), y


def coverage(calibrator: Calibrator, k: int, temperature: float = 1.0, flip: float = 0.0) -> dict[str, int]:
    counts = {"accuracy_within": 0, "f1_macro_within": 0, "reliable": 0}
    for window in range(WINDOWS):
        proba, y = synthetic(1000 + window, WINDOW_ROWS, k, temperature, flip)
        result = estimate_error(
            estimate(calibrator, proba, seed=window), classifier_quality(y, proba.argmax(axis=1), proba, k)
        )
        for key in counts:
            counts[key] += bool(result[key])
    return counts


@pytest.mark.parametrize("k", [2, 3])
def test_calibrated_model_estimate_within_its_error(k: int) -> None:
    proba, y = synthetic(0, 5000, k)
    calibrator = fit_calibrator(proba, y)
    assert calibrator.reliable
    counts = coverage(calibrator, k)
    assert counts["accuracy_within"] >= 0.95 * WINDOWS, counts
    assert counts["f1_macro_within"] >= 0.95 * WINDOWS, counts
    assert counts["reliable"] == WINDOWS


def test_overconfident_model_calibrated_on_its_own_reference_is_fixed() -> None:
    proba, y = synthetic(0, 5000, 2, temperature=0.4)
    calibrator = fit_calibrator(proba, y)
    assert calibrator.reliable
    assert coverage(calibrator, 2, temperature=0.4)["accuracy_within"] >= 0.95 * WINDOWS


def test_overconfident_model_taken_at_its_word_is_flagged() -> None:
    """No calibration (``method="none"``) on an overconfident reference: the calibrator says it is not
    reliable, and its estimates are far off, by more than the window's own sampling spread."""
    proba, y = synthetic(0, 5000, 2, temperature=0.4)
    calibrator = fit_calibrator(proba, y, method="none")
    assert not calibrator.reliable
    assert calibrator.holdout_ece > 0.05
    window, y_window = synthetic(7, 2000, 2, temperature=0.4)
    result = estimate_error(
        estimate(calibrator, window), classifier_quality(y_window, window.argmax(axis=1), window, 2)
    )
    assert result["reliable"] is False
    assert result["accuracy_difference"] > 0.05  # overconfidence: the estimate is too optimistic
    confidence = window.max(axis=1)
    spread = math.sqrt(float((confidence * (1 - confidence)).sum())) / 2000
    assert result["accuracy_difference"] > 5 * spread


def test_concept_shift_is_caught_by_the_error_check() -> None:
    """A reliable calibrator cannot see a change of P(y|x): once labels come, the error check flags it."""
    proba, y = synthetic(0, 5000, 2)
    calibrator = fit_calibrator(proba, y)
    counts = coverage(calibrator, 2, flip=0.3)
    assert counts["reliable"] == WINDOWS
    assert counts["accuracy_within"] <= 0.05 * WINDOWS, counts


def test_a_perfectly_calibrated_reference_gives_a_near_identity_map() -> None:
    rng = np.random.default_rng(3)
    p1 = rng.random(20000)
    y = (rng.random(20000) < p1).astype(np.int64)
    calibrator = fit_calibrator(p1, y)
    grid = np.linspace(0.05, 0.95, 19)
    calibrated = calibrator.calibrate(grid)
    np.testing.assert_allclose(calibrated[:, 1], grid, atol=0.05)
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0)
    assert (np.diff(calibrated[:, 1]) >= 0).all()


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(2, 4), temperature=st.floats(0.2, 3.0))
def test_calibrated_rows_are_probabilities_and_monotone(seed: int, k: int, temperature: float) -> None:
    proba, y = synthetic(seed, 300, k, temperature)
    calibrator = fit_calibrator(proba, y, seed=seed)
    q = calibrator.calibrate(proba)
    assert q.shape == (300, k)
    assert np.isfinite(q).all()
    assert (q >= 0).all()
    assert (q <= 1).all()
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-12)
    for x, v in zip(calibrator.knots_x, calibrator.knots_y, strict=True):
        assert (np.diff(x) > 0).all()
        assert (np.diff(v) >= 0).all()
    result = estimate(calibrator, proba, seed=seed)
    assert 0.0 <= result.accuracy <= 1.0
    assert 0.0 <= result.f1_macro <= 1.0
    assert result.accuracy_error > 0
    assert result.f1_macro_error > 0


def test_estimate_is_deterministic_for_a_seed() -> None:
    proba, y = synthetic(0, 1000, 3)
    calibrator = fit_calibrator(proba, y)
    again = fit_calibrator(proba, y)
    assert _same(again, calibrator)
    assert again.holdout_ece == calibrator.holdout_ece
    assert again.accuracy_error == calibrator.accuracy_error
    assert again.f1_error == calibrator.f1_error
    assert estimate(calibrator, proba[:200], seed=1) == estimate(calibrator, proba[:200], seed=1)
    assert estimate(calibrator, proba[:200], seed=1).as_dict()["rows"] == 200


def _same(a: Calibrator, b: Calibrator) -> bool:
    return all(
        np.array_equal(x, y) for x, y in zip(a.knots_x + a.knots_y, b.knots_x + b.knots_y, strict=True)
    )


def test_expected_accuracy_is_the_mean_calibrated_confidence() -> None:
    proba, y = synthetic(0, 2000, 3)
    calibrator = fit_calibrator(proba, y)
    window = proba[:300]
    q = calibrator.calibrate(window)
    pred = window.argmax(axis=1)
    naive = sum(q[i, pred[i]] for i in range(300)) / 300
    assert estimate(calibrator, window).accuracy == pytest.approx(naive, rel=1e-12)
    f1 = []  # expected confusion counts, naively
    for c in range(3):
        tp = sum(q[i, c] for i in range(300) if pred[i] == c)
        predicted = sum(1 for i in range(300) if pred[i] == c)
        actual = sum(q[i, c] for i in range(300))
        f1.append(2 * tp / (predicted + actual))
    assert estimate(calibrator, window).f1_macro == pytest.approx(sum(f1) / 3, rel=1e-12)


def test_bad_input_is_refused() -> None:
    proba, y = synthetic(0, 200, 2)
    with pytest.raises(StatsError, match="need 20"):
        fit_calibrator(proba[:30], y[:30])
    with pytest.raises(StatsError, match="no rows"):
        fit_calibrator(proba[:0], y[:0])
    bad = proba.copy()
    bad[3, 0] = math.nan
    with pytest.raises(StatsError, match="NaN"):
        fit_calibrator(bad, y)
    calibrator = fit_calibrator(proba, y)
    with pytest.raises(StatsError, match="NaN"):
        estimate(calibrator, bad)
    with pytest.raises(StatsError, match="no rows"):
        estimate(calibrator, proba[:0])
    with pytest.raises(StatsError, match="method"):
        fit_calibrator(proba, y, method="isotonic")
    with pytest.raises(StatsError, match="rows"):
        estimate_error(estimate(calibrator, proba[:10]), classifier_quality(y, y, None, 2))
