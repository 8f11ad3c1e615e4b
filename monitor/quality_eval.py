"""Evaluating a closed quality window: realized quality, the CBPE estimate, the decision.

This module owns the step from a :class:`~monitor.quality_windows.ClosedQuality` to the window's report
(the ``window`` of the ``quality`` block, one history row). It runs in the engine's executor. The
statistics themselves live in :mod:`monitor.quality` (realized metrics), :mod:`monitor.cbpe` (the
estimate before labels) and :mod:`monitor.quality_decisions` (intervals, BH, the verdict); they are
imported when present, so that a build without them still joins, windows and counts (the report then
says ``"detail": "quality statistics unavailable"`` and leaves the metrics null).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from monitor.decisions import iso_time
from monitor.quality_windows import ClosedQuality

__all__ = ["evaluate_quality", "stats_module", "window_summary"]


def stats_module(name: str) -> ModuleType | None:
    """``monitor.<name>`` when it is installed, else None."""
    try:
        return importlib.import_module(f"monitor.{name}")
    except ImportError:
        return None


def window_summary(window: ClosedQuality) -> dict[str, Any]:
    """The counts of a closed window (what needs no statistics)."""
    return {
        "index": window.index,
        "start_ns": window.start_ns,
        "end_ns": window.end_ns,
        "opened_at": iso_time(window.start_ns / 1e9),
        "closed_at": iso_time(window.closed_ns / 1e9),
        "closed_ns": window.closed_ns,
        "closed_by": window.closed_by,
        "predictions": window.predictions,
        "rows": window.rows,
        "carried": window.carried,
        "requests": window.requests,
        "coverage": window.coverage,
    }


def evaluate_quality(window: ClosedQuality, task: str, classes: int) -> dict[str, Any]:
    """The window's summary plus ``metrics`` (realized quality, null without labels or statistics) and
    ``detail`` (why metrics are null)."""
    report = window_summary(window)
    report["metrics"] = None
    report["detail"] = None
    quality = stats_module("quality")
    if window.rows == 0:
        report["detail"] = "no labelled rows"
    elif quality is None:
        report["detail"] = "quality statistics unavailable"
    elif task == "classifier":
        n = classes or int(max(window.y_true.max(), window.y_pred.max())) + 1
        realized = quality.classifier_quality(window.y_true.astype("int64"), window.y_pred.astype("int64"),
                                              window.proba, n)  # fmt: skip
        report["metrics"] = realized.as_dict()
    else:
        report["metrics"] = quality.regressor_quality(window.y_true, window.y_pred).as_dict()
    return report
