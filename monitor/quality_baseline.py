"""The baseline a version's window quality is judged against (:mod:`monitor.quality_decisions`).

Two sources, chosen by :func:`select_baseline`: the version's ``validation.metrics`` recorded at publish
(manifest.json; only the names :mod:`monitor.quality` computes, :func:`baseline_from_validation`), else
the version's own first windows, folded by :class:`WindowBaseline`: the row-weighted mean of each
metric over the folded windows, which is exact for the mean-type metrics (accuracy, log_loss, brier,
mae, bias), exact for rmse (folded through its square), and an approximation for the ratio metrics
(precision, recall, F1, ece), whose natural weights are not the row counts. Pure, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from monitor.errors import StatsError
from monitor.quality import HIGHER_IS_BETTER

__all__ = ["WindowBaseline", "baseline_from_validation", "select_baseline"]


def baseline_from_validation(metrics: Mapping[str, float]) -> dict[str, float]:
    """The quality metrics among a manifest's ``validation.metrics`` (other names, such as ``auc`` or
    ``r2``, are not judged; non-finite values are dropped)."""
    return {k: float(v) for k, v in metrics.items() if k in HIGHER_IS_BETTER and math.isfinite(v)}


@dataclass(frozen=True)
class WindowBaseline:
    """A baseline folded from a version's first windows: the row-weighted mean of each metric (rmse
    through its square). Immutable; :meth:`fold` returns the next one."""

    windows: int = 0
    rows: int = 0
    sums: Mapping[str, float] = field(default_factory=dict)
    weights: Mapping[str, float] = field(default_factory=dict)

    def fold(self, metrics: Mapping[str, float], rows: int) -> WindowBaseline:
        """This baseline with one more window (its ``as_dict()`` metrics over ``rows`` rows) folded in;
        NaN values and unknown names are skipped."""
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise StatsError(f"rows: expected a positive integer, got {rows!r}")
        sums, weights = dict(self.sums), dict(self.weights)
        for name, value in baseline_from_validation(metrics).items():
            sums[name] = sums.get(name, 0.0) + rows * (value**2 if name == "rmse" else value)
            weights[name] = weights.get(name, 0.0) + rows
        return WindowBaseline(self.windows + 1, self.rows + rows, sums, weights)

    @property
    def metrics(self) -> dict[str, float]:
        """The folded baseline, metric name -> value."""
        out = {name: total / self.weights[name] for name, total in self.sums.items()}
        if "rmse" in out:
            out["rmse"] = math.sqrt(out["rmse"])
        return out


def select_baseline(
    validation: Mapping[str, float] | None, windows: WindowBaseline, needed: int
) -> tuple[str, dict[str, float]] | None:
    """``("validation", metrics)`` when the manifest's validation metrics name a quality metric, else
    ``("windows", metrics)`` once ``needed`` windows are folded, else None (no baseline yet)."""
    known = baseline_from_validation(validation or {})
    if known:
        return "validation", known
    if windows.windows >= needed and windows.weights:
        return "windows", windows.metrics
    return None
