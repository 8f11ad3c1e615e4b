"""Window evaluation: the statistics of one closed window and which features drift.

This module owns the stage after a window closes. :func:`evaluate_window` runs off the event loop (in
the engine's executor; the kernels release the GIL) and turns a :class:`~monitor.windows.ClosedWindow`
into a :class:`WindowResult`:

* PSI on the coarse bins and the grid KS with its bound, from the counts (always);
* with the audit buffer, the exact KS statistic and its p-value (as scipy's ``ks_2samp`` 'auto'),
  Benjamini-Hochberg-adjusted across the version's features;
* NaN and +-inf rates per feature, which are drift signals of their own;
* the same PSI and grid KS for the sliding window.

A feature **drifts** when (1) PSI >= the PSI threshold (``psi_threshold``, or with
``psi_threshold_mode = "calibrated"`` the null quantile of :func:`monitor.thresholds.psi_null_threshold`
at level ``alpha / F``, ``F`` the features with values in the window: Bonferroni, so the window as a
whole false-alarms at about ``alpha`` however many features the version has),
or (2) its KS statistic >= ``ks_min_effect`` and, where a p-value was computed, the adjusted p-value
< ``alpha`` (effect size first: at large n a p-value alone flags everything; without the audit the
statistic is the grid value, a lower bound of the true one), or (3) its NaN or +-inf rate differs from
the reference's by at least ``nonfinite_threshold``. A feature without values in the window is null.

``psi_sized`` says whether the window is large enough for the calibrated cut: the chi-square null of
PSI needs about :data:`MIN_VALUES_PER_BIN` window values per coarse bin the reference fills (with fewer,
a decile left empty by chance adds ``0.1 ln(0.1 / eps)`` to PSI and false alarms soar: see the 20-row
case of ``python -m bench drift-power``). Always true in fixed mode, whose own size rule is
:func:`monitor.decisions.large_enough`'s.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from monitor import stats
from monitor.kolmogorov import ks_2samp_pvalues
from monitor.reference import Profile
from monitor.thresholds import benjamini_hochberg, psi_null_threshold
from monitor.windows import ClosedWindow
from registry.config import DriftConfig

__all__ = ["MIN_VALUES_PER_BIN", "FeatureResult", "SlidingResult", "WindowResult", "evaluate_window"]

MIN_VALUES_PER_BIN = 20
"""Calibrated mode judges a window only with this many values per coarse bin the reference fills (200
for deciles); measured by ``python -m bench drift-power`` (the 20- and 100-row cases)."""


@dataclass(frozen=True)
class FeatureResult:
    """One feature in one window; None where not computed. ``reasons`` lists what drifted."""

    name: str
    kind: str
    values: int
    psi: float | None
    psi_threshold: float | None
    psi_null_threshold: float | None
    ks: float | None
    ks_grid: float | None
    ks_bound: float | None
    ks_exact: bool
    ks_pvalue: float | None
    ks_pvalue_adjusted: float | None
    nan_rate: float | None
    inf_rate: float | None
    reasons: tuple[str, ...]
    psi_sized: bool = True

    @property
    def drift(self) -> bool:
        return bool(self.reasons)


@dataclass(frozen=True)
class SlidingResult:
    """PSI and grid KS (with bound) per feature over the last ``panes`` windows (``rows`` rows)."""

    panes: int
    rows: int
    psi: tuple[float | None, ...]
    ks: tuple[float | None, ...]
    ks_bound: tuple[float | None, ...]


@dataclass(frozen=True)
class WindowResult:
    """A closed window's verdict: ``drift`` when any feature drifts; ``seconds`` spent evaluating."""

    index: int
    reason: str
    rows: int
    opened_wall: float
    closed_wall: float
    features: tuple[FeatureResult, ...]
    sliding: SlidingResult
    seconds: float

    @property
    def drift(self) -> bool:
        return any(f.drift for f in self.features)


