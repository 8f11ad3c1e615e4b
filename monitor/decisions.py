"""Version decisions and the drift report format.

This module owns the last stage of a window's evaluation on the event loop: whether the model version
is in drift, and the JSON every consumer reads (``GET /v1/drift``, the history, webhook events).

* A version **enters** drift after ``consecutive`` drifting windows in a row and **leaves** it after as
  many clean windows in a row (the same hysteresis both ways, so one odd window never flaps the state).
* ``skew`` is the training/serving skew check: the version's first ``skew_windows`` windows are also
  evaluated against its **training** profile (``training.npz``), with the same PSI/KS rules (windows
  too small for the PSI rule, see :func:`large_enough`, are passed over). A feature is skewed when it
  drifts against training in every one of those windows; the version is skewed (``true``) when some
  feature is, and ``false`` as soon as no feature can be (after the first clean window). It is null
  without a training profile, and until decided. Skew is a pipeline difference present from the
  start; drift (against the reference) is the world moving later.

The report entry follows DESIGN.md §3 exactly and only grows: ``model``, ``version`` (a string, as in
the V2 protocol), ``drift``, ``skew``, ``window`` (``rows``, ``opened_at``, ``closed_at``: ISO 8601 UTC
with milliseconds), and ``features`` (``name``, ``kind``, ``psi``, ``psi_threshold``, ``ks``,
``ks_bound``, ``ks_exact``, ``ks_pvalue``, ``nan_rate``, ``inf_rate``, ``drift``), with nulls for what
was not computed, plus the added fields documented in ``docs/monitor.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from monitor.drift import FeatureResult, WindowResult

__all__ = [
    "DRIFT_ENDED",
    "DRIFT_STARTED",
    "DriftTracker",
    "SkewSource",
    "TrackerState",
    "iso_time",
    "large_enough",
    "version_entry",
]

DRIFT_STARTED = "drift_started"
DRIFT_ENDED = "drift_ended"


def iso_time(epoch_s: float) -> str:
    """``epoch_s`` as ISO 8601 UTC with milliseconds, e.g. ``2025-01-31T12:00:00.000Z``, truncated: never
    later than ``epoch_s``, so a ``since=`` query with a window's own ``closed_at`` finds that window
    (``datetime.fromtimestamp`` rounds to the microsecond, which could carry it into the next millisecond)."""
    millis = math.floor(epoch_s * 1e9) // 1_000_000  # the ns the history stores, int(epoch_s * 1e9), floored
    stamp = datetime.fromtimestamp(millis // 1000, UTC) + timedelta(milliseconds=millis % 1000)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class TrackerState:
    """What survives a restart: whether the version is in drift, the current runs of drifting and clean
    windows, how many windows were evaluated and the number of the last one (window numbers go on from
    there after a restart); and the skew check: ``skew``, the windows compared with the training profile
    (``skew_windows``, the last one's number ``skew_window`` and its per-feature results
    ``skew_results``, report JSON), the features that drifted against training in all of them, and the
    windows passed over as too small (``skew_skipped``)."""

    in_drift: bool = False
    drifting_run: int = 0
    clean_run: int = 0
    skew: bool | None = None
    windows: int = 0
    last_window: int = 0
    skew_windows: int = 0
    skew_window: int = 0
    skew_skipped: int = 0
    skew_features: list[str] = field(default_factory=list)
    skew_results: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class SkewSource:
    """A version's training profile as the report shows it: ``required`` first windows are compared with
    it (``[drift].skew_windows``); ``training_rows`` its rows, None when it is unusable (``detail``)."""

    required: int
    training_rows: int | None
    detail: str | None = None


class DriftTracker:
    """The drift state machine of one version (see the module doc)."""

    def __init__(self, consecutive: int, state: TrackerState | None = None) -> None:
        if consecutive < 1:
            raise ValueError(f"consecutive must be >= 1, got {consecutive}")
        self.consecutive = consecutive
        self.state = state if state is not None else TrackerState()

    def update(self, drifting: bool, index: int = 0) -> str | None:
        """Record evaluated window number ``index``; :data:`DRIFT_STARTED` or :data:`DRIFT_ENDED` when the
        state flips."""
        s = self.state
        s.windows += 1
        s.last_window = max(s.last_window, index)
        s.drifting_run = s.drifting_run + 1 if drifting else 0
        s.clean_run = 0 if drifting else s.clean_run + 1
        if not s.in_drift and s.drifting_run >= self.consecutive:
            s.in_drift = True
            return DRIFT_STARTED
        if s.in_drift and s.clean_run >= self.consecutive:
            s.in_drift = False
            return DRIFT_ENDED
        return None

    def skew_pending(self, required: int) -> bool:
        """Whether the skew check still wants windows (undecided, fewer than ``required`` compared)."""
        return self.state.skew is None and self.state.skew_windows < required

    def update_skew(self, result: WindowResult, required: int) -> bool | None:
        """Record a window evaluated against the training profile, one of the first ``required`` large
        enough ones (:func:`large_enough`; a smaller one is counted in ``skew_skipped`` and passed over);
        return ``skew`` (None while undecided). A decided check ignores later windows."""
        s = self.state
        if not self.skew_pending(required):
            return s.skew
        if not large_enough(result):
            s.skew_skipped += 1
            return None
        drifted = [f.name for f in result.features if f.drift]
        s.skew_features = drifted if s.skew_windows == 0 else [n for n in s.skew_features if n in drifted]
        s.skew_windows += 1
        s.skew_window = result.index
        if not s.skew_features:
            s.skew = False
        elif s.skew_windows >= required:
            s.skew = True
        s.skew_results = [_skew_feature(f, s) for f in result.features]
        return s.skew


def large_enough(result: WindowResult) -> bool:
    """Whether a window can tell drift or skew from noise: it has values, and for every feature with
    values the PSI threshold used is at least the null-calibrated one (``chi2(B - 1, 1 - alpha / F) *
    (1/n + 1/m)``), so the PSI rule false-alarms at most at rate ``alpha``, and the window is
    ``psi_sized`` (:data:`monitor.drift.MIN_VALUES_PER_BIN` values per filled coarse bin, in "calibrated"
    mode, where the first condition always holds). In "fixed" mode with 10 bins, alpha 0.01, one feature
    and a large reference, from about 110 rows; in "calibrated" mode with deciles, from 200 rows."""
    judged = [f for f in result.features if f.values and f.psi_threshold is not None]
    return bool(judged) and all(
        f.psi_sized
        and (
            f.psi_null_threshold is None or f.psi_threshold is None or f.psi_null_threshold <= f.psi_threshold
        )
        for f in judged
    )


def _skew_feature(f: FeatureResult, s: TrackerState) -> dict[str, Any]:
    return {
        "name": f.name,
        "kind": f.kind,
        "psi": f.psi,
        "psi_threshold": f.psi_threshold,
        "ks": f.ks,
        "ks_bound": f.ks_bound,
        "ks_exact": f.ks_exact,
        "ks_pvalue": f.ks_pvalue,
        "ks_pvalue_adjusted": f.ks_pvalue_adjusted,
        "nan_rate": f.nan_rate,
        "inf_rate": f.inf_rate,
        "values": f.values,
        "drift": f.drift,
        "reasons": list(f.reasons),
        "skew": None if s.skew is None else f.name in s.skew_features,
    }


def _skew_check(state: TrackerState, source: SkewSource | None) -> dict[str, Any] | None:
    if source is None:
        return None
    if source.training_rows is None:
        status = "invalid_training"
    else:
        status = "pending" if state.skew is None else "done"
    usable = source.training_rows is not None
    return {
        "status": status,
        "detail": source.detail,
        "training_rows": source.training_rows,
        "required": source.required,
        "windows": state.skew_windows if usable else 0,
        "skipped": state.skew_skipped if usable else 0,
        "window": state.skew_window if usable and state.skew_windows else None,
        "features": state.skew_results if usable else [],
    }


def version_entry(
    model: str,
    version: int,
    state: TrackerState,
    result: WindowResult | None,
    *,
    status: str = "ok",
    detail: str | None = None,
    skew: SkewSource | None = None,
) -> dict[str, Any]:
    """One model version's entry of the drift report (``result`` None: no window evaluated yet; ``skew``
    None: the version has no training profile, or the skew check is off)."""
    skewed = state.skew if skew is not None and skew.training_rows is not None else None
    entry: dict[str, Any] = {
        "model": model,
        "version": str(version),
        "drift": state.in_drift,
        "skew": skewed,
        "window": None,
        "features": [],
        "status": status,
        "detail": detail,
        "consecutive": state.drifting_run,
        "windows": state.windows,
        "sliding": None,
        "skew_check": _skew_check(state, skew),
    }
    if result is None:
        return entry
    entry["window"] = {
        "rows": result.rows,
        "opened_at": iso_time(result.opened_wall),
        "closed_at": iso_time(result.closed_wall),
        "index": result.index,
        "closed_by": result.reason,
        "drift": result.drift,
        "evaluation_ms": round(result.seconds * 1000.0, 3),
    }
    compared = {f["name"] for f in state.skew_results}
    entry["features"] = [
        {
            "name": f.name,
            "kind": f.kind,
            "psi": f.psi,
            "psi_threshold": f.psi_threshold,
            "ks": f.ks,
            "ks_bound": f.ks_bound,
            "ks_exact": f.ks_exact,
            "ks_pvalue": f.ks_pvalue,
            "nan_rate": f.nan_rate,
            "inf_rate": f.inf_rate,
            "drift": f.drift,
            "values": f.values,
            "psi_null_threshold": f.psi_null_threshold,
            "ks_grid": f.ks_grid,
            "ks_pvalue_adjusted": f.ks_pvalue_adjusted,
            "reasons": list(f.reasons),
            "skew": None if skewed is None or f.name not in compared else f.name in state.skew_features,
        }
        for f in result.features
    ]
    sliding = result.sliding
    entry["sliding"] = {
        "panes": sliding.panes,
        "rows": sliding.rows,
        "features": [
            {"name": f.name, "psi": psi, "ks": ks, "ks_bound": bound}
            for f, psi, ks, bound in zip(
                result.features, sliding.psi, sliding.ks, sliding.ks_bound, strict=True
            )
        ],
    }
    return entry
