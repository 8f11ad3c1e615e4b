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
from monitor.feedback_labels import extract_labels
from monitor.feedback_metrics import FeedbackMetrics
from monitor.feedback_store import PredictionStore
from monitor.feedback_version import LabelError, VersionFeedback
from monitor.feedback_wire import FeedbackItems
from registry.errors import ConfigError
from registry.feedback_config import feedback_roles
from registry.layout import parse_version

__all__ = ["FeedbackHub", "Outcome"]

log = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]
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
        self.status: npt.NDArray[Any] = np.full(n, "", dtype=object)
        self.errors: list[dict[str, Any]] = []

    def refuse(self, i: int, reason: str, message: str) -> None:
        self.status[i] = reason
        self.errors.append({"index": i, "reason": reason, "error": message})

    def as_dict(self) -> dict[str, Any]:
        joined = int((self.status == "joined").sum())
        accepted = int((self.status == "accepted").sum())
        self.errors.sort(key=lambda e: int(e["index"]))
        return {
            "items": len(self.status),
            "joined": joined,
            "accepted": accepted,
            "rejected": len(self.status) - joined - accepted,
            "results": self.status.tolist(),
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
                vf.reference_path = state.reference_path
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
            all_proba = np.concatenate([p[1][1] for p in parts]) if vf.roles.probabilities else None
            vf.windows.predicted(times, rows, now, all_proba)
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
            pick = np.flatnonzero((names == model) & (out.status == ""))
            if len(pick):
                await self._model(model, pick, items, out, now)
        models = np.where(np.isin(out.status, ["malformed", "unknown_model"]), "", names)
        for model in set(models.tolist()):
            statuses = out.status[models == model]
            for status in set(statuses.tolist()):
                count = int((statuses == status).sum())
                self.metrics.total.labels(model, _RESULT.get(status, "invalid")).inc(count)
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

    async def _model(self, model: str, pick: I64, items: FeedbackItems, out: Outcome, now: int) -> None:
        store = await self._saved_store(model)
        seqs = (
            store.lookup([items.request_id[i] for i in pick.tolist()]) if store is not None else pick * 0 - 1
        )
        found = seqs >= 0
        if store is not None and found.any():
            await self._found(model, store, pick[found], seqs[found], items, out, now)
        missing = pick[~found]
        bare = np.fromiter(
            (not items.prediction(i) and not items.version[i] for i in missing.tolist()), np.bool_
        )
        out.status[missing[bare]] = "unmatched"
        out.errors += [
            {
                "index": i,
                "reason": "unmatched",
                "error": f"no prediction of {model} is stored for this request",
            }
            for i in missing[bare].tolist()
        ]
        for item in missing[~bare].tolist():
            await self._carry(model, item, items, out, now)

    async def _found(
        self,
        model: str,
        store: PredictionStore,
        pick: I64,
        seqs: I64,
        items: FeedbackItems,
        out: Outcome,
        now: int,
    ) -> None:
        """Items whose request has a stored prediction: checked (version, first label, TTL), then joined."""
        gathered = store.gather(seqs)
        versions = gathered.version
        wants = np.array([items.version[i] for i in pick.tolist()], dtype=object)
        mismatch = (wants != "") & (wants != versions.astype(str).astype(object))
        for i, want in zip(pick[mismatch].tolist(), wants[mismatch].tolist(), strict=True):
            reason, message = await self._named_version(model, want)
            out.refuse(i, reason, message or f"request {items.request_id[i]!r} was served by another version")
        duplicate = gathered.labelled & ~mismatch
        events = items.event_ns[pick]
        late = (np.where(events == 0, now, events) - gathered.time_ns > store.ttl_ns) & ~mismatch & ~duplicate
        for mask, reason, text in (
            (duplicate, "duplicate", "is labelled already"),
            (late, "late", "has a prediction older than ttl_seconds"),
        ):
            for i in pick[mask].tolist():
                out.refuse(i, reason, f"request {items.request_id[i]!r} {text}")
        ok = ~(mismatch | duplicate | late)
        for version in np.unique(versions).tolist():
            vf = self.versions.get((model, version))
            if vf is not None:
                _count(vf, out.status, pick[(versions == version) & ~ok])
            sel = ok & (versions == version)
            if sel.any():
                await self._join(
                    model,
                    version,
                    store,
                    pick[sel],
                    seqs[sel],
                    gathered.time_ns[sel],
                    gathered.rows[sel],
                    items,
                    out,
                    now,
                )

    async def _join(
        self,
        model: str,
        version: int,
        store: PredictionStore,
        pick: I64,
        seqs: I64,
        times: I64,
        rows: npt.NDArray[np.int32],
        items: FeedbackItems,
        out: Outcome,
        now: int,
    ) -> None:
        """Label the stored predictions ``seqs`` of one version (first label in the batch wins)."""
        try:
            vf = await self._state(model, version)
        except LabelError as exc:
            for i in pick.tolist():
                out.refuse(i, exc.reason, str(exc))
            return
        _, first = np.unique(seqs, return_index=True)
        again = np.ones(len(seqs), np.bool_)
        again[first] = False
        for i in pick[again].tolist():
            out.refuse(i, "duplicate", f"request {items.request_id[i]!r} is labelled twice in this batch")
        keep = np.sort(first)
        pick, seqs, times, rows = pick[keep], seqs[keep], times[keep], rows[keep]
        values, ok, errors = extract_labels(vf, items, pick, rows)
        for position, error in errors:
            out.refuse(int(pick[position]), error.reason, str(error))
        pick, seqs, times, rows = pick[ok], seqs[ok], times[ok], rows[ok]
        if not len(pick):
            return
        pred, proba = store.row_columns(store.gather(seqs).row_index)
        late = vf.windows.labelled(times, rows, values, pred, proba, np.zeros(len(pick), np.bool_), now)
        store.mark(seqs)
        self.dirty[model] = True
        out.status[pick[~late]] = "joined"
        for i in pick[late].tolist():
            out.refuse(i, "late", f"the quality window of {items.request_id[i]!r} is closed")
        _count(vf, out.status, pick)

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
        if not items.prediction(item):
            out.refuse(item, "unmatched", f"no prediction of {model} is stored for request {rid!r}")
            return
        version = parse_version(items.version[item])
        if version is None:
            out.refuse(item, "unknown_version", "an item that carries its prediction must name its version")
            return
        try:
            vf = await self._state(model, version)
            pred, proba, n = vf.carried(items.prediction(item))
            label = vf.label(items.labels(item), n)
        except LabelError as exc:
            out.refuse(item, exc.reason, str(exc))
            return
        stamp = items.prediction_ns(item)
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


def _count(vf: VersionFeedback, status: npt.NDArray[Any], items: Any) -> None:
    chosen = status[items]
    for reason in set(chosen.tolist()):
        vf.counts[reason] = vf.counts.get(reason, 0) + int((chosen == reason).sum())
