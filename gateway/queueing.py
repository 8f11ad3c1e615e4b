"""Scheduling policy of one model version's queue: service order and what leaves the queue uncomputed.

Contracts:
- Entries are grouped by :func:`collate.batch_key` (only same-key requests share a batch); each key holds a
  heap, and the key whose best entry ranks first is served next.
- Service order is one of: ``deadline`` (earliest deadline, then priority with 1 = highest, then arrival),
  ``arrival`` (the ``fixed`` scheduler: FIFO) or, while :attr:`EntryQueue.lifo` is set, newest first within
  a priority level (adaptive LIFO). Switching order re-ranks every queued entry; the queue leaves LIFO
  (back to its base order) the moment it is empty.
- :attr:`EntryQueue.rows` counts queued rows only; a cancelled entry leaves the count at once and the heap
  lazily. An entry leaves the queue exactly once: taken into a batch, shed, or discarded.
- :attr:`EntryQueue.nonempty_since` is when the queue last went from empty to non-empty (None when empty):
  the "has the queue stood?" signal of CoDel-style overload detection.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.collate import BatchKey
from gateway.validate import DecodedRequest

if TYPE_CHECKING:
    from gateway.execution import BatchResult

Predict = Callable[[int], float]
_Rank = tuple[float, float, int]

#: The CoDel target as a share of the budgets requests bring (:func:`codel_limits`: why not less).
CODEL_TARGET_SHARE = 0.5


def codel_limits(
    budget: float,
    max_delay: float,
    full_batch: float,
    *,
    target: float | None = None,
    interval: float | None = None,
) -> tuple[float, float]:
    """(target, interval) in seconds for :meth:`EntryQueue.police`: the explicit ones, or derived from the
    typical ``budget`` requests bring. The target is at least twice ``max_delay`` (the queue delay) and
    never below ``full_batch`` (one full batch's predicted latency): what arrived during the last batch is
    what can fill the next one, so a shorter target would starve batches under overload."""
    if target is None:
        target = max(CODEL_TARGET_SHARE * budget, 2 * max_delay, full_batch, 1e-3)
    if interval is None:
        interval = max(budget, 2 * target)
    return target, interval


@dataclass(eq=False, slots=True)
class Entry:
    """One queued request and its future (set exactly once)."""

    request: DecodedRequest
    deadline: float
    priority: int
    enqueued: float
    future: asyncio.Future[BatchResult]
    key: BatchKey
    seq: int
    queued: bool = True
    probe: bool = False

    @property
    def rows(self) -> int:
        return self.request.rows


@dataclass(slots=True)
class _KeyHeap:
    heap: list[tuple[float, float, int, Entry]] = field(default_factory=list)
    rows: int = 0


class EntryQueue:
    """The bounded-by-caller queue of one version."""

    def __init__(self, *, deadline_order: bool) -> None:
        self._deadline_order = deadline_order
        self._keys: dict[BatchKey, _KeyHeap] = {}
        self.rows = 0
        self.lifo = False
        self.nonempty_since: float | None = None

    def _rank(self, entry: Entry) -> _Rank:
        if self.lifo:
            return (float(entry.priority), 0.0, -entry.seq)
        if self._deadline_order:
            return (entry.deadline, float(entry.priority), entry.seq)
        return (entry.enqueued, float(entry.priority), entry.seq)

    def push(self, entry: Entry) -> None:
        if self.rows == 0:
            self.nonempty_since = entry.enqueued
        keyed = self._keys.get(entry.key)
        if keyed is None:
            keyed = self._keys[entry.key] = _KeyHeap()
        heapq.heappush(keyed.heap, (*self._rank(entry), entry))
        keyed.rows += entry.rows
        self.rows += entry.rows

    def discard(self, entry: Entry) -> bool:
        """Takes a cancelled entry out of the count (off its heap lazily); False if it had left already."""
        if not entry.queued:
            return False
        entry.queued = False
        keyed = self._keys.get(entry.key)
        if keyed is not None:
            keyed.rows -= entry.rows
        self._remove_rows(entry.rows)
        return True

    def set_lifo(self, lifo: bool) -> None:
        """Switches between newest-first and the base order, re-ranking every queued entry."""
        if lifo == self.lifo:
            return
        self.lifo = lifo
        for keyed in self._keys.values():
            keyed.heap = [(*self._rank(item[3]), item[3]) for item in keyed.heap if item[3].queued]
            heapq.heapify(keyed.heap)

    def head_key(self) -> BatchKey | None:
        """The key whose first live entry ranks first (dead heads are dropped on the way)."""
        best: tuple[_Rank, BatchKey] | None = None
        for key in list(self._keys):
            heap = self._keys[key].heap
            while heap and not heap[0][3].queued:
                heapq.heappop(heap)
            if not heap:
                del self._keys[key]
                continue
            rank = heap[0][:3]
            if best is None or rank < best[0]:
                best = (rank, key)
        return best[1] if best else None

    def head(self, key: BatchKey) -> Entry:
        return self._keys[key].heap[0][3]

    def key_rows(self, key: BatchKey) -> int:
        keyed = self._keys.get(key)
        return keyed.rows if keyed else 0

    def take(
        self, key: BatchKey, now: float, predict: Predict, max_rows: int, *, check_deadlines: bool
    ) -> list[Entry]:
        """The next batch of ``key``: entries in service order while they fit in ``max_rows`` and (when
        ``check_deadlines``) the batch's predicted completion meets every deadline in it. The first live
        entry is always taken: callers shed infeasible heads first."""
        keyed = self._keys.get(key)
        if keyed is None:
            return []
        batch: list[Entry] = []
        rows = 0
        earliest = float("inf")
        heap = keyed.heap
        while heap:
            entry = heap[0][3]
            if not entry.queued:
                heapq.heappop(heap)
                continue
            if batch and rows + entry.rows > max_rows:
                break
            if batch and check_deadlines and now + predict(rows + entry.rows) > min(earliest, entry.deadline):
                break
            heapq.heappop(heap)
            entry.queued = False
            batch.append(entry)
            rows += entry.rows
            earliest = min(earliest, entry.deadline)
        keyed.rows -= rows
        if not heap:
            del self._keys[key]
        self._remove_rows(rows)
        return batch

    def shed_heads(self, now: float, predict: Predict) -> list[Entry]:
        """Removes and returns every head entry (of each key) that can no longer finish by its deadline."""
        shed: list[Entry] = []
        for key in list(self._keys):
            keyed = self._keys[key]
            heap = keyed.heap
            while heap:
                entry = heap[0][3]
                if entry.queued and (entry.probe or now + predict(entry.rows) <= entry.deadline):
                    break
                heapq.heappop(heap)
                if entry.queued:
                    entry.queued = False
                    keyed.rows -= entry.rows
                    shed.append(entry)
            if not heap:
                del self._keys[key]
        self._remove_rows(sum(entry.rows for entry in shed))
        return shed

    def sweep(self, now: float, max_wait: float, predict: Predict) -> tuple[list[Entry], list[Entry]]:
        """Removes every entry queued longer than ``max_wait`` (stale) or unable to meet its deadline
        (infeasible), wherever it sits in its heap; returns (stale, infeasible)."""
        stale: list[Entry] = []
        infeasible: list[Entry] = []
        for key in list(self._keys):
            keyed = self._keys[key]
            kept = []
            for item in keyed.heap:
                entry = item[3]
                if not entry.queued:
                    continue
                if entry.probe:
                    kept.append(item)
                elif now + predict(entry.rows) > entry.deadline:
                    infeasible.append(entry)
                elif now - entry.enqueued > max_wait:
                    stale.append(entry)
                else:
                    kept.append(item)
            if len(kept) != len(keyed.heap):
                heapq.heapify(kept)
                keyed.heap = kept
                keyed.rows = sum(item[3].rows for item in kept)
            if not kept:
                del self._keys[key]
        for entry in (*stale, *infeasible):
            entry.queued = False
        self._remove_rows(sum(entry.rows for entry in (*stale, *infeasible)))
        return stale, infeasible

    def police(self, now: float, predict: Predict, target: float, interval: float) -> list[tuple[Entry, str]]:
        """Removes what can no longer be served in time, with the shed reason of each: infeasible heads
        (``deadline_expired``); and, once the queue has not been empty for ``interval`` (it stands) and its
        head has waited ``target`` (the standing queue has gone stale: a queue that stands but moves, as a
        closed loop of clients keeps one, is not overload), turns LIFO on until the queue drains, and also
        removes every entry queued longer than ``target`` (``codel``) or unable to meet its deadline
        wherever it sits (``deadline_expired``)."""
        shed = [(entry, "deadline_expired") for entry in self.shed_heads(now, predict)]
        since = self.nonempty_since
        if not self.lifo and since is not None and now - since >= interval:
            key = self.head_key()
            if key is not None and now - self.head(key).enqueued >= target:
                self.set_lifo(True)
        if self.lifo:
            stale, infeasible = self.sweep(now, target, predict)
            shed += [(entry, "codel") for entry in stale]
            shed += [(entry, "deadline_expired") for entry in infeasible]
        return shed

    def _remove_rows(self, rows: int) -> None:
        self.rows -= rows
        if self.rows == 0:  # drained: the standing queue is gone, back to the base order
            self.nonempty_since = None
            self.lifo = False
