"""Joining a batch of feedback items with the stored predictions, vectorised per model.

This module owns the join behind ``POST /v1/feedback``: one dict lookup per request id, then numpy over
the matches. Each item ends ``joined`` (with the stored prediction), ``accepted`` (with the prediction it
carried) or refused with a reason: ``malformed``, ``unknown_model``, ``unknown_version``, ``config`` (the
version has no usable ``[feedback]`` roles), ``signature``, ``datatype``, ``shape``, ``value``,
``unmatched`` (no stored prediction and none carried, or a stored one of another version than named),
``unsampled`` (no stored prediction and none carried, and the gateway's deterministic rule at the rate its
samples state says it never sampled this id: expected, not a broken join),
``late`` (the prediction is older than ``ttl_seconds`` at the label event, or its window is closed),
``duplicate`` (the request is labelled already: the first label wins, within a batch too). A refusal never
affects the other items. Counted in ``infergate_feedback_total{model,result}`` with result matched (joined
or accepted), unmatched, unsampled, late, duplicate or invalid (every other reason).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from monitor.feedback_labels import extract_labels
from monitor.feedback_store import PredictionStore
from monitor.feedback_version import LabelError, VersionFeedback
from monitor.feedback_wire import FeedbackItems
from registry.layout import parse_version
from registry.sampling import would_sample

if TYPE_CHECKING:
    from monitor.feedback import FeedbackHub

__all__ = ["Join", "Outcome"]

I64 = npt.NDArray[np.int64]
_RESULT = {
    "joined": "matched",
    "accepted": "matched",
    "unmatched": "unmatched",
    "unsampled": "unsampled",
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


class Join:
    """One batch's join against ``hub`` (see the module doc): :meth:`run` it once."""

    def __init__(self, hub: FeedbackHub, items: FeedbackItems) -> None:
        self.hub, self.items = hub, items
        self.out = Outcome(len(items))
        self.now = hub.wall_ns()

    async def run(self) -> Outcome:
        """Join every item (see the module doc); never raises for an item's fault."""
        items, out = self.items, self.out
        for i, problem in enumerate(items.invalid):
            if problem is not None:
                out.refuse(i, "malformed", problem)
        names = np.array(items.model, dtype=object)
        for model in sorted(set(items.model)):
            pick = np.flatnonzero((names == model) & (out.status == ""))
            if len(pick):
                await self._model(model, pick)
        models = np.where(np.isin(out.status, ["malformed", "unknown_model"]), "", names)
        for model in set(models.tolist()):
            statuses = out.status[models == model]
            for status in set(statuses.tolist()):
                count = int((statuses == status).sum())
                self.hub.metrics.total.labels(model, _RESULT.get(status, "invalid")).inc(count)
        self.hub.gauge_store()
        return out

    async def _model(self, model: str, pick: I64) -> None:
        items, out = self.items, self.out
        store = await self.hub.saved_store(model)
        seqs = (
            store.lookup([items.request_id[i] for i in pick.tolist()]) if store is not None else pick * 0 - 1
        )
        found = seqs >= 0
        if store is not None and found.any():
            await self._found(model, store, pick[found], seqs[found])
        missing = pick[~found]
        bare = np.fromiter(
            (not items.prediction(i) and not items.version[i] for i in missing.tolist()), np.bool_
        )
        rate = self.hub.rates.get(model, 0.0)
        for i in missing[bare].tolist():
            if 0.0 < rate < 1.0 and not would_sample(items.request_id[i], rate):
                out.refuse(
                    i,
                    "unsampled",
                    f"the gateway did not sample this request ({model} is sampled at {rate:g}); "
                    "send its prediction with the label",
                )
            else:
                out.refuse(i, "unmatched", f"no prediction of {model} is stored for this request")
        for item in missing[~bare].tolist():
            await self._carry(model, item)

    async def _found(self, model: str, store: PredictionStore, pick: I64, seqs: I64) -> None:
        """Items whose request has a stored prediction: checked (version, first label, TTL), then joined."""
        items, out, now = self.items, self.out, self.now
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
            vf = self.hub.versions.get((model, version))
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
    ) -> None:
        """Label the stored predictions ``seqs`` of one version (first label in the batch wins)."""
        items, out, now = self.items, self.out, self.now
        try:
            vf = await self.hub.state(model, version)
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
        self.hub.dirty[model] = True
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
            await self.hub.state(model, version)
        except LabelError as exc:
            return exc.reason, str(exc)
        return "unmatched", None

    async def _carry(self, model: str, item: int) -> None:
        items, out, now = self.items, self.out, self.now
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
            vf = await self.hub.state(model, version)
            pred, proba, n = vf.carried(items.prediction(item))
            label = vf.label(items.labels(item), n)
        except LabelError as exc:
            out.refuse(item, exc.reason, str(exc))
            return
        stamp = items.prediction_ns(item)
        if stamp <= 0:
            out.refuse(item, "value", "prediction_time_ns is required with a carried prediction")
            return
        store = self.hub.stores.get(model)
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
            self.hub.store_for(vf).add([rid], version, rows, times, pred, proba, labelled=True)
        out.status[item] = "accepted"
        _count(vf, out.status, [item])


def _count(vf: VersionFeedback, status: npt.NDArray[Any], items: Any) -> None:
    chosen = status[items]
    for reason in set(chosen.tolist()):
        vf.counts[reason] = vf.counts.get(reason, 0) + int((chosen == reason).sum())
