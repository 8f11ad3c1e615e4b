"""One rollout step's measurements and its verdict: the gates, judged without wall time.

:class:`StepWindow` collects, for the step in progress, each side's requests, errors and latencies (the
candidate's from the requests it answered, canary, or was mirrored, shadow) and the output comparisons.
Recording is O(1) (latencies go into a bounded numpy ring per side). :func:`judge` is pure: given the
window, the ``[rollout]`` policy, the step's elapsed seconds (from the caller's monotonic clock) and the
drift verdict, it returns "hold", "advance" or "fail" with the failing gate and the figures.

Rules (docs/registry.md "Safe rollout"):
- Gates are judged once the candidate has ``min_requests`` requests in the window (and, when outputs
  can be compared, ``min_requests`` compared requests); a failing gate fails the step at once, before
  ``step_seconds`` have passed. The step advances when every gate passes and ``step_seconds`` passed.
- error_ratio: candidate error ratio - stable error ratio > ``max_error_ratio`` fails.
- p99_ratio: candidate p99 / stable p99 > ``max_p99_ratio`` fails, judged only while both versions serve
  at least ``min_requests`` requests in the same window (latencies from different times and loads are
  not compared): a canary's 100 % step does not judge it, the steps below do. In shadow mode no client
  waits on the candidate and its copies run in groups, so the latencies compared are like for like: the
  candidate's session runs (per copy, the run that answered it) against the stable version's typical
  latency for batches of the same sizes (``paired``), judged once ``min_requests`` copies have both.
- The stable error ratio comes from the same window, or, when the stable side has too few requests there
  (a canary at 100 %), from the last window that had enough.
- agreement: agreeing rows / compared rows < ``min_agreement`` fails.
- drift: the monitor says the candidate drifts (or a feature's PSI exceeds ``max_drift_psi`` > 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from registry.rollout_config import RolloutConfig

__all__ = ["GATES", "Side", "StepWindow", "Verdict", "judge"]

GATES = ("error_ratio", "p99_ratio", "agreement", "drift")
RING = 4096


@dataclass(eq=False)
class Side:
    """Requests, errors and a ring of the latest latencies (seconds) of one version in the window."""

    requests: int = 0
    errors: int = 0
    _ring: np.ndarray = field(default_factory=lambda: np.zeros(RING, dtype=np.float64))

    def record(self, ok: bool, seconds: float) -> None:
        self._ring[self.requests % RING] = seconds
        self.requests += 1
        if not ok:
            self.errors += 1

    def record_many(self, requests: int, errors: int, seconds: float) -> None:
        """``requests`` requests of the same latency, ``errors`` of them failed (a mirrored group)."""
        start = self.requests % RING
        end = start + min(requests, RING)
        self._ring[start : min(end, RING)] = seconds
        if end > RING:  # wrapped around
            self._ring[: end - RING] = seconds
        self.requests += requests
        self.errors += errors

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def p99(self) -> float:
        n = min(self.requests, RING)
        return float(np.quantile(self._ring[:n], 0.99)) if n else 0.0


@dataclass(eq=False)
class StepWindow:
    """Measurements of one step (module docstring)."""

    stable: Side = field(default_factory=Side)
    candidate: Side = field(default_factory=Side)
    #: Shadow mode: the stable version's typical latency for each mirrored run's batch size, one entry
    #: per copy the candidate ran (what the candidate's own run times are judged against).
    paired: Side = field(default_factory=Side)
    compared: int = 0
    rows: int = 0
    agreeing: int = 0
    #: (error ratio, p99) of the last stable window with enough requests (its error ratio is carried into
    #: the next step; the p99 only for the figures).
    stable_baseline: tuple[float, float] | None = None

    def record_shadow(
        self,
        runs: Sequence[tuple[int, int, int, float]],
        copies: int,
        failed: int,
        elapsed: float,
        stable_typical: Callable[[int], float] | None,
    ) -> None:
        """A shadow group's copies, like for like: per run of the candidate's session (copies, of them
        failed, padded rows, seconds) the candidate side records its seconds and the paired side the
        stable version's typical seconds for that batch size (``stable_typical``, its profile; 0:
        unknown). Without runs or a stable profile: the group's ``elapsed`` for all ``copies``."""
        if stable_typical is None or not runs:
            self.candidate.record_many(copies, failed, elapsed)
            return
        for count, errors, padded, seconds in runs:
            self.candidate.record_many(count, errors, seconds)
            stable_s = stable_typical(padded)
            if stable_s > 0:
                self.paired.record_many(count, 0, stable_s)

    def record_comparison(self, rows: int, agreeing: int) -> None:
        self.compared += 1
        self.rows += rows
        self.agreeing += agreeing

    def next(self, min_requests: int) -> StepWindow:
        """A fresh window for the next step, carrying the stable baseline forward."""
        baseline = self.stable_baseline
        if self.stable.requests >= min_requests:
            baseline = (self.stable.error_ratio, self.stable.p99())
        return StepWindow(stable_baseline=baseline)


