"""The latency profile: buckets, robust estimates, interpolation and monotonicity."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.profile import REFRESH_EVERY, LatencyProfile


def test_empty_profile_predicts_zero_and_has_power_of_two_buckets() -> None:
    profile = LatencyProfile(48)
    assert profile.sizes == (1, 2, 4, 8, 16, 32, 48)
    assert profile.predict(10) == 0.0
    assert profile.snapshot() == []


def test_interpolates_between_buckets_and_extrapolates_past_the_largest() -> None:
    profile = LatencyProfile(64)
    profile.observe(1, 0.001)
    profile.observe(8, 0.004)
    assert profile.predict(1) == pytest.approx(0.001)
    assert profile.predict(4) == pytest.approx(0.001 + 0.003 * 3 / 7)
    assert profile.predict(16) == pytest.approx(0.008)
    assert [p.batch_size for p in profile.snapshot()] == [1, 8]


def test_estimate_is_an_upper_estimate_that_tracks_spread() -> None:
    profile = LatencyProfile(8, smoothing=0.2, spread=2.0)
    for value in [0.010, 0.012, 0.010, 0.012] * 10:
        profile.observe(4, value)
    predicted = profile.predict(4)
    assert 0.011 < predicted < 0.015  # above the mean by about two standard deviations


def test_observation_updates_the_largest_bucket_not_above_it() -> None:
    profile = LatencyProfile(16)
    profile.observe(7, 0.005)
    assert [(p.batch_size, p.observations) for p in profile.snapshot()] == [(4, 1)]


@given(st.lists(st.tuples(st.integers(1, 64), st.floats(1e-6, 1.0)), min_size=1, max_size=40))
def test_predictions_never_decrease_with_rows(observations: list[tuple[int, float]]) -> None:
    profile = LatencyProfile(64)
    for rows, seconds in observations:
        profile.observe(rows, seconds)
    predictions = [profile.predict(rows) for rows in range(1, 129)]
    assert all(b >= a - 1e-15 for a, b in itertools.pairwise(predictions))


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        LatencyProfile(0)
    with pytest.raises(ValueError, match="smoothing"):
        LatencyProfile(4, smoothing=0)


def test_one_stall_cannot_blow_up_the_prediction() -> None:
    profile = LatencyProfile(8)
    for _ in range(20):
        profile.observe(4, 0.005)
    profile.observe(4, 0.260)  # a 260 ms stall
    assert profile.predict(4) < 0.010
    for _ in range(50):  # a genuine, lasting slowdown is still learned
        profile.observe(4, 0.050)
    assert profile.predict(4) > 0.045


def test_predictions_follow_observations_within_refresh_every_batches() -> None:
    profile = LatencyProfile(8, smoothing=1.0, spread=0.0)  # smoothing 1: the mean is the last observation
    profile.observe(1, 0.001)
    assert profile.predict(1) == 0.001  # a bucket's first observation counts at once
    for _ in range(REFRESH_EVERY - 1):
        profile.observe(1, 0.002)
    assert profile.predict(1) == 0.001  # not yet re-derived
    assert profile.typical(1) == 0.002  # the mean itself is current
    profile.observe(1, 0.002)
    assert profile.predict(1) == 0.002


def test_compute_is_learned_apart_from_latency_and_falls_back_to_it() -> None:
    profile = LatencyProfile(8)
    assert profile.compute(4) == 0.0  # nothing known
    profile.observe(4, 0.0003)  # latency through the executor: hop and contention included
    assert profile.compute(4) == pytest.approx(profile.typical(4))  # no compute seen: the latency bound
    profile.observe_compute(4, 0.00001)
    assert profile.compute(3) == pytest.approx(0.00001)  # smallest bucket holding 3 rows is 4
    assert profile.typical(4) == pytest.approx(0.0003)  # latency untouched
    for _ in range(200):
        profile.observe_compute(5, 0.00002)  # bucket 4 again (largest not above 5)
    assert profile.compute(4) == pytest.approx(0.00002, rel=1e-3)
    assert profile.compute(8) == pytest.approx(profile.typical(8))  # bucket 8 still unseen


def test_runs_off_the_loop_only_lower_the_compute_estimate() -> None:
    profile = LatencyProfile(4)
    profile.observe_compute(2, 0.0004, lower_only=True)  # a bucket first seen off the loop: taken as is
    assert profile.compute(2) == pytest.approx(0.0004)
    profile.observe_compute(2, 0.004, lower_only=True)  # contention inflated it: ignored
    assert profile.compute(2) == pytest.approx(0.0004)
    profile.observe_compute(2, 0.0001, lower_only=True)  # the model is faster than warm-up said
    assert 0.0001 < profile.compute(2) < 0.0004
    before = profile.compute(2)
    profile.observe_compute(2, 0.004)  # measured on the loop: it may rise
    assert profile.compute(2) > before
