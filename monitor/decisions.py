"""Version decisions and the drift report format.

This module owns the last stage of a window's evaluation on the event loop: whether the model version
is in drift, and the JSON every consumer reads (``GET /v1/drift``, the history, webhook events).

* A version **enters** drift after ``consecutive`` drifting windows in a row and **leaves** it after as
  many clean windows in a row (the same hysteresis both ways, so one odd window never flaps the state).
* ``skew`` is null until the version's first window is evaluated, then whether that first window
  drifted: drift present from the start is training/serving skew (a pipeline difference), drift that
  appears later is the world moving.

The report entry follows DESIGN.md §3 exactly and only grows: ``model``, ``version`` (a string, as in
the V2 protocol), ``drift``, ``skew``, ``window`` (``rows``, ``opened_at``, ``closed_at``: ISO 8601 UTC
with milliseconds), and ``features`` (``name``, ``kind``, ``psi``, ``psi_threshold``, ``ks``,
``ks_bound``, ``ks_exact``, ``ks_pvalue``, ``nan_rate``, ``inf_rate``, ``drift``), with nulls for what
was not computed, plus the added fields documented in ``docs/monitor.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from monitor.drift import WindowResult

__all__ = ["DRIFT_ENDED", "DRIFT_STARTED", "DriftTracker", "TrackerState", "iso_time", "version_entry"]

DRIFT_STARTED = "drift_started"
DRIFT_ENDED = "drift_ended"


def iso_time(epoch_s: float) -> str:
    """``epoch_s`` as ISO 8601 UTC with milliseconds, e.g. ``2025-01-31T12:00:00.000Z``."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class TrackerState:
    """What survives a restart: whether the version is in drift, the current runs of drifting and clean
    windows, ``skew``, how many windows were evaluated and the number of the last one (window numbers
    go on from there after a restart)."""

    in_drift: bool = False
    drifting_run: int = 0
    clean_run: int = 0
    skew: bool | None = None
    windows: int = 0
    last_window: int = 0


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
        if s.skew is None:
            s.skew = drifting
        s.drifting_run = s.drifting_run + 1 if drifting else 0
        s.clean_run = 0 if drifting else s.clean_run + 1
        if not s.in_drift and s.drifting_run >= self.consecutive:
            s.in_drift = True
            return DRIFT_STARTED
        if s.in_drift and s.clean_run >= self.consecutive:
            s.in_drift = False
            return DRIFT_ENDED
        return None


def version_entry(
    model: str,
    version: int,
    state: TrackerState,
    result: WindowResult | None,
    *,
    status: str = "ok",
    detail: str | None = None,
) -> dict[str, Any]:
    """One model version's entry of the drift report (``result`` None: no window evaluated yet)."""
    entry: dict[str, Any] = {
        "model": model,
        "version": str(version),
        "drift": state.in_drift,
        "skew": state.skew,
        "window": None,
        "features": [],
        "status": status,
        "detail": detail,
        "consecutive": state.drifting_run,
        "windows": state.windows,
        "sliding": None,
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
