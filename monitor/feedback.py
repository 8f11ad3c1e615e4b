"""The feedback path: sampled predictions kept, ground truth joined to them, labelled rows windowed.

This module owns ``POST /v1/feedback`` behind the handler (docs/monitor.md, "Feedback"):

* :meth:`FeedbackHub.observe` takes the validated samples of an ingested SampleBatch: their predictions go
  into the model's :class:`~monitor.feedback_store.PredictionStore` (samples with a request id) and
  every sampled row is counted in its version's quality window by prediction time.
* :meth:`FeedbackHub.ingest` joins a batch of items, vectorised per model: one dict lookup per id, then
  numpy over the matches. Each item ends ``joined`` (with the stored prediction), ``accepted`` (with the
  prediction it carried) or refused with a reason: ``malformed``, ``unknown_model``, ``unknown_version``,
  ``config`` (the version has no usable ``[feedback]`` roles), ``signature``, ``datatype``, ``shape``,
  ``value``, ``unmatched`` (no stored prediction and none carried, or a stored one of another version),
  ``late`` (the prediction is older than ``ttl_seconds`` at the label event, or its window is closed),
  ``duplicate`` (the request is labelled already: the first label wins). A refusal never affects the
  other items. Counted in ``infergate_feedback_total{model,result}`` with result matched (joined or
  accepted), unmatched, late, duplicate or invalid (every other reason).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from monitor.catalog import Catalog, VersionState
from monitor.decode import DecodedSample
from monitor.errors import SampleError
from monitor.feedback_metrics import FeedbackMetrics
from monitor.feedback_store import PredictionStore
from monitor.feedback_version import LabelError, VersionFeedback
from monitor.feedback_wire import FeedbackItems
from registry.errors import ConfigError
from registry.feedback_config import feedback_roles
from registry.layout import parse_version

__all__ = ["FeedbackHub", "Outcome"]

log = logging.getLogger(__name__)

_RESULT = {
    "joined": "matched",
    "accepted": "matched",
    "unmatched": "unmatched",
    "late": "late",
    "duplicate": "duplicate",
}


class Outcome:
    """Per-item results of one batch: ``status[i]`` ("joined", "accepted" or the refusal reason) and
    ``errors`` (index, reason, message) of the refused ones."""

    def __init__(self, n: int) -> None:
        self.status: list[str] = [""] * n
        self.errors: list[dict[str, Any]] = []

    def refuse(self, i: int, reason: str, message: str) -> None:
        self.status[i] = reason
        self.errors.append({"index": i, "reason": reason, "error": message})

    def as_dict(self) -> dict[str, Any]:
        joined = self.status.count("joined")
        accepted = self.status.count("accepted")
        self.errors.sort(key=lambda e: int(e["index"]))
        return {
            "items": len(self.status),
            "joined": joined,
            "accepted": accepted,
            "rejected": len(self.status) - joined - accepted,
            "results": self.status,
            "errors": self.errors,
        }


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
                self.versions[key] = vf
                self.on_version(vf)
        return self.versions[key]

    def _store(self, vf: VersionFeedback) -> PredictionStore:
        store = self.stores.get(vf.model)
        if store is None:
            store = self.stores[vf.model] = PredictionStore(vf.config, vf.roles.classes)
            saved = self.saved_stores.pop(vf.model, None)
            if saved is not None:
                store.restore(saved)
        self.dirty[vf.model] = True
        return store

    async def _saved_store(self, model: str) -> PredictionStore | None:
        """The model's store, restored from the last snapshot when it was not needed yet."""
        saved = self.saved_stores.get(model)
        if model not in self.stores and saved is not None and len(saved["e_version"]):
            try:
                vf = await self._state(model, int(saved["e_version"].max()))
            except LabelError as exc:
                log.warning("%s: the saved prediction store is dropped: %s", model, exc)
                self.saved_stores.pop(model, None)
                return None
            return self._store(vf)
        return self.stores.get(model)

    def observe(self, samples: list[tuple[VersionState, DecodedSample, str, int]]) -> None:
        """Keep the predictions of validated samples ``(state, decoded, request_id, timestamp_ns)``: one
        window count and one store append per version of the batch."""
        now = self.wall_ns()
        grouped: dict[tuple[str, int], list[tuple[VersionFeedback, Any, int, str, int]]] = {}
        for state, decoded, rid, stamp in samples:
            vf = self.version(state)
            got = vf.predictions(decoded.tensors, decoded.rows) if vf is not None and decoded.rows else None
            if vf is not None and got is not None:
                grouped.setdefault((vf.model, vf.version), []).append(
                    (vf, got, decoded.rows, rid, stamp or now)
                )
        for parts in grouped.values():
            vf = parts[0][0]
            rows = np.array([p[2] for p in parts], np.int32)
            times = np.array([p[4] for p in parts], np.int64)
            vf.windows.predicted(times, rows, now)
            named = [k for k, p in enumerate(parts) if p[3]]
            if not named:
                continue
            pred = np.concatenate([parts[k][1][0] for k in named])
            proba = np.concatenate([parts[k][1][1] for k in named]) if vf.roles.probabilities else None
            self._store(vf).add(
                [parts[k][3] for k in named], vf.version, rows[named], times[named], pred, proba
            )
        self.gauge_store()

    async def ingest(self, items: FeedbackItems) -> Outcome:
        """Join every item (see the module doc); never raises for an item's fault."""
        out = Outcome(len(items))
        now = self.wall_ns()
        for i, problem in enumerate(items.invalid):
            if problem is not None:
                out.refuse(i, "malformed", problem)
        names = np.array(items.model, dtype=object)
        for model in sorted(set(items.model)):
            pick = [i for i in np.flatnonzero(names == model).tolist() if not out.status[i]]
            if pick:
                await self._model(model, pick, items, out, now)
        for i, status in enumerate(out.status):
            model = items.model[i] if out.status[i] not in ("malformed", "unknown_model") else ""
            self.metrics.total.labels(model, _RESULT.get(status, "invalid")).inc()
        self.gauge_store()
        return out

    async def _state(self, model: str, version: int) -> VersionFeedback:
        try:
            state = await self.catalog.get(model, version)
        except SampleError as exc:
            raise LabelError(exc.reason, str(exc)) from None
        vf = self.version(state)
        if vf is None:
            raise LabelError("config", self.problems[(model, version)])
        return vf

    async def _model(self, model: str, pick: list[int], items: FeedbackItems, out: Outcome, now: int) -> None:
        store = await self._saved_store(model)
        ids = [items.request_id[i] for i in pick]
        seqs = store.lookup(ids) if store is not None else np.full(len(pick), -1, np.int64)
        found = seqs >= 0
        if store is not None and found.any():
            gathered = store.gather(seqs[found])
            versions = gathered.version.tolist()
            times, rows, labelled = gathered.time_ns, gathered.rows, gathered.labelled
        joined: dict[int, list[tuple[int, int, Any]]] = {}  # version -> (item, seq, label) to join
        for j, i in enumerate(np.flatnonzero(found).tolist()):
            item = pick[i]
            want = items.version[item]
            if want and parse_version(want) != versions[j]:
                reason = await self._named_version(model, want)
                out.refuse(
                    item, reason[0], reason[1] or f"request {ids[i]!r} was served by version {versions[j]}"
                )
            elif labelled[j]:
                out.refuse(item, "duplicate", f"request {ids[i]!r} is labelled already")
            elif (items.event_ns[item] or now) - times[j] > store.ttl_ns:  # type: ignore[union-attr]
                out.refuse(item, "late", f"the prediction of {ids[i]!r} is older than ttl_seconds")
            else:
                joined.setdefault(versions[j], []).append((item, int(seqs[i]), j))
                continue
            vf = self.versions.get((model, versions[j]))
            if vf is not None:
                _count(vf, out.status, [item])
        for version, entries in joined.items():
            await self._join(model, version, entries, items, out, now, store, times, rows)
        for i in np.flatnonzero(~found).tolist():
            await self._carry(model, pick[i], items, out, now)

    async def _join(
        self,
        model: str,
        version: int,
        entries: list[tuple[int, int, Any]],
        items: FeedbackItems,
        out: Outcome,
        now: int,
        store: Any,
        times: Any,
        rows: Any,
    ) -> None:
        try:
            vf = await self._state(model, version)
        except LabelError as exc:
            for item, _, _ in entries:
                out.refuse(item, exc.reason, str(exc))
            return
        seen: set[int] = set()
        keep: list[int] = []
        labels: list[npt.NDArray[np.float64]] = []
        for k, (item, seq, j) in enumerate(entries):
            if seq in seen:
                out.refuse(
                    item, "duplicate", f"request {items.request_id[item]!r} is labelled twice in this batch"
                )
                continue
            try:
                labels.append(vf.label(items.labels[item], int(rows[j])))
            except LabelError as exc:
                out.refuse(item, exc.reason, str(exc))
                continue
            seen.add(seq)
            keep.append(k)
        if not keep:
            return
        seqs = np.array([entries[k][1] for k in keep], np.int64)
        at = np.array([entries[k][2] for k in keep], np.int64)
        gathered = store.gather(seqs)
        pred, proba = store.row_columns(gathered.row_index)
        late = vf.windows.labelled(
            times[at], rows[at], np.concatenate(labels), pred, proba, np.zeros(len(keep), np.bool_), now
        )
        store.mark(seqs)
        self.dirty[model] = True
        for k, is_late in zip(keep, late.tolist(), strict=True):
            item = entries[k][0]
            if is_late:
                out.refuse(item, "late", f"the quality window of {items.request_id[item]!r} is closed")
            else:
                out.status[item] = "joined"
        _count(vf, out.status, [entries[k][0] for k in keep])

    async def _named_version(self, model: str, text: str) -> tuple[str, str | None]:
        """("unmatched", None) when ``text`` names a version of ``model`` the monitor can use, else the
        reason and message why not."""
        version = parse_version(text)
        if version is None:
            return "unknown_version", f"version {text!r} is not a positive integer"
        try:
            await self._state(model, version)
        except LabelError as exc:
            return exc.reason, str(exc)
        return "unmatched", None

    async def _carry(self, model: str, item: int, items: FeedbackItems, out: Outcome, now: int) -> None:
        rid = items.request_id[item]
        if items.version[item]:
            reason, message = await self._named_version(model, items.version[item])
            if message is not None:
                out.refuse(item, reason, message)
                return
        if not items.prediction[item]:
            out.refuse(item, "unmatched", f"no prediction of {model} is stored for request {rid!r}")
            return
        version = parse_version(items.version[item])
        if version is None:
            out.refuse(item, "unknown_version", "an item that carries its prediction must name its version")
            return
        try:
            vf = await self._state(model, version)
            pred, proba, n = vf.carried(items.prediction[item])
            label = vf.label(items.labels[item], n)
        except LabelError as exc:
            out.refuse(item, exc.reason, str(exc))
            return
        stamp = int(items.prediction_ns[item])
        if stamp <= 0:
            out.refuse(item, "value", "prediction_time_ns is required with a carried prediction")
            return
        store = self.stores.get(model)
        if rid and store is not None and rid in store.index:
            out.refuse(item, "duplicate", f"request {rid!r} is labelled already")
            return
        if (items.event_ns[item] or now) - stamp > int(vf.config.ttl_seconds * 1e9):
            out.refuse(item, "late", f"the prediction of {rid!r} is older than ttl_seconds")
            return
        times, rows = np.array([stamp], np.int64), np.array([n], np.int32)
        if vf.windows.labelled(times, rows, label, pred, proba, np.ones(1, np.bool_), now)[0]:
            out.refuse(item, "late", f"the quality window of {rid!r} is closed")
            return
        if rid:
            self._store(vf).add([rid], version, rows, times, pred, proba, labelled=True)
        out.status[item] = "accepted"
        _count(vf, out.status, [item])

    def gauge_store(self) -> None:
        self.metrics.store_rows.set(sum(s.rows.size for s in self.stores.values()))
        totals = {"rows": 0, "bytes": 0, "ttl": 0}
        for store in self.stores.values():
            for reason, count in store.evicted.items():
                totals[reason] += count
        self.metrics.observe_evictions(totals)


def _count(vf: VersionFeedback, status: list[str], items: list[int]) -> None:
    for i in items:
        vf.counts[status[i]] = vf.counts.get(status[i], 0) + 1
