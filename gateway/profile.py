"""Online latency profile: predicted batch latency by batch size, for one model instance.

Contracts:
- Sizes are tracked in buckets at powers of two up to ``max_batch_size`` (plus ``max_batch_size`` itself).
  An observation of ``rows`` updates the largest bucket not above it, so each bucket's estimate is an upper
  bound for its size.
- Each bucket keeps an exponentially weighted mean and variance of winsorized observations (an
  observation counts at most ``max(3 std, mean)`` above the mean); its estimate is ``mean + k * std``
  (k = 2 by default): a robust upper estimate that one stall cannot blow up. Predictions follow
  observations with a lag of fewer than :data:`REFRESH_EVERY` batches (a new bucket counts at once).
- :meth:`predict` interpolates linearly in rows between known buckets, extrapolates proportionally past the
  largest known one, and is non-decreasing in rows. With no observation at all it predicts 0 (admit all).
- Apart from latency, each bucket keeps the session's own compute time (:meth:`observe_compute`: warm-up
  and batches run on the event loop; runs on the executor thread only lower it), with no thread hop or
  contention in it; :meth:`compute` is what the batcher weighs when it chooses to run a batch inline.
  Latency through the executor cannot stand in for it: on a busy 2-core machine a tiny model's 5-row
  batch measured 120-350 µs that way (the hop's context switches and the CPU they cost) against 6-80 µs
  on the loop, so a batch sent to the executor once looked too slow ever to come back, and 75% of them
  hopped (tiny, C=64).
"""

from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class ProfilePoint:
    """One bucket: batch size, predicted seconds, and how many batches informed it."""

    batch_size: int
    predicted_s: float
    observations: int


#: Estimates are re-derived (a pass over the buckets) at most every this many observations, and at once
#: when a bucket sees its first: a prediction lags the EWMA by fewer batches than it averages over anyway.
REFRESH_EVERY = 8


class LatencyProfile:
    """Predicted latency of a batch of ``rows`` rows on one instance."""

    def __init__(self, max_batch_size: int, *, smoothing: float = 0.1, spread: float = 2.0) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if not 0 < smoothing <= 1:
            raise ValueError("smoothing must be in (0, 1]")
        sizes = [1 << k for k in range(max_batch_size.bit_length()) if 1 << k <= max_batch_size]
        if sizes[-1] != max_batch_size:
            sizes.append(max_batch_size)
        self.sizes: tuple[int, ...] = tuple(sizes)
        self._smoothing = smoothing
        self._spread = spread
        self._mean = [0.0] * len(sizes)
        self._var = [0.0] * len(sizes)
        self._count = [0] * len(sizes)
        self._lock = threading.Lock()  # observe() may run on an executor thread during warm-up
        self._cached: list[tuple[int, float]] | None = None
        self._known_sizes: list[int] = []
        self._stale = 0  # observations since the estimates were last derived
        self._compute = [0.0] * len(sizes)  # EWMA of the session's own seconds (0: none seen)

    def observe(self, rows: int, seconds: float) -> None:
        """Adds one batch's measured latency."""
        index = self._bucket(rows)
        alpha = self._smoothing
        with self._lock:
            if self._count[index] == 0:
                self._mean[index] = seconds
                self._var[index] = 0.0
            else:
                diff = seconds - self._mean[index]
                # Winsorized: one observation moves the estimate by at most alpha * max(3 std, mean), so a
                # single stall (a GC pause, a noisy neighbour) cannot inflate predictions for long.
                cap = max(3.0 * math.sqrt(self._var[index]), self._mean[index])
                diff = min(diff, cap)
                self._mean[index] += alpha * diff
                self._var[index] = (1 - alpha) * (self._var[index] + alpha * diff * diff)
            self._count[index] += 1
            self._stale += 1
            if self._count[index] == 1 or self._stale >= REFRESH_EVERY:
                self._cached = None  # re-derived on the next prediction

    def observe_compute(self, rows: int, seconds: float, *, lower_only: bool = False) -> None:
        """Adds one batch's own compute time (the session run alone, no hop or queueing). With
        ``lower_only`` (a run on the executor thread, whose CPU time contention can inflate) it only ever
        lowers the estimate: a warm-up run slower than the model really is, or a bucket first seen there,
        cannot keep batches off the loop for good, and a hop's own cost never pushes them away."""
        index = self._bucket(rows)
        known = self._compute[index]
        if not known:
            self._compute[index] = seconds
        elif seconds < known or not lower_only:
            self._compute[index] = known + self._smoothing * (seconds - known)

    def compute(self, rows: int) -> float:
        """The session's own seconds for the smallest bucket holding ``rows`` rows; where none was seen,
        :meth:`typical` (latency, an upper bound)."""
        index = self._holding(rows)
        if index is not None and self._compute[index]:
            return self._compute[index]
        return self.typical(rows)

    def predict(self, rows: int) -> float:
        """Predicted seconds for a batch of ``rows`` rows (0 when nothing was observed yet)."""
        known = self._estimates()
        if not known:
            return 0.0
        sizes = self._known_sizes
        above = bisect.bisect_left(sizes, rows)  # first known size >= rows
        if above < len(sizes) and sizes[above] == rows:
            return known[above][1]
        if above == 0:
            return known[0][1]
        lo_size, lo_est = known[above - 1]
        if above == len(sizes):
            return lo_est * rows / lo_size
        hi_size, hi_est = known[above]
        return lo_est + (hi_est - lo_est) * (rows - lo_size) / (hi_size - lo_size)

    def typical(self, rows: int, *, fallback: bool = True) -> float:
        """The mean seconds of the smallest bucket holding ``rows`` rows: the expected cost, without the
        spread :meth:`predict` adds for deadline safety. When that bucket has no observation it falls back
        to :meth:`predict`, or returns 0 with ``fallback=False``. The batcher uses it to choose between
        running inline and the executor, and whether waiting to batch can pay."""
        index = self._holding(rows)
        if index is not None and self._count[index]:
            return self._mean[index]
        return self.predict(rows) if fallback else 0.0

    def snapshot(self) -> list[ProfilePoint]:
        """Every bucket with at least one observation."""
        counts = list(self._count)
        return [ProfilePoint(size, est, counts[self.sizes.index(size)]) for size, est in self._estimates()]

    def _estimates(self) -> list[tuple[int, float]]:
        """(size, estimate) of observed buckets, non-decreasing in size; cached until the next observe."""
        cached = self._cached
        if cached is not None:
            return cached
        out: list[tuple[int, float]] = []
        running = 0.0
        with self._lock:
            for size, mean, var, count in zip(self.sizes, self._mean, self._var, self._count, strict=True):
                if count:
                    running = max(running, mean + self._spread * math.sqrt(var))
                    out.append((size, running))
            self._known_sizes = [size for size, _ in out]
            self._cached = out
            self._stale = 0
        return out

    def _holding(self, rows: int) -> int | None:
        """Index of the smallest bucket holding ``rows`` rows (None past the largest)."""
        index = bisect.bisect_left(self.sizes, rows)
        return index if index < len(self.sizes) else None

    def _bucket(self, rows: int) -> int:
        """Index of the largest bucket not above ``rows`` (the first for fewer rows than any)."""
        return max(bisect.bisect_right(self.sizes, rows) - 1, 0)
