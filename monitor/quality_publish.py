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
from monitor.quality_eval import evaluate_quality
from monitor.quality_windows import ClosedQuality
from monitor.webhook import AlertSender

__all__ = ["QUALITY_DEGRADED", "QUALITY_RECOVERED", "QualityPublisher"]

log = logging.getLogger(__name__)

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

    async def start(self) -> None:
        """Create the tables; load the stored quality states and prediction stores."""
        await self.db.open()
        self._states = await self.db.states()
        self.hub.saved_stores = {m: from_bytes(b) for m, b in (await self.db.load_stores()).items()}
        self.hub.on_version = self._resume

    def _resume(self, vf: VersionFeedback) -> None:
        saved = self._states.pop((vf.model, vf.version), None)
        if saved is not None:
            known = {f.name for f in dataclasses.fields(TrackerState)}
            vf.tracker.state = TrackerState(
                **{k: v for k, v in saved.get("tracker", {}).items() if k in known}
            )
            vf.last = saved.get("last")
            vf.baseline = saved.get("baseline", [])

    async def snapshot(self) -> None:
        """Save every changed prediction store (serialized in the executor)."""
        arrays = {m: s.snapshot() for m, s in self.hub.stores.items() if self.hub.dirty.pop(m, False)}
        if arrays:
            loop = asyncio.get_running_loop()
            blobs = {m: await loop.run_in_executor(self.executor, to_bytes, a) for m, a in arrays.items()}
            await self.db.save_stores(blobs)

    def tasks(self, snapshot_s: float) -> list[asyncio.Task[None]]:
        """The evaluator and the store saver, started (the engine cancels them)."""
        return [
            asyncio.create_task(self.run_forever(), name="monitor-quality"),
            asyncio.create_task(self._snapshot_forever(snapshot_s), name="monitor-feedback-store"),
        ]

    async def close(self) -> None:
        """Save the prediction stores one last time (after the tasks are cancelled)."""
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
        self.hub.gauge_store()
        return queued

    def evaluated(self, model: str, version: int) -> int:
        return self._evaluated.get((model, version), 0)

    async def wait(self, model: str, version: int, count: int) -> None:
        """Return once ``count`` quality windows of the version are published (no timeout of its own)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.evaluated(model, version) >= count)

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            vf, window = await self._queue.get()
            try:
                report = await loop.run_in_executor(
                    self.executor, evaluate_quality, window, vf.roles.task, vf.roles.classes
                )
                await self._publish(vf, window, report)
            except Exception:
                log.exception("%s v%d: quality window %d failed", vf.model, vf.version, window.index)
            self._evaluated[(vf.model, vf.version)] = self.evaluated(vf.model, vf.version) + 1
            async with self._changed:
                self._changed.notify_all()

    async def _publish(self, vf: VersionFeedback, window: ClosedQuality, report: dict[str, Any]) -> None:
        metrics = report.get("metrics")
        if metrics and len(vf.baseline) < vf.config.baseline_windows:
            vf.baseline.append({k: v for k, v in metrics.items() if isinstance(v, int | float)})
        decision = report.get("decision")
        event = None
        if decision is not None:
            event = vf.tracker.update(bool(decision.get("degraded")), window.index)
        vf.last = report
        labels = (vf.model, str(vf.version))
        for name, value in (metrics or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.metrics.quality.labels(*labels, name).set(value)
        for name, value in baseline(vf).items():
            self.metrics.baseline.labels(*labels, name).set(value)
        if window.coverage is not None:
            self.metrics.coverage.labels(*labels).set(window.coverage)
        self.metrics.degraded.labels(*labels).set(float(vf.tracker.state.in_drift))
        state = {"tracker": dataclasses.asdict(vf.tracker.state), "last": report, "baseline": vf.baseline}
        try:
            await self.db.record(vf.model, vf.version, report, state)
        except Exception:
            log.exception("%s v%d: could not store quality window %d", vf.model, vf.version, window.index)
        if event is not None:
            self.alerts.offer(retraining_event(vf, window, report, event == DRIFT_STARTED))

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
            "baseline": {"source": baseline_source(vf), "metrics": baseline(vf)},
            "window": vf.last,
            "open": [{"index": k, "predictions": p, "rows": r} for k, p, r in vf.windows.pending()],
            "counts": dict(vf.counts),
        }


def baseline_source(vf: VersionFeedback) -> str:
    """ "validation" (the manifest's metrics), "windows" (the first windows) or "pending"."""
    if vf.validation:
        return "validation"
    return "windows" if vf.baseline and len(vf.baseline) >= vf.config.baseline_windows else "pending"


def baseline(vf: VersionFeedback) -> dict[str, float]:
    """What each metric is judged against: the manifest's validation metrics, else the mean of the
    first ``baseline_windows`` windows (empty while they are still coming)."""
    if vf.validation:
        return dict(vf.validation)
    if not vf.baseline or len(vf.baseline) < vf.config.baseline_windows:
        return {}
    names = set.intersection(*(set(b) for b in vf.baseline))
    return {n: sum(b[n] for b in vf.baseline) / len(vf.baseline) for n in sorted(names)}


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
