"""The rollout gates without wall time: :func:`judge` on hand-filled windows with a given elapsed time,
output agreement against a plain-Python oracle, and the sticky split of request ids."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.agreement import agreeing_rows, agreement_kind
from gateway.rollout_drift import drift_url, entry_drifts
from gateway.rollout_live import share_of
from gateway.rollout_window import RING, Side, StepWindow, judge
from registry.rollout_config import RolloutConfig

CONFIG = RolloutConfig(
    mode="canary", steps=(10.0, 100.0), step_seconds=5.0, min_requests=10, max_error_ratio=0.05,
    max_p99_ratio=2.0, min_agreement=0.9,
)  # fmt: skip


def filled(
    stable: list[float], candidate: list[float], *, cand_errors: int = 0, compared: tuple[int, int] = (0, 0)
) -> StepWindow:
    window = StepWindow()
    for seconds in stable:
        window.stable.record(True, seconds)
    for i, seconds in enumerate(candidate):
        window.candidate.record(i >= cand_errors, seconds)
    for _ in range(compared[0]):
        window.record_comparison(1, 1)
    for _ in range(compared[1]):
        window.record_comparison(1, 0)
    return window


def test_holds_until_min_requests_then_until_step_seconds() -> None:
    few = filled([0.01] * 20, [0.01] * 9)
    assert judge(few, CONFIG, 100.0, comparable=False).action == "hold"
    enough = filled([0.01] * 20, [0.01] * 10)
    assert judge(enough, CONFIG, 4.9, comparable=False).action == "hold"
    verdict = judge(enough, CONFIG, 5.0, comparable=False)
    assert verdict.action == "advance"
    assert verdict.results == {"error_ratio": "pass", "p99_ratio": "pass"}


def test_error_ratio_fails_at_once_against_the_stable_ratio() -> None:
    window = filled([0.01] * 20, [0.01] * 20, cand_errors=2)  # 10 % vs 0 %
    verdict = judge(window, CONFIG, 0.1, comparable=False)
    assert (verdict.action, verdict.gate) == ("fail", "error_ratio")
    assert verdict.figures["candidate_error_ratio"] == 0.1
    window = filled([0.01] * 20, [0.01] * 100, cand_errors=4)  # 4 % is within 5 %
    assert judge(window, CONFIG, 0.1, comparable=False).action == "hold"


def test_p99_ratio_uses_both_versions_in_the_same_window() -> None:
    rng = np.random.default_rng(0)
    stable = list(rng.uniform(0.001, 0.002, 200))
    slow = [s * 3 for s in stable]
    verdict = judge(filled(stable, slow), CONFIG, 0.1, comparable=False)
    assert (verdict.action, verdict.gate) == ("fail", "p99_ratio")
    expected = np.quantile(slow, 0.99) / np.quantile(stable, 0.99)
    assert math.isclose(verdict.figures["p99_ratio"], expected, rel_tol=1e-3)
    # No stable requests in the window (a canary at 100 %): p99 is not judged, errors use the baseline.
    carried = filled([0.001] * 20, [0.01] * 20).next(CONFIG.min_requests)
    for _ in range(20):
        carried.candidate.record(True, 0.05)
    verdict = judge(carried, CONFIG, 10.0, comparable=False)
    assert verdict.action == "advance"
    assert "p99_ratio" not in verdict.results


def test_shadow_p99_compares_the_candidates_runs_with_the_stables_profile_not_its_requests() -> None:
    shadow = dataclasses.replace(CONFIG, mode="shadow")
    # Client requests of the stable version are slow (queueing, encoding), the candidate's group runs
    # fast: in shadow mode the request latencies are not what the candidate is judged against.
    window = filled([0.05] * 50, [0.004] * 20)
    for _ in range(20):
        window.paired.record(True, 0.001)  # the stable's profile for the same batch sizes: 4x faster
    verdict = judge(window, shadow, 0.1, comparable=False)
    assert (verdict.action, verdict.gate) == ("fail", "p99_ratio")
    assert math.isclose(verdict.figures["p99_ratio"], 4.0)
    assert verdict.figures["stable_p99_ms"] == 1.0
    # Too few paired runs: p99 is not judged (canary mode would have judged the requests: 0.08 < 2).
    few = filled([0.05] * 50, [0.004] * 20)
    for _ in range(CONFIG.min_requests - 1):
        few.paired.record(True, 0.001)
    assert "p99_ratio" not in judge(few, shadow, 0.1, comparable=False).results
    assert judge(few, CONFIG, 0.1, comparable=False).results["p99_ratio"] == "pass"
    # Like for like: a candidate as fast as the stable's profile passes.
    for _ in range(20):
        few.paired.record(True, 0.004)
    assert judge(few, shadow, 10.0, comparable=False).action == "advance"


def test_agreement_needs_enough_comparisons_and_fails_below_the_minimum() -> None:
    window = filled([0.01] * 20, [0.01] * 20, compared=(5, 0))
    assert judge(window, CONFIG, 10.0, comparable=True).action == "hold"
    window = filled([0.01] * 20, [0.01] * 20, compared=(17, 3))
    verdict = judge(window, CONFIG, 0.1, comparable=True)
    assert (verdict.action, verdict.gate, verdict.figures["agreement"]) == ("fail", "agreement", 0.85)
    window = filled([0.01] * 20, [0.01] * 20, compared=(19, 1))
    assert judge(window, CONFIG, 10.0, comparable=True).action == "advance"


def test_drift_fails_first_and_unknown_never_fails() -> None:
    window = filled([0.01] * 20, [0.01] * 20)
    assert judge(window, CONFIG, 0.0, comparable=False, drift=True).gate == "drift"
    assert judge(window, CONFIG, 10.0, comparable=False, drift=None).action == "advance"
    off = RolloutConfig(mode="canary", drift_gate=False, min_requests=10, step_seconds=1.0)
    assert judge(window, off, 10.0, comparable=False, drift=True).action == "advance"


def test_agreement_kind_from_datatype_and_name() -> None:
    assert agreement_kind("auto", "INT64", "label") == "equal"
    assert agreement_kind("auto", "FP32", "probabilities") == "argmax"
    assert agreement_kind("auto", "FP32", "logits") == "argmax"
    assert agreement_kind("auto", "FP32", "price") == "relative"
    assert agreement_kind("label", "FP32", "price") == "argmax"
    assert agreement_kind("relative", "FP32", "probs") == "relative"


def _oracle(kind: str, a: np.ndarray, b: np.ndarray, tol: float) -> int:
    agree = 0
    for row_a, row_b in zip(a.reshape(len(a), -1).tolist(), b.reshape(len(b), -1).tolist(), strict=True):
        if kind == "argmax":
            agree += row_a.index(max(row_a)) == row_b.index(max(row_b))
        elif kind == "relative":
            agree += all(abs(x - y) <= tol * max(abs(y), 1e-6) for x, y in zip(row_a, row_b, strict=True))
        else:
            agree += row_a == row_b
    return agree


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["argmax", "relative", "equal"]),
    rows=st.integers(1, 12),
    cols=st.integers(1, 5),
    noise=st.sampled_from([0.0, 1e-5, 0.5]),
    seed=st.integers(0, 2**16),
)
def test_agreeing_rows_match_a_plain_python_oracle(
    kind: str, rows: int, cols: int, noise: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    b = rng.normal(size=(rows, cols)).astype(np.float32)
    a = (b + rng.normal(scale=noise, size=b.shape) * (rng.random(size=(rows, 1)) < 0.5)).astype(np.float32)
    if kind == "equal":
        a, b = np.round(a * 2).astype(np.int64), np.round(b * 2).astype(np.int64)
    assert agreeing_rows(kind, a, b, 1e-3) == (
        rows,
        _oracle(kind, a.astype(np.float64), b.astype(np.float64), 1e-3),
    )


def test_shapes_that_differ_disagree() -> None:
    assert agreeing_rows("relative", np.zeros((3, 2)), np.zeros((3, 3)), 1e-3) == (3, 0)


def test_the_split_is_sticky_monotone_and_near_the_share() -> None:
    ids = [f"request-{i}" for i in range(20000)]
    shares = np.array([share_of(i) for i in ids])
    assert shares.min() >= 0 and shares.max() < 10000  # noqa: PT018
    assert [share_of(i) for i in ids[:50]] == list(shares[:50])  # same id, same place
    for percent in (1, 5, 25, 50):
        picked = np.mean(shares < percent * 100)
        assert picked == pytest.approx(percent / 100, abs=0.01)
    # An id on the candidate at 5 % is still there at 25 % (the threshold only grows).
    assert set(np.flatnonzero(shares < 500)) <= set(np.flatnonzero(shares < 2500))


def test_drift_url_and_verdict_of_a_monitor_entry() -> None:
    assert drift_url("ws://127.0.0.1:8090/v1/samples/stream") == "http://127.0.0.1:8090/v1/drift"
    assert drift_url("wss://monitor:443/v1/samples/stream") == "https://monitor:443/v1/drift"
    quiet = {"drift": False, "skew": None, "features": [{"psi": 0.05}, {"psi": None}]}
    assert not entry_drifts(quiet, 0.0)
    assert not entry_drifts(quiet, 0.1)
    assert entry_drifts(quiet, 0.01)
    assert entry_drifts({**quiet, "drift": True}, 0.0)
    assert entry_drifts({**quiet, "skew": True}, 0.0)


@pytest.mark.parametrize("already", [0, RING - 3, RING + 5])
def test_record_many_is_record_repeated(already: int) -> None:
    """A mirrored group's copies (one latency, some failed) are recorded as one call, wrapping the ring
    exactly as repeated single records do."""
    bulk, single = Side(), Side()
    rng = np.random.default_rng(already)
    for seconds in rng.uniform(0.001, 0.002, already):
        bulk.record(True, float(seconds))
        single.record(True, float(seconds))
    bulk.record_many(7, 2, 0.5)
    for i in range(7):
        single.record(i >= 2, 0.5)
    assert (bulk.requests, bulk.errors) == (single.requests, single.errors) == (already + 7, 2)
    assert bulk.p99() == single.p99()
    huge = Side()
    huge.record_many(RING + 10, 0, 0.25)
    assert (huge.requests, huge.p99()) == (RING + 10, 0.25)


def test_record_shadow_pairs_each_run_with_the_stables_typical_latency() -> None:
    window = StepWindow()
    typical = {8: 0.002, 64: 0.010}
    # A stack of 3 copies in bucket 8, then a copy that failed alone in bucket 64.
    window.record_shadow([(3, 0, 8, 0.003), (1, 1, 64, 0.020)], 4, 1, 0.5, lambda rows: typical[rows])
    assert (window.candidate.requests, window.candidate.errors, window.paired.requests) == (4, 1, 4)
    assert window.candidate.p99() == pytest.approx(np.quantile([0.003] * 3 + [0.020], 0.99))
    assert window.paired.p99() == pytest.approx(np.quantile([0.002] * 3 + [0.010], 0.99))
    # No stable profile (or no runs: the version went away): the group's elapsed time, nothing paired.
    fallback = StepWindow()
    fallback.record_shadow([(2, 0, 8, 0.003)], 2, 0, 0.5, None)
    fallback.record_shadow([], 1, 1, 0.7, lambda rows: 0.001)
    assert (fallback.candidate.requests, fallback.candidate.errors, fallback.paired.requests) == (3, 1, 0)
    assert fallback.candidate.p99() == pytest.approx(np.quantile([0.5, 0.5, 0.7], 0.99))
