"""Per-process recording of request outcomes, and the mergeable summary a client process hands back.

Contracts:

* The hot path is :meth:`Recorder.add`: one ``array.array('q').extend`` of four ints (intended send
  time, actual send time, completion time, status code) under a lock, nothing else. It is safe to call
  from any thread (gRPC completion callbacks run on the channel's thread). Latency is ``done - intended``:
  for open-loop load the intended time comes from the schedule, so time a request waited to be sent counts.
* :meth:`Recorder.fold` (called off the hot path, every few hundred ms and at the end) turns the raw
  arrays into a :class:`Summary` with numpy, then empties them, so memory stays bounded.
* Requests whose intended time is before ``measure_ns`` are warm-up: counted in ``warmup`` and nothing
  else. Measured requests are counted by status; OK ones feed the latency histograms; goodput counts OK
  requests with ``done - intended <= budget_ns`` exactly (not from the histogram). Non-OK requests feed
  ``error_latency`` (time from the intended send to the error: how fast a refusal came back).
* :meth:`Summary.merge` is exact: every field is a count, a sum, a min or a max, and the histograms use
  one global bucket layout (:mod:`loadtests.histogram`).
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from loadtests.histogram import NUM_BUCKETS, Histogram, bucket_index
from loadtests.status import NUM_CODES, OK

__all__ = ["Recorder", "SparseCounts", "Summary"]

Int64Array = npt.NDArray[np.int64]


@dataclass
class SparseCounts:
    """Counts keyed by non-negative int64 keys (sorted, unique): ``window * width + column``."""

    keys: Int64Array = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    counts: Int64Array = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def add(self, keys: Int64Array, counts: Int64Array | None = None) -> None:
        """Adds one count per key (or ``counts`` per key). Costs O(new keys) plus one copy of the arrays."""
        if keys.size == 0:
            return
        unique, inverse = np.unique(keys.astype(np.int64), return_inverse=True)
        added = np.bincount(inverse, weights=counts, minlength=unique.size).astype(np.int64)
        pos = np.searchsorted(self.keys, unique)
        found = pos < self.keys.size
        found[found] = self.keys[pos[found]] == unique[found]
        self.counts[pos[found]] += added[found]
        fresh = ~found
        if fresh.any():
            self.keys = np.insert(self.keys, pos[fresh], unique[fresh])
            self.counts = np.insert(self.counts, pos[fresh], added[fresh])

    def merge(self, other: SparseCounts) -> None:
        self.add(other.keys, other.counts)

    def dense(self, width: int) -> Int64Array:
        """A ``[windows, width]`` matrix (windows = highest window + 1)."""
        rows = int(self.keys.max() // width) + 1 if self.keys.size else 0
        out = np.zeros(rows * width, dtype=np.int64)
        out[self.keys] = self.counts
        return out.reshape(rows, width)


@dataclass
class Summary:
    """What one client process measured in one step; merges exactly with the other processes'."""

    latency: Histogram = field(default_factory=Histogram)
    lag: Histogram = field(default_factory=Histogram)
    error_latency: Histogram = field(default_factory=Histogram)
    timeline: SparseCounts = field(default_factory=SparseCounts)
    statuses: SparseCounts = field(default_factory=SparseCounts)
    good: int = 0
    warmup: int = 0
    first_intended_ns: int | None = None
    last_done_ns: int | None = None

    def merge(self, other: Summary) -> None:
        self.latency.merge(other.latency)
        self.lag.merge(other.lag)
        self.error_latency.merge(other.error_latency)
        self.timeline.merge(other.timeline)
        self.statuses.merge(other.statuses)
        self.good += other.good
        self.warmup += other.warmup
        self.first_intended_ns = _opt(min, self.first_intended_ns, other.first_intended_ns)
        self.last_done_ns = _opt(max, self.last_done_ns, other.last_done_ns)

    def status_totals(self) -> Int64Array:
        """Measured requests per status code (index = code)."""
        if not self.statuses.keys.size:
            return np.zeros(NUM_CODES, dtype=np.int64)
        totals: Int64Array = self.statuses.dense(NUM_CODES).sum(axis=0)
        return totals

    @property
    def measured(self) -> int:
        return int(self.statuses.counts.sum())


class Recorder:
    """Raw outcome arrays for one step of one process, folded into :attr:`summary`."""

    def __init__(self, *, measure_ns: int, window_ns: int, budget_ns: int | None) -> None:
        self.measure_ns = measure_ns
        self.window_ns = window_ns
        self.budget_ns = budget_ns
        self.summary = Summary()
        self.completed = 0
        self._raw = array("q")
        self._lock = threading.Lock()

    def add(self, intended_ns: int, sent_ns: int, done_ns: int, code: int) -> None:
        """Records one finished request (the only per-request call); thread-safe."""
        with self._lock:
            self._raw.extend((intended_ns, sent_ns, done_ns, code))

    def add_records(self, records: Int64Array) -> None:
        """Records many finished requests at once: an (n, 4) int64 array of ``add``'s arguments."""
        flat = np.ascontiguousarray(records, dtype=np.int64).reshape(-1)
        with self._lock:
            self._raw.frombytes(flat.tobytes())

    def fold(self) -> None:
        """Moves the raw records into the summary (numpy, vectorized) and clears them; thread-safe."""
        with self._lock:
            raw, self._raw = self._raw, array("q")
        records = np.frombuffer(raw, dtype=np.int64).reshape(-1, 4) if raw else np.zeros((0, 4), np.int64)
        intended, sent, done, code = records.T
        self.completed += int(intended.size)
        measured = intended >= self.measure_ns
        s = self.summary
        s.warmup += int(intended.size - np.count_nonzero(measured))
        intended, sent, done, code = intended[measured], sent[measured], done[measured], code[measured]
        if intended.size == 0:
            return
        window = (intended - self.measure_ns) // self.window_ns
        s.statuses.add(window * NUM_CODES + code)
        s.lag.record(sent - intended)
        s.first_intended_ns = _opt(min, s.first_intended_ns, int(intended.min()))
        s.last_done_ns = _opt(max, s.last_done_ns, int(done.max()))
        ok = code == OK
        if not ok.all():
            s.error_latency.record((done - intended)[~ok])
        latency = (done - intended)[ok]
        if latency.size == 0:
            return
        s.latency.record(latency)
        s.timeline.add(window[ok] * NUM_BUCKETS + bucket_index(latency))
        s.good += int(latency.size if self.budget_ns is None else np.count_nonzero(latency <= self.budget_ns))


def _opt(pick: Callable[[int, int], int], a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return int(pick(a, b))
