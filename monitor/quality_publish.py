"""Closing, evaluating and publishing quality windows; the ``quality`` block of ``GET /v1/drift``.

This module owns the background half of the feedback path. :meth:`QualityPublisher.tick` (the engine's
ticker calls it every ``tick_s``; tests call it with their own clock) expires stored predictions past
their TTL and closes the quality windows that are due; :meth:`run_forever` evaluates each closed window
in the executor (:func:`~monitor.quality_eval.evaluate_quality`) in order and publishes it: the
version's last window and counts, the gauges, a history row, and on a change of the degraded state (with
the hysteresis of :class:`~monitor.decisions.DriftTracker`, ``[feedback].consecutive`` windows) a
webhook event ``quality_degraded`` / ``quality_recovered`` naming the window's prediction-time range and
its labelled rows (the data a retraining would use).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from concurrent.futures import Executor
from typing import Any

from monitor.decisions import DRIFT_STARTED, TrackerState, iso_time
from monitor.feedback import FeedbackHub
from monitor.feedback_db import FeedbackDB
from monitor.feedback_metrics import FeedbackMetrics
from monitor.feedback_store import from_bytes, to_bytes
from monitor.feedback_version import VersionFeedback
from monitor.quality_baseline import WindowBaseline
from monitor.quality_eval import JudgeInputs, estimate_open, evaluate_quality, fit_reference_calibrator
from monitor.quality_windows import ClosedQuality
from monitor.webhook import AlertSender

__all__ = ["QUALITY_DEGRADED", "QUALITY_RECOVERED", "QualityPublisher"]

log = logging.getLogger(__name__)

_BASELINE_FIELDS = frozenset(f.name for f in dataclasses.fields(WindowBaseline))
QUALITY_DEGRADED = "quality_degraded"
QUALITY_RECOVERED = "quality_recovered"


class QualityPublisher:
    """See the module doc; ``executor`` runs the statistics, ``db`` keeps windows, state and stores."""

    def __init__(
        self,
        hub: FeedbackHub,
        db: FeedbackDB,
        metrics: FeedbackMetrics,
        alerts: AlertSender,
        executor: Executor,
    ) -> None:
        self.hub, self.db, self.metrics, self.alerts, self.executor = hub, db, metrics, alerts, executor
        self._queue: asyncio.Queue[tuple[VersionFeedback, ClosedQuality]] = asyncio.Queue()
        self._evaluated: dict[tuple[str, int], int] = {}
        self._changed = asyncio.Condition()
        self._states: dict[tuple[str, int], dict[str, Any]] = {}
        self._estimating: set[tuple[str, int]] = set()
        self._calibrations: dict[tuple[str, int], asyncio.Task[None]] = {}
        #: Set once the versions with a saved quality state are loaded again (after :meth:`start`).
        self.restored = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Create the tables; load the stored quality states and prediction stores."""
        await self.db.open()
        self._states = await self.db.states()
        loop = asyncio.get_running_loop()
        blobs = await self.db.load_stores()
        self.hub.saved_stores = {
            m: await loop.run_in_executor(self.executor, from_bytes, b) for m, b in blobs.items()
        }
        self.hub.on_version = self._resume
        self._background.add(asyncio.create_task(self._restore_versions(list(self._states))))

    async def _restore_versions(self, keys: list[tuple[str, int]]) -> None:
        """Load the versions with a saved quality state, so that their block and gauges are back before
        new traffic (a version no longer in the registry is skipped), and rebuild the saved prediction
        stores in the executor (a store first needed before that is rebuilt on the spot)."""
        for model in list(self.hub.saved_stores):
            await self.hub.restore_saved(model, self.executor)
        for model, version in keys:
            try:
                vf = self.hub.version(await self.hub.catalog.get(model, version))
            except Exception as exc:
                log.info("%s v%d: saved quality state not restored: %s", model, version, exc)
                continue
            if vf is not None:
                self._gauges(vf)
        self.restored.set()

    def _resume(self, vf: VersionFeedback) -> None:
        saved = self._states.pop((vf.model, vf.version), None)
        if saved is not None:
            known = {f.name for f in dataclasses.fields(TrackerState)}
            vf.tracker.state = TrackerState(
                **{k: v for k, v in saved.get("tracker", {}).items() if k in known}
            )
            vf.last = saved.get("last")
            folded = saved.get("window_baseline") or {}
            vf.window_baseline = WindowBaseline(**{k: v for k, v in folded.items() if k in _BASELINE_FIELDS})

    async def snapshot(self) -> None:
        """Save every changed prediction store (serialized in the executor)."""
        snapshots = {m: s.snapshot() for m, s in self.hub.stores.items() if self.hub.dirty.pop(m, False)}
        if snapshots:
            loop = asyncio.get_running_loop()
            blobs = {m: await loop.run_in_executor(self.executor, to_bytes, a) for m, a in snapshots.items()}
            await self.db.save_stores(blobs)

    def tasks(self, snapshot_s: float) -> list[asyncio.Task[None]]:
        """The evaluator and the store saver, started (the engine cancels them)."""
        return [
            asyncio.create_task(self.run_forever(), name="monitor-quality"),
            asyncio.create_task(self._snapshot_forever(snapshot_s), name="monitor-feedback-store"),
        ]

    async def close(self) -> None:
        """Stop the background estimates and restores; save the prediction stores one last time (after
        the tasks are cancelled)."""
        pending = [*self._background, *self._calibrations.values()]
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self.snapshot()
        except Exception:
            log.exception("could not save the prediction stores")

    async def _snapshot_forever(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.snapshot()
            except Exception:
                log.exception("could not save the prediction stores")

    def tick(self, now_ns: int | None = None) -> int:
        """Expire stored predictions and queue the windows due at ``now_ns`` (the hub's clock when None);
        returns how many windows were queued."""
        now = self.hub.wall_ns() if now_ns is None else now_ns
        for store in self.hub.stores.values():
            store.expire(now)
        queued = 0
        for vf in self.hub.versions.values():
            if vf is None:
                continue
            for window in vf.windows.close_due(now):
                self._queue.put_nowait((vf, window))
                queued += 1
            key = (vf.model, vf.version)
            if vf.roles.probabilities is not None and key not in self._estimating:
                latest = vf.windows.latest_probabilities()
                if latest is not None:
                    self._estimating.add(key)
                    self._background.add(asyncio.create_task(self._estimate_open(vf, *latest)))
        self._background = {t for t in self._background if not t.done()}
        self.hub.gauge_store()
        return queued

    def evaluated(self, model: str, version: int) -> int:
        return self._evaluated.get((model, version), 0)

    async def wait(self, model: str, version: int, count: int) -> None:
        """Return once ``count`` quality windows of the version are published (no timeout of its own)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.evaluated(model, version) >= count)

    async def wait_estimate(self, model: str, version: int) -> None:
        """Return once the version's open window has a running estimate (no timeout of its own)."""
        vf = self.hub.versions.get((model, version))
        async with self._changed:
            await self._changed.wait_for(lambda: vf is not None and vf.running is not None)

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            vf, window = await self._queue.get()
            try:
                await self._calibrate(vf)
                inputs = JudgeInputs(vf.roles, vf.config, vf.validation, vf.window_baseline, vf.calibrator)
                report = await loop.run_in_executor(self.executor, evaluate_quality, window, inputs)
                await self._publish(vf, window, report)
            except Exception:
                log.exception("%s v%d: quality window %d failed", vf.model, vf.version, window.index)
            self._evaluated[(vf.model, vf.version)] = self.evaluated(vf.model, vf.version) + 1
            async with self._changed:
                self._changed.notify_all()

    async def _calibrate(self, vf: VersionFeedback) -> None:
        """Fit the version's CBPE calibrator once, in the executor (classifiers with probabilities);
        concurrent callers wait for the same fit."""
        key = (vf.model, vf.version)
        task = self._calibrations.get(key)
        if task is None:
            task = self._calibrations[key] = asyncio.create_task(self._fit(vf))
        await asyncio.shield(task)

    async def _fit(self, vf: VersionFeedback) -> None:
        if vf.reference_path is None or vf.roles.probabilities is None:
            vf.calibrator_detail = "no probabilities output" if vf.reference_path else "no reference"
            return
        loop = asyncio.get_running_loop()
        vf.calibrator, vf.calibrator_detail = await loop.run_in_executor(
            self.executor, fit_reference_calibrator, vf.reference_path, vf.roles
        )

    async def _estimate_open(self, vf: VersionFeedback, index: int, proba: Any) -> None:
        """The running estimate of an open window, in the executor; published as the estimated gauges."""
        try:
            await self._calibrate(vf)
            if vf.calibrator is None:
                return
            loop = asyncio.get_running_loop()
            estimate = await loop.run_in_executor(
                self.executor, estimate_open, vf.calibrator, proba, vf.config.confidence
            )
            if estimate is not None:
                vf.running = {"index": index, **estimate}
                for name in ("accuracy", "f1_macro"):
                    self.metrics.estimated.labels(vf.model, str(vf.version), name).set(estimate[name])
        except Exception:
            log.exception("%s v%d: estimating the open window failed", vf.model, vf.version)
        finally:
            self._estimating.discard((vf.model, vf.version))
            async with self._changed:
                self._changed.notify_all()

    async def _publish(self, vf: VersionFeedback, window: ClosedQuality, report: dict[str, Any]) -> None:
        metrics = report.get("metrics")
        if metrics and vf.window_baseline.windows < vf.config.baseline_windows:
            # the first windows are the version's own baseline, whether or not validation metrics exist
            vf.window_baseline = vf.window_baseline.fold(metrics, window.rows)
        decision = report.get("decision")
        event = None
        if decision is not None:
            event = vf.tracker.update(bool(decision.get("degraded")), window.index)
        vf.last = report
        self._gauges(vf)
        state = {
            "tracker": dataclasses.asdict(vf.tracker.state),
            "last": report,
            "window_baseline": dataclasses.asdict(vf.window_baseline),
        }
        try:
            await self.db.record(vf.model, vf.version, report, state)
        except Exception:
            log.exception("%s v%d: could not store quality window %d", vf.model, vf.version, window.index)
        if event is not None:
            self.alerts.offer(retraining_event(vf, window, report, event == DRIFT_STARTED))

    def _gauges(self, vf: VersionFeedback) -> None:
        """The version's gauges from its last closed window and its state."""
        labels, report = (vf.model, str(vf.version)), vf.last or {}
        for name, value in (report.get("metrics") or {}).items():
            self.metrics.quality.labels(*labels, name).set(value)
        for name, value in ((report.get("baseline") or {}).get("metrics") or {}).items():
            self.metrics.baseline.labels(*labels, name).set(value)
        if report.get("coverage") is not None:
            self.metrics.coverage.labels(*labels).set(report["coverage"])
        self.metrics.degraded.labels(*labels).set(float(vf.tracker.state.in_drift))

    def block(self, model: str, version: int) -> dict[str, Any] | None:
        """The version's ``quality`` block (None when no feedback state exists for it)."""
        key = (model, version)
        if key in self.hub.problems:
            return {"status": "config", "detail": self.hub.problems[key]}
        vf = self.hub.versions.get(key)
        if vf is None:
            return None
        state = vf.tracker.state
        return {
            "status": "ok",
            "detail": None,
            "task": vf.roles.task,
            "prediction": vf.roles.prediction,
            "probabilities": vf.roles.probabilities,
            "label": vf.roles.label,
            "degraded": state.in_drift,
            "consecutive": state.drifting_run,
            "windows": self.evaluated(model, version),
            "baseline": (vf.last or {}).get("baseline") or {"source": "pending"},
            "window": vf.last,
            "open": [{"index": k, "predictions": p, "rows": r} for k, p, r in vf.windows.pending()],
            "estimate": vf.running,
            "calibration": None
            if vf.calibrator is None
            else {
                "reliable": vf.calibrator.reliable,
                "holdout_ece": vf.calibrator.holdout_ece,
                "fit_rows": vf.calibrator.fit_rows,
                "holdout_rows": vf.calibrator.holdout_rows,
            },
            "calibration_detail": vf.calibrator_detail,
            "counts": dict(vf.counts),
        }


def retraining_event(
    vf: VersionFeedback, window: ClosedQuality, report: dict[str, Any], degraded: bool
) -> dict[str, Any]:
    """The webhook body of a quality state change: the deciding window names the data to retrain on."""
    return {
        "event": QUALITY_DEGRADED if degraded else QUALITY_RECOVERED,
        "model": vf.model,
        "version": str(vf.version),
        "at": iso_time(time.time()),
        "data": {
            "prediction_time_start_ns": window.start_ns,
            "prediction_time_end_ns": window.end_ns,
            "rows": window.rows,
            "requests": window.requests,
            "fetch": f"/v1/drift/history?kind=quality&model={vf.model}&version={vf.version}",
        },
        "window": report,
    }
