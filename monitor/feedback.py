"""The feedback path's state: sampled predictions kept per model, and each version's feedback state.

This module owns what the monitor holds between a sample and its label (docs/monitor.md, "Feedback and
model quality"):

* :meth:`FeedbackHub.observe` takes the validated samples of an ingested SampleBatch: their predictions go
  into the model's :class:`~monitor.feedback_store.PredictionStore` (samples with a request id) and
  every sampled row is counted in its version's quality window by prediction time.
* :meth:`FeedbackHub.ingest` joins a batch of feedback items (:mod:`monitor.feedback_join`).
* :meth:`FeedbackHub.version` resolves a version's ``[feedback]`` roles once (a version whose roles do
  not fit its signature is remembered in :attr:`FeedbackHub.problems`); saved stores are restored when
  their model is first needed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from typing import Any

import numpy as np
import numpy.typing as npt

from monitor.catalog import Catalog, VersionState
from monitor.errors import SampleError
from monitor.feedback_join import Join, Outcome
from monitor.feedback_metrics import FeedbackMetrics
from monitor.feedback_store import PredictionStore
from monitor.feedback_version import LabelError, VersionFeedback
from monitor.feedback_wire import FeedbackItems
from monitor.runs import SampleRun
from registry.errors import ConfigError
from registry.feedback_config import feedback_roles

__all__ = ["FeedbackHub", "Outcome"]

log = logging.getLogger(__name__)


class FeedbackHub:
    """Stores, per-version feedback state and the join (see the module doc)."""

    def __init__(self, catalog: Catalog, metrics: FeedbackMetrics, wall_ns: Callable[[], int]) -> None:
        self.catalog = catalog
        self.metrics = metrics
        self.wall_ns = wall_ns
        self.stores: dict[str, PredictionStore] = {}
        self.versions: dict[tuple[str, int], VersionFeedback | None] = {}
        self.problems: dict[tuple[str, int], str] = {}
        #: Stores saved by an earlier process, restored when their model is first needed.
        self.saved_stores: dict[str, dict[str, npt.NDArray[Any]]] = {}
        #: Models whose store changed since the last snapshot.
        self.dirty: dict[str, bool] = {}
        #: The gateway's sampling rate per model, from the samples' ``sample_rate`` (the last one said).
        self.rates: dict[str, float] = {}
        #: Called with each new VersionFeedback (to resume its saved state).
        self.on_version: Callable[[VersionFeedback], None] = lambda vf: None

    def version(self, state: VersionState) -> VersionFeedback | None:
        """The version's feedback state (None, with :attr:`problems` saying why, when its roles fail)."""
        key = (state.model, state.version)
        if key not in self.versions:
            try:
                roles = feedback_roles(state.feedback, state.signature)
            except ConfigError as exc:
                self.problems[key] = str(exc)
                self.versions[key] = None
                log.warning("%s v%d: no quality monitoring: %s", state.model, state.version, exc)
            else:
                vf = VersionFeedback(
                    state.model, state.version, state.signature, state.feedback, roles, state.validation
                )
                vf.reference_path = state.reference_path
                self.versions[key] = vf
                self.on_version(vf)
        return self.versions[key]

    def store_for(self, vf: VersionFeedback) -> PredictionStore:
        """The model's store (created, and restored from its last snapshot, on first use)."""
        store = self.stores.get(vf.model)
        if store is None:
            store = self.stores[vf.model] = PredictionStore(vf.config, vf.roles.classes)
            saved = self.saved_stores.pop(vf.model, None)
            if saved is not None:
                store.restore(saved)
        self.dirty[vf.model] = True
        return store

    async def restore_saved(self, model: str, executor: Executor) -> None:
        """Rebuild the model's saved store in ``executor`` (its version's roles give its shape), unless
        traffic needed it first."""
        saved = self.saved_stores.get(model)
        if saved is None or model in self.stores or not len(saved["e_version"]):
            return
        try:
            vf = await self.state(model, int(saved["e_version"].max()))
        except LabelError as exc:
            log.warning("%s: the saved prediction store is dropped: %s", model, exc)
            self.saved_stores.pop(model, None)
            return
        store = await asyncio.get_running_loop().run_in_executor(executor, _rebuilt, vf, saved)
        if model not in self.stores and self.saved_stores.pop(model, None) is not None:
            self.stores[model] = store

    async def saved_store(self, model: str) -> PredictionStore | None:
        """The model's store, restored from the last snapshot when it was not needed yet."""
        saved = self.saved_stores.get(model)
        if model not in self.stores and saved is not None and len(saved["e_version"]):
            try:
                vf = await self.state(model, int(saved["e_version"].max()))
            except LabelError as exc:
                log.warning("%s: the saved prediction store is dropped: %s", model, exc)
                self.saved_stores.pop(model, None)
                return None
            return self.store_for(vf)
        return self.stores.get(model)

    async def state(self, model: str, version: int) -> VersionFeedback:
        """The feedback state of a READY version; LabelError (``unknown_model``, ``unknown_version`` or
        ``config``) when there is none."""
        try:
            state = await self.catalog.get(model, version)
        except SampleError as exc:
            raise LabelError(exc.reason, str(exc)) from None
        vf = self.version(state)
        if vf is None:
            raise LabelError("config", self.problems[(model, version)])
        return vf

    def observe(self, runs: list[SampleRun]) -> None:
        """Keep the predictions of validated samples, given as runs (:mod:`monitor.runs`): one prediction
        pass per run, one window count and one store append per version of the batch. Samples without rows
        are left out; a sample without a request id is counted in the windows but not stored."""
        now = self.wall_ns()
        grouped: dict[tuple[str, int], list[tuple[VersionFeedback, Any, SampleRun]]] = {}
        for run in runs:
            vf = self.version(run.state)
            block = run.sample
            got = vf.predictions(block.tensors, block.rows) if vf is not None and block.rows else None
            if vf is not None and got is not None:
                grouped.setdefault((vf.model, vf.version), []).append((vf, got, run))
        for parts in grouped.values():
            vf = parts[0][0]
            per_sample = np.concatenate([run.rows for _, _, run in parts])
            stamps = np.concatenate([run.stamps for _, _, run in parts])  # a copy: runs stay as read
            stamps[stamps == 0] = now
            ids = list(itertools.chain.from_iterable(run.ids for _, _, run in parts))
            pred = np.concatenate([got[0] for _, got, _ in parts])
            proba = np.concatenate([got[1] for _, got, _ in parts]) if vf.roles.probabilities else None
            kept = per_sample > 0
            vf.windows.predicted(stamps[kept], per_sample[kept], now, proba)
            named = kept & np.fromiter(map(bool, ids), bool, len(ids))
            if not named.any():
                continue
            row_named = np.repeat(named, per_sample)
            self.store_for(vf).add(
                ids if named.all() else list(itertools.compress(ids, named)),
                vf.version,
                per_sample[named],
                stamps[named],
                pred[row_named],
                proba[row_named] if proba is not None else None,
            )
        self.gauge_store()

    def note_rates(self, samples: Iterable[Any]) -> None:
        """Remember each model's sampling rate as the gateway states it in its samples (0: not stated)."""
        rates = self.rates
        for sample in samples:
            if sample.sample_rate > 0.0:
                rates[sample.model] = sample.sample_rate

    async def ingest(self, items: FeedbackItems) -> Outcome:
        """Join every item of a batch (monitor/feedback_join.py); never raises for an item's fault."""
        return await Join(self, items).run()

    def gauge_store(self) -> None:
        self.metrics.store_rows.set(sum(s.rows.size for s in self.stores.values()))
        totals = {"rows": 0, "bytes": 0, "ttl": 0}
        for store in self.stores.values():
            for reason, count in store.evicted.items():
                totals[reason] += count
        self.metrics.observe_evictions(totals)


def _rebuilt(vf: VersionFeedback, saved: dict[str, npt.NDArray[Any]]) -> PredictionStore:
    store = PredictionStore(vf.config, vf.roles.classes)
    store.restore(saved)
    return store
