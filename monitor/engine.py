"""The drift engine: samples in, windows closed, statistics off the loop, results out.

This module owns the monitor's data path end to end (DESIGN.md §1) and the background work it needs:

* :meth:`Engine.ingest` decodes a SampleBatch, validates every sample against its version (all or
  nothing: one bad sample rejects the batch), and adds the rows to the version's windows, one call per run
  of consecutive samples of a version (:mod:`monitor.runs`, which also validates and stacks a run's
  samples in one pass), not per sample. It never waits on
  statistics: closed windows go on a queue.
* the **evaluator** task takes closed windows in order and runs :func:`~monitor.drift.evaluate_window`
  in the engine's executor (numba kernels release the GIL), then publishes: drift state, metrics,
  the report entry, the history row and, on a state change, a webhook event.
* the **skew check**: while a version's check wants windows, its rows also go into windows on the
  training profile's bins (:attr:`VersionState.skew_windows`); each such window is queued just before
  the version's own window with the same rows and number, evaluated against the training profile, and
  recorded in the drift tracker (so the window's report entry and history row carry the verdict).
* the **ticker** task closes windows whose time is up (monotonic clock, every ``tick_s``), and quality
  windows (:mod:`monitor.quality_publish`; ground truth comes in through :meth:`Engine.ingest_feedback`).

Both tasks are started by :meth:`start` and cancelled and awaited by :meth:`stop`, which also stops
the webhook sender, the executor and the history.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from monitor.catalog import Catalog, VersionState
from monitor.config import MonitorConfig
from monitor.decisions import iso_time, large_enough, version_entry
from monitor.decode import parse_batch, sample_key, sample_rows
from monitor.drift import WindowResult, evaluate_window
from monitor.errors import SampleError
from monitor.feedback import FeedbackHub
from monitor.feedback_db import FeedbackDB
from monitor.feedback_wire import parse_feedback
from monitor.history import History
from monitor.metrics import MonitorMetrics
from monitor.quality_publish import QualityPublisher
from monitor.runs import read_runs
from monitor.webhook import AlertSender
from monitor.windows import ClosedWindow, VersionWindows
from protos.monitor_pb2 import Sample

__all__ = ["Engine"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class _Job:
    """A closed window to evaluate: of ``windows`` (the version's own, or its skew-check windows when
    ``skew``), which gets the buffer back afterwards."""

    state: VersionState
    window: ClosedWindow
    windows: VersionWindows
    skew: bool = False


class Engine:
    """One monitor's drift engine; :meth:`start` it on the serving loop, :meth:`stop` it at shutdown."""

    def __init__(self, config: MonitorConfig, metrics: MonitorMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="monitor-stats")
        self.history = History(config.db)
        self.catalog = Catalog(
            config.registry, config.profile, self._executor, config.unknown_ttl_s, self.history.state
        )
        self.alerts = AlertSender(config.webhook, metrics)
        self.feedback = FeedbackHub(self.catalog, metrics.feedback, time.time_ns)
        self.quality = QualityPublisher(
            self.feedback, FeedbackDB(self.history), metrics.feedback, self.alerts, self._executor
        )
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._stored: dict[tuple[str, str], dict[str, Any]] = {}
        self._evaluated: dict[tuple[str, int], int] = {}
        self._changed = asyncio.Condition()

    async def start(self) -> None:
        await self.history.open()
        self._stored = {(e["model"], e["version"]): e for e in await self.history.latest()}
        await self.quality.start()
        await self.alerts.start()
        self._tasks = [
            asyncio.create_task(self._evaluate_forever(), name="monitor-evaluator"),
            asyncio.create_task(self._tick_forever(), name="monitor-ticker"),
            *self.quality.tasks(self.config.feedback_snapshot_s),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.quality.close()
        await self.alerts.stop()
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)
        await self.history.close()

    async def ingest(self, data: bytes) -> int:
        """Validate and window the samples of a SampleBatch; return the rows accepted.

        SampleError (the batch is rejected whole and its rows counted) on malformed bytes, an unknown
        model or version, or a sample that does not match its version's signature.
        """
        batch = None
        states: dict[tuple[str, int], VersionState] = {}  # one catalog look-up per version and batch

        async def resolve(sample: Sample, i: int) -> VersionState:
            key = sample_key(sample, i)
            state = states.get(key)
            if state is None:
                state = states[key] = await self.catalog.get(*key)
            return state

        try:
            batch = parse_batch(data)
            runs = await read_runs(batch.samples, resolve)
        except SampleError as exc:
            self.metrics.rejected.labels(exc.reason).inc()
            rows = sum(sample_rows(s) for s in batch.samples) if batch is not None else 0
            self.metrics.rejected_rows.labels(exc.reason).inc(rows)
            raise
        self.feedback.observe(runs)
        self.feedback.note_rates(batch.samples)
        now, wall = asyncio.get_running_loop().time(), time.time()
        accepted = 0
        for run in runs:
            state, block = run.state, run.sample
            version = str(state.version)
            if state.windows is None or state.profile is None:
                self.metrics.unmonitored_rows.labels(state.model, version, state.status).inc(block.rows)
                continue
            skew = state.skew_feed()
            if skew is not None:
                assert state.training is not None
                skew_blocks = [
                    (t, t.matrix(block.tensors[(t.side, t.name)]))
                    for t in state.training.layout.tensors
                    if (t.side, t.name) in block.tensors
                ]
                self._enqueue_skew(state, skew, skew.add(skew_blocks, block.rows, now, wall))
            blocks = [
                (t, t.matrix(block.tensors[(t.side, t.name)]))
                for t in state.profile.layout.tensors
                if (t.side, t.name) in block.tensors
            ]
            dropped = state.windows.dropped
            self._enqueue(state, state.windows.add(blocks, block.rows, now, wall), dropped)
            self.metrics.rows.labels(state.model, version).inc(block.rows)
            accepted += block.rows
        return accepted

    async def ingest_feedback(self, body: bytes, content_type: str) -> dict[str, Any]:
        """Join a feedback body (docs/monitor.md, "Feedback"); per-item results. SampleError("malformed")
        only when the body cannot be read at all."""
        outcome = await self.feedback.ingest(parse_feedback(body, content_type))
        self.quality.tick()  # windows that reached window_rows close now
        return outcome.as_dict()

    def report(self, model: str | None = None, version: str | None = None) -> dict[str, Any]:
        """The ``GET /v1/drift`` document: the latest entry of every known version, filtered."""
        entries = dict(self._stored)
        for s in self.catalog.states():
            key = (s.model, str(s.version))
            if s.entry is not None or key not in entries:
                entries[key] = s.entry or version_entry(
                    s.model,
                    s.version,
                    s.tracker.state,
                    None,
                    status=s.status,
                    detail=s.detail,
                    skew=s.skew_source,
                )
        chosen = [
            {**entries[k], "quality": self.quality.block(k[0], int(k[1]))}
            for k in sorted(entries, key=lambda k: (k[0], int(k[1])))
            if (model is None or k[0] == model) and (version is None or k[1] == version)
        ]
        return {"models": chosen}

    def evaluated(self, model: str, version: int) -> int:
        """How many windows of the version this process has evaluated and published."""
        return self._evaluated.get((model, version), 0)

    async def wait_evaluated(self, model: str, version: int, count: int) -> None:
        """Return once ``count`` windows of the version have been published (no timeout of its own)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.evaluated(model, version) >= count)

    def _enqueue(self, state: VersionState, closed: list[ClosedWindow], dropped_before: int) -> None:
        """Queue closed windows for evaluation and count the ones shed since ``dropped_before``."""
        assert state.windows is not None
        for window in closed:
            self._queue.put_nowait(_Job(state, window, state.windows))
        shed = state.windows.dropped - dropped_before
        if shed:
            self.metrics.windows.labels(state.model, str(state.version), "dropped").inc(shed)

    def _enqueue_skew(self, state: VersionState, windows: VersionWindows, closed: list[ClosedWindow]) -> None:
        """Queue closed skew-check windows (before the version's own windows of the same rows)."""
        for window in closed:
            self._queue.put_nowait(_Job(state, window, windows, skew=True))

    async def _tick_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.tick_s)
            now, wall = loop.time(), time.time()
            self.quality.tick()
            for state in self.catalog.states():
                if state.skew_windows is not None:
                    self._enqueue_skew(state, state.skew_windows, state.skew_windows.close_due(now, wall))
                if state.windows is not None:
                    dropped = state.windows.dropped
                    self._enqueue(state, state.windows.close_due(now, wall), dropped)

    async def _evaluate_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job = await self._queue.get()
            state, window = job.state, job.window
            profile = state.training if job.skew else state.profile
            if profile is None or (job.skew and not state.skew_pending):
                job.windows.release(window.buffer)  # the skew check was decided meanwhile
                continue
            try:
                result = await loop.run_in_executor(
                    self._executor, evaluate_window, profile, state.drift, window
                )
            except Exception:
                log.exception(
                    "%s v%d: evaluating %swindow %d failed",
                    state.model,
                    state.version,
                    "skew-check " if job.skew else "",
                    window.index,
                )
                continue
            finally:
                job.windows.release(window.buffer)
            if job.skew:
                self._publish_skew(state, result)
            else:
                await self._publish(state, result)

    def _publish_skew(self, state: VersionState, result: WindowResult) -> None:
        """Record a window evaluated against the training profile; the report entry and history row of
        the version's own window with the same rows (queued next) carry it."""
        skew = state.tracker.update_skew(result, state.drift.skew_windows)
        if skew is not None:
            state.stop_skew_check()
            self.metrics.skew.labels(state.model, str(state.version)).set(float(skew))
            log.log(
                logging.WARNING if skew else logging.INFO,
                "%s v%d: training/serving skew %s%s",
                state.model,
                state.version,
                "detected in " if skew else "not found",
                ", ".join(state.tracker.state.skew_features) if skew else "",
            )
        if state.result is not None:
            state.entry = version_entry(
                state.model, state.version, state.tracker.state, state.result, skew=state.skew_source
            )

    async def _publish(self, state: VersionState, result: WindowResult) -> None:
        # A window too small for the PSI rule to be meaningful (see decisions.large_enough) neither starts
        # nor ends drift: a quiet minute of 8 rows must not page anyone.
        event = state.tracker.update(result.drift, result.index) if large_enough(result) else None
        entry = version_entry(state.model, state.version, state.tracker.state, result, skew=state.skew_source)
        state.result, state.entry = result, entry
        labels = (state.model, str(state.version))
        for f in result.features:
            for gauge, value in (
                (self.metrics.psi, f.psi),
                (self.metrics.ks, f.ks),
                (self.metrics.ks_pvalue, f.ks_pvalue),
                (self.metrics.feature_drift, float(f.drift) if f.values else None),
            ):
                if value is None:
                    with contextlib.suppress(KeyError):
                        gauge.remove(*labels, f.name)
                else:
                    gauge.labels(*labels, f.name).set(value)
        self.metrics.detected.labels(*labels).set(float(state.tracker.state.in_drift))
        if state.tracker.state.skew is not None and state.skew_source is not None:
            self.metrics.skew.labels(*labels).set(float(state.tracker.state.skew))
        self.metrics.windows.labels(*labels, "evaluated").inc()
        self.metrics.evaluation.observe(result.seconds)
        try:
            await self.history.record(
                entry, int(result.closed_wall * 1e9), dataclasses.replace(state.tracker.state)
            )
        except Exception:
            log.exception("%s v%d: could not store window %d", state.model, state.version, result.index)
        if event is not None:
            self.alerts.offer(
                {
                    "event": event,
                    "model": state.model,
                    "version": str(state.version),
                    "at": iso_time(time.time()),
                    "features": [f.name for f in result.features if f.drift],
                    "report": entry,
                }
            )
        self._evaluated[(state.model, state.version)] = self.evaluated(state.model, state.version) + 1
        async with self._changed:
            self._changed.notify_all()
