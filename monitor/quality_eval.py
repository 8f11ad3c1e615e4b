"""Evaluating a closed quality window: realized quality, the decision, the CBPE estimate and its error.

This module owns the step from a :class:`~monitor.quality_windows.ClosedQuality` to the window's report
(the ``window`` of the ``quality`` block, one history row). It runs in the engine's executor and is pure:
the statistics are :mod:`monitor.quality` (realized metrics), :mod:`monitor.quality_decisions` (the
verdict against a baseline: Wilson or bootstrap intervals, BH across metrics, the effect size),
:mod:`monitor.quality_baseline` (validation metrics, else the first windows) and :mod:`monitor.cbpe`
(the estimate from the window's probabilities, with the calibrator fitted on the version's labelled
reference rows: :func:`fit_reference_calibrator`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monitor.calibration import Calibrator, fit_calibrator
from monitor.cbpe import estimate, estimate_error
from monitor.decisions import iso_time
from monitor.errors import StatsError
from monitor.quality import ClassifierQuality
from monitor.quality_baseline import WindowBaseline, select_baseline
from monitor.quality_decisions import JoinedRows, judge_window
from monitor.quality_windows import ClosedQuality
from registry.artifacts import OUTPUT_PREFIX, read_npz, read_reference_labels
from registry.errors import RegistryError
from registry.feedback_config import FeedbackConfig, FeedbackRoles

__all__ = ["JudgeInputs", "estimate_open", "evaluate_quality", "fit_reference_calibrator", "window_summary"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JudgeInputs:
    """What a window is judged with: the version's roles and ``[feedback]``, its manifest's validation
    metrics, the baseline folded from its first windows, and its calibrator (None: no estimate)."""

    roles: FeedbackRoles
    config: FeedbackConfig
    validation: dict[str, float]
    window_baseline: WindowBaseline
    calibrator: Calibrator | None


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


def evaluate_quality(window: ClosedQuality, inputs: JudgeInputs) -> dict[str, Any]:
    """The window's summary plus ``metrics`` (realized), ``baseline`` (source and values), ``decision``
    (the verdict, null while there is no baseline), ``estimate`` and ``estimate_error`` (CBPE, classifiers
    with probabilities and a calibrator), and ``detail`` (why something is null).

    The decision is against the validation metrics when the manifest has them (``against:
    "validation"``), else against the first ``baseline_windows`` windows (``"windows"``). With validation
    metrics, once the first windows are folded the window is also judged against them (``self``), and
    ``degraded`` is true when either verdict is; each verdict applies BH across its own metrics."""
    report = window_summary(window)
    report.update(metrics=None, baseline=None, decision=None, estimate=None, estimate_error=None, detail=None)
    if window.rows == 0:
        report["detail"] = "no labelled rows"
        return report
    roles, config = inputs.roles, inputs.config
    classifier = roles.task == "classifier"
    proba = window.proba if classifier else None
    if proba is not None and not np.isfinite(proba).all():
        proba = (
            None  # some requests came without their probabilities: the metrics that need them are left out
        )
        report["detail"] = (
            "some rows have no probabilities: log loss, Brier score, ECE and the estimate left out"
        )
    rows = JoinedRows(
        window.y_true.astype(np.int64) if classifier else window.y_true,
        window.y_pred.astype(np.int64) if classifier else window.y_pred,
        proba,
        (roles.classes or int(max(window.y_true.max(), window.y_pred.max())) + 1) if classifier else None,
    )
    try:
        quality = rows.quality()
    except StatsError as exc:
        report["detail"] = f"quality not computed: {exc}"
        return report
    report["metrics"] = quality.as_dict()
    chosen = select_baseline(inputs.validation, inputs.window_baseline, config.baseline_windows)
    report["baseline"] = {"source": chosen[0], "metrics": chosen[1]} if chosen else {"source": "pending"}
    if chosen is not None:
        try:
            verdict = judge_window(rows, chosen[1], config.min_effect, config.alpha, config.confidence)
            report["decision"] = {**verdict.as_dict(), "against": chosen[0], "self": None}
        except StatsError as exc:
            report["detail"] = f"no decision: {exc}"
    own = inputs.window_baseline
    if (
        report["decision"] is not None
        and chosen
        and chosen[0] == "validation"
        and own.windows >= config.baseline_windows
    ):
        # Also against the version's own first windows: a model that served better than its validation
        # score and then lost it is degraded, though still above the score recorded at publish.
        report["baseline"]["windows"] = own.metrics
        try:
            mine = judge_window(rows, own.metrics, config.min_effect, config.alpha, config.confidence)
            report["decision"]["self"] = mine.as_dict()
            report["decision"]["degraded"] = bool(report["decision"]["degraded"] or mine.degraded)
        except StatsError as exc:
            report["detail"] = f"no decision against the first windows: {exc}"
    if inputs.calibrator is not None and proba is not None and isinstance(quality, ClassifierQuality):
        try:
            est = estimate(inputs.calibrator, proba, confidence=config.confidence)
            report["estimate"] = est.as_dict()
            report["estimate_error"] = estimate_error(est, quality)
        except StatsError as exc:
            report["detail"] = f"no estimate: {exc}"
    return report


def estimate_open(
    calibrator: Calibrator, proba: np.ndarray[Any, Any], confidence: float
) -> dict[str, Any] | None:
    """The CBPE estimate of an open window's sampled probabilities (None when it cannot be made)."""
    try:
        return estimate(calibrator, proba, confidence=confidence).as_dict()
    except StatsError:
        return None


def fit_reference_calibrator(reference: Path, roles: FeedbackRoles) -> tuple[Calibrator | None, str | None]:
    """The CBPE calibrator of a classifier fitted on its ``reference.npz``: ``output:<probabilities>`` and
    ``label:<label>`` (or ``label:<prediction>``); (None, why) when there are none or they do not fit."""
    if roles.task != "classifier" or roles.probabilities is None:
        return None, "no probabilities output"
    try:
        labels = read_reference_labels(reference)
        truth = labels.get(roles.label, labels.get(roles.prediction or ""))
        if truth is None:
            return None, f"reference.npz has no label:{roles.label}"
        proba = read_npz(reference, RegistryError)[OUTPUT_PREFIX + roles.probabilities]
        return fit_calibrator(proba.reshape(len(truth), -1), truth, n_classes=roles.classes or None), None
    except (RegistryError, StatsError, KeyError, OSError) as exc:
        log.warning("%s: no CBPE calibrator: %s", reference, exc)
        return None, str(exc)