def evaluate_window(profile: Profile, config: DriftConfig, window: ClosedWindow) -> WindowResult:
    """Evaluate ``window`` against ``profile`` under ``config``'s thresholds (see the module doc)."""
    started = time.perf_counter()
    grid = profile.grid
    counts = stats.evaluate(grid, profile.counts, window.buffer.counts)
    special = window.buffer.special
    nonfinite = special[0::3] + special[1::3] + special[2::3]
    values = counts.n + nonfinite
    n_ref = np.diff(profile.sorted_off)
    ks = counts.ks.copy()
    pvalues = np.full(profile.n_features, np.nan)
    exact = np.zeros(profile.n_features, dtype=bool)
    raw = window.raw_values()
    if raw is not None:
        imax, n1, n2 = stats.ks_exact(raw, profile.sorted_values, profile.sorted_off)
        exact = (n1 > 0) & (n2 > 0)
        if exact.any():
            d, p = ks_2samp_pvalues(imax[exact], n1[exact], n2[exact])
            ks[exact], pvalues[exact] = d, p
    adjusted = benjamini_hochberg(pvalues)
    ref_nan, ref_inf = profile.nan_rate(), profile.inf_rate()
    calibrated = config.psi_threshold_mode == "calibrated"
    level = config.alpha / max(1, int(np.count_nonzero(counts.n)))  # Bonferroni over the features
    features = []
    for f, name in enumerate(profile.names):
        total = int(values[f])
        nan_rate = special[3 * f] / total if total else math.nan
        inf_rate = (special[3 * f + 1] + special[3 * f + 2]) / total if total else math.nan
        df = profile.psi_df(f)
        null_cut = psi_null_threshold(df, int(counts.n[f]), int(n_ref[f]), level)
        cut = null_cut if calibrated else config.psi_threshold
        reasons = []
        if counts.psi[f] >= cut:
            reasons.append("psi")
        if ks[f] >= config.ks_min_effect and not adjusted[f] >= config.alpha:
            reasons.append("ks")
        if abs(nan_rate - ref_nan[f]) >= config.nonfinite_threshold:
            reasons.append("nan_rate")
        if abs(inf_rate - ref_inf[f]) >= config.nonfinite_threshold:
            reasons.append("inf_rate")
        has = bool(counts.n[f])
        features.append(
            FeatureResult(
                name=name,
                kind=profile.kinds[f],
                values=total,
                psi=_num(counts.psi[f]),
                psi_threshold=_num(cut) if has else None,
                psi_null_threshold=_num(null_cut) if has else None,
                ks=_num(ks[f]),
                ks_grid=_num(counts.ks[f]),
                ks_bound=_num(ks[f] if exact[f] else counts.ks_bound[f]),
                ks_exact=bool(exact[f]),
                ks_pvalue=_num(pvalues[f]),
                ks_pvalue_adjusted=_num(adjusted[f]),
                nan_rate=_num(nan_rate),
                inf_rate=_num(inf_rate),
                reasons=tuple(reasons),
                psi_sized=not calibrated or bool(counts.n[f] >= MIN_VALUES_PER_BIN * (df + 1)),
            )
        )
    slide = stats.evaluate(grid, profile.counts, window.sliding)
    sliding = SlidingResult(
        panes=window.sliding_panes,
        rows=window.sliding_rows,
        psi=tuple(_num(v) for v in slide.psi),
        ks=tuple(_num(v) for v in slide.ks),
        ks_bound=tuple(_num(v) for v in slide.ks_bound),
    )
    return WindowResult(
        index=window.index,
        reason=window.reason,
        rows=window.rows,
        opened_wall=window.opened_wall,
        closed_wall=window.closed_wall,
        features=tuple(features),
        sliding=sliding,
        seconds=time.perf_counter() - started,
    )


def _num(value: float) -> float | None:
    """A finite float, or None for NaN and infinities (JSON has neither)."""
    number = float(value)
    return number if math.isfinite(number) else None