@dataclass(frozen=True)
class Verdict:
    """``action``: "hold", "advance" or "fail"; ``gate``: the failing gate; ``figures``: what was measured;
    ``results``: gate -> "pass" | "fail" for the gates judged."""

    action: str
    gate: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    results: dict[str, str] = field(default_factory=dict)


def judge(
    window: StepWindow,
    config: RolloutConfig,
    elapsed_s: float,
    *,
    comparable: bool,
    drift: bool | None = None,
) -> Verdict:
    """The step's verdict (module docstring). ``comparable``: whether outputs are compared at all;
    ``drift``: the monitor's verdict on the candidate (None: unknown or no monitor)."""
    cand, stable = window.candidate, window.stable
    figures: dict[str, Any] = {
        "elapsed_s": round(elapsed_s, 3),
        "candidate_requests": cand.requests,
        "candidate_errors": cand.errors,
        "stable_requests": stable.requests,
        "stable_errors": stable.errors,
    }
    results: dict[str, str] = {}
    if config.drift_gate and drift is not None:
        figures["drift"] = drift
        results["drift"] = "fail" if drift else "pass"
        if drift:
            return Verdict("fail", "drift", figures, results)
    need = config.min_requests
    if cand.requests < need:
        return Verdict("hold", "", figures, results)
    base_p99: float | None = None
    base_errors: float | None = None
    if stable.requests >= need:
        base_errors, base_p99 = stable.error_ratio, stable.p99()
    elif window.stable_baseline is not None:
        base_errors = window.stable_baseline[0]
    if config.mode == "shadow":  # like for like: the candidate's runs against the stable's profile
        base_p99 = window.paired.p99() if window.paired.requests >= need else None
    figures["candidate_error_ratio"] = round(cand.error_ratio, 6)
    if base_errors is not None:
        figures["stable_error_ratio"] = round(base_errors, 6)
    excess = cand.error_ratio - (base_errors or 0.0)
    results["error_ratio"] = "fail" if excess > config.max_error_ratio else "pass"
    if results["error_ratio"] == "fail":
        return Verdict("fail", "error_ratio", figures, results)
    if base_p99 is not None and cand.requests > cand.errors:
        cand_p99 = cand.p99()
        ratio = cand_p99 / max(base_p99, 1e-6)
        figures.update(
            candidate_p99_ms=round(cand_p99 * 1e3, 3),
            stable_p99_ms=round(base_p99 * 1e3, 3),
            p99_ratio=round(ratio, 3),
        )
        results["p99_ratio"] = "fail" if ratio > config.max_p99_ratio else "pass"
        if results["p99_ratio"] == "fail":
            return Verdict("fail", "p99_ratio", figures, results)
    if comparable:
        figures["compared_requests"] = window.compared
        if window.compared < need:
            return Verdict("hold", "", figures, results)
        agreement = window.agreeing / window.rows if window.rows else 1.0
        figures["agreement"] = round(agreement, 6)
        results["agreement"] = "fail" if agreement < config.min_agreement else "pass"
        if results["agreement"] == "fail":
            return Verdict("fail", "agreement", figures, results)
    if elapsed_s < config.step_seconds:
        return Verdict("hold", "", figures, results)
    return Verdict("advance", "", figures, results)
