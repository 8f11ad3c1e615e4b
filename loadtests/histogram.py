"""Latency histograms: an HDR-style log-linear bucket layout whose counts merge exactly.

Contracts:

* Values are non-negative integers in nanoseconds. Values below 256 ns have a bucket each; above that,
  every power of two is split into :data:`SUB_BUCKETS` equal buckets, so a bucket's width is at most
  ``1 / SUB_BUCKETS`` (0.78 %) of its lower bound. Values above :data:`MAX_VALUE_NS` (about 18 minutes) are
  clamped into the last bucket.
* The layout is fixed and global, so two histograms merge by adding their count arrays: the merge of
  histograms of sample sets A and B is *identical* to the histogram of A and B together. That is what
  makes percentiles merged across client processes exact with respect to one histogram of all samples.
* :meth:`Histogram.percentile` returns the midpoint of the bucket holding the sample of rank
  ``ceil(q/100 * n)`` (numpy's ``inverted_cdf`` definition), clamped to the exact recorded min and max
  (the top rank is the exact max), so it is within half a bucket (0.4 %) of the true sample percentile.
* Bucketing is vectorized (:func:`bucket_index` on a numpy array); nothing here runs per request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = ["MAX_VALUE_NS", "NUM_BUCKETS", "SUB_BUCKETS", "Histogram", "bucket_index", "bucket_bounds"]

SUB_BITS = 7
SUB_BUCKETS = 1 << SUB_BITS
#: Largest value kept distinct; larger ones land in the last bucket.
MAX_VALUE_NS = (1 << 40) - 1
NUM_BUCKETS = (40 - SUB_BITS - 1) * SUB_BUCKETS + 2 * SUB_BUCKETS

Int64Array = npt.NDArray[np.int64]


def bucket_index(values: npt.ArrayLike) -> Int64Array:
    """The bucket of each value (ns); negative values count as 0, huge ones as :data:`MAX_VALUE_NS`."""
    v = np.clip(np.asarray(values, dtype=np.int64), 0, MAX_VALUE_NS)
    # frexp is exact here: every value is below 2**53. exponent = bit_length(v).
    exponent = np.frexp(v.astype(np.float64))[1].astype(np.int64)
    shift = np.maximum(exponent - (SUB_BITS + 1), 0)
    mantissa = v >> shift
    index: Int64Array = shift * SUB_BUCKETS + mantissa
    return index


def bucket_bounds(index: npt.ArrayLike) -> tuple[Int64Array, Int64Array]:
    """``(lower, width)`` in ns of each bucket index: the bucket holds ``[lower, lower + width)``."""
    i = np.asarray(index, dtype=np.int64)
    shift = np.maximum(i // SUB_BUCKETS - 1, 0)
    mantissa = i - shift * SUB_BUCKETS
    return mantissa << shift, np.left_shift(np.int64(1), shift)


@dataclass
class Histogram:
    """Counts per bucket plus the exact count, sum, min and max of the recorded values (ns)."""

    counts: Int64Array = field(default_factory=lambda: np.zeros(NUM_BUCKETS, dtype=np.int64))
    total: int = 0
    sum_ns: int = 0
    min_ns: int | None = None
    max_ns: int | None = None

    @classmethod
    def of(cls, values: npt.ArrayLike) -> Histogram:
        """A histogram of ``values`` (ns)."""
        hist = cls()
        hist.record(values)
        return hist

    def record(self, values: npt.ArrayLike) -> None:
        """Adds every value of the array (ns)."""
        v = np.asarray(values, dtype=np.int64).ravel()
        if v.size == 0:
            return
        self.counts += np.bincount(bucket_index(v), minlength=NUM_BUCKETS)
        self.total += int(v.size)
        self.sum_ns += int(v.sum())
        lo, hi = int(v.min()), int(v.max())
        self.min_ns = lo if self.min_ns is None else min(self.min_ns, lo)
        self.max_ns = hi if self.max_ns is None else max(self.max_ns, hi)

    def merge(self, other: Histogram) -> None:
        """Adds ``other`` into this histogram (exact: the result equals a histogram of both sample sets)."""
        self.counts += other.counts
        self.total += other.total
        self.sum_ns += other.sum_ns
        if other.min_ns is not None:
            self.min_ns = other.min_ns if self.min_ns is None else min(self.min_ns, other.min_ns)
        if other.max_ns is not None:
            self.max_ns = other.max_ns if self.max_ns is None else max(self.max_ns, other.max_ns)

    @classmethod
    def merged(cls, parts: Iterable[Histogram]) -> Histogram:
        """A new histogram holding the sum of ``parts``."""
        out = cls()
        for part in parts:
            out.merge(part)
        return out

    def percentile(self, q: float) -> float | None:
        """The q-th percentile (0 < q <= 100) in ns; None when empty. See the module contract."""
        if not 0 < q <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {q}")
        if self.total == 0 or self.min_ns is None or self.max_ns is None:
            return None
        rank = max(1, int(np.ceil(q / 100.0 * self.total - 1e-9)))
        if rank >= self.total:
            return float(self.max_ns)
        index = int(np.searchsorted(np.cumsum(self.counts), rank))
        lower, width = bucket_bounds(index)
        mid = float(lower) + (float(width) - 1.0) / 2.0
        return min(max(mid, float(self.min_ns)), float(self.max_ns))

    def mean(self) -> float | None:
        """The exact mean in ns; None when empty."""
        return self.sum_ns / self.total if self.total else None

    def cdf(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """``(upper_edges_ns, cumulative_fraction)`` over the non-empty buckets, for plotting."""
        nonzero = np.flatnonzero(self.counts)
        if nonzero.size == 0:
            return np.zeros(0), np.zeros(0)
        lower, width = bucket_bounds(nonzero)
        cumulative = np.cumsum(self.counts[nonzero]) / float(self.total)
        return (lower + width).astype(np.float64), cumulative.astype(np.float64)
