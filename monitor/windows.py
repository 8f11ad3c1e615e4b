"""Windows: where sampled rows accumulate between two evaluations of one model version.

This module owns the stage of the data path after decoding and before the statistics: per (model,
version), a **tumbling window** that closes when it holds ``window_rows`` rows or when ``window_seconds``
have passed on the monotonic clock since its first row, whichever comes first (a batch that crosses the
row limit is split, so a row-closed window holds exactly ``window_rows`` rows), and a **sliding window**
made of the last ``sliding_panes`` closed windows, kept exactly by adding each closed window's counts and
subtracting the one that falls out.

Memory is bounded when the version is first seen: a pool of window buffers (fine-bin counts, special
counts and, when ``window_rows <= audit_max_rows``, a preallocated ``features x window_rows`` float64
buffer of raw values for the exact KS audit; see :data:`POOL_BYTES`) and the pane ring. Rows are never
kept as Python objects. A closed window's buffer is lent to the evaluator and given back with
:meth:`release`; when none is free (the evaluator is behind), the closed window is counted in
``dropped`` instead of evaluated (the sliding window still includes it): evaluation is shed, ingestion
never waits. Not thread-safe: the event loop owns it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from monitor import stats
from monitor.features import TensorFeatures
from monitor.reference import Profile
from registry.config import DriftConfig

__all__ = ["POOL_BYTES", "POOL_MAX", "POOL_MIN", "ClosedWindow", "VersionWindows", "WindowBuffer"]

POOL_MIN, POOL_MAX = 3, 16
POOL_BYTES = 64 * 1024 * 1024
"""Window buffers per version: as many as fit in POOL_BYTES, at least POOL_MIN and at most POOL_MAX (the
open one plus closed ones awaiting evaluation), allocated only when needed."""
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(eq=False)
class WindowBuffer:
    """One window's state: counts per fine bin, (NaN, +inf, -inf) per feature, and for the audit the raw
    values ``raw[f, :fill[f]]`` (None when the audit is off)."""

    counts: I64
    special: I64
    raw: F64 | None
    fill: I64
    rows: int = 0
    opened_mono: float = 0.0
    opened_wall: float = 0.0

    def reset(self) -> None:
        self.counts.fill(0)
        self.special.fill(0)
        self.fill.fill(0)
        self.rows = 0


@dataclass(frozen=True, eq=False)
class ClosedWindow:
    """A window handed to the evaluator: its buffer (give it back with :meth:`VersionWindows.release`),
    its number (from 1, per version), why it closed ("rows" or "time"), its wall-clock span, and a copy
    of the sliding window's counts including it (``sliding_panes`` windows, ``sliding_rows`` rows)."""

    index: int
    buffer: WindowBuffer
    reason: str
    opened_wall: float
    closed_wall: float
    sliding: I64
    sliding_panes: int
    sliding_rows: int

    @property
    def rows(self) -> int:
        return self.buffer.rows

    def raw_values(self) -> F64 | None:
        """``features x n`` raw values for the exact KS (short rows padded with NaN), or None."""
        raw = self.buffer.raw
        if raw is None:
            return None
        n = int(self.buffer.fill.max(initial=0))
        for f in np.flatnonzero(self.buffer.fill < n):
            raw[f, self.buffer.fill[f] : n] = np.nan
        return raw[:, :n]


@dataclass(eq=False)
class VersionWindows:
    """The windows of one model version (see the module doc). ``index`` counts closed windows."""

    profile: Profile
    config: DriftConfig
    index: int = 0
    dropped: int = 0
    _current: WindowBuffer = field(init=False)
    _free: list[WindowBuffer] = field(init=False)
    _spare: int = field(init=False)
    _ring: I64 = field(init=False)
    _ring_rows: I64 = field(init=False)
    _sliding: I64 = field(init=False)
    _panes: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._free = []
        self._current = self._new_buffer()
        size = self._current.counts.nbytes + self._current.special.nbytes
        size += self._current.raw.nbytes if self._current.raw is not None else 0
        self._spare = min(POOL_MAX, max(POOL_MIN, POOL_BYTES // max(size, 1))) - 1
        self._ring = np.zeros((self.config.sliding_panes, self.profile.grid.n_bins), dtype=np.int64)
        self._ring_rows = np.zeros(self.config.sliding_panes, dtype=np.int64)
        self._sliding = np.zeros(self.profile.grid.n_bins, dtype=np.int64)

    @property
    def audit(self) -> bool:
        """Whether windows keep raw values for the exact KS test."""
        return 0 < self.config.window_rows <= self.config.audit_max_rows

    @property
    def open_rows(self) -> int:
        return self._current.rows

    def _new_buffer(self) -> WindowBuffer:
        counts, special = self.profile.grid.zeros()
        n = self.profile.n_features
        raw = np.empty((n, self.config.window_rows)) if self.audit else None
        return WindowBuffer(counts, special, raw, np.zeros(n, dtype=np.int64))

    def add(
        self, blocks: Sequence[tuple[TensorFeatures, F64]], rows: int, now: float, wall: float
    ) -> list[ClosedWindow]:
        """Add ``rows`` rows given as (tensor, ``rows x width`` matrix) blocks (tensors absent from the
        sample are simply not given); ``now`` is the monotonic clock, ``wall`` the epoch time. Returns the
        windows this closed, in order (a window past its time is closed before new rows go in)."""
        closed = self.close_due(now, wall)
        limit = self.config.window_rows
        start = 0
        while start < rows:
            cur = self._current
            if cur.rows == 0:
                cur.opened_mono, cur.opened_wall = now, wall
            take = min(rows - start, limit - cur.rows)
            for tensor, matrix in blocks:
                part = matrix[start : start + take]
                stats.ingest(self.profile.grid, part, tensor.first, cur.counts, cur.special)
                if cur.raw is not None:
                    f0, n = tensor.first, int(cur.fill[tensor.first])
                    cur.raw[f0 : f0 + tensor.width, n : n + take] = part.T
                    cur.fill[f0 : f0 + tensor.width] += take
            cur.rows += take
            start += take
            if cur.rows >= limit:
                closed.extend(self._close(wall, "rows"))
        return closed

    def close_due(self, now: float, wall: float) -> list[ClosedWindow]:
        """Close the open window if it has rows and ``window_seconds`` have passed since its first row."""
        cur = self._current
        if cur.rows and now - cur.opened_mono >= self.config.window_seconds:
            return self._close(wall, "time")
        return []

    def release(self, buffer: WindowBuffer) -> None:
        """Give a closed window's buffer back once it has been evaluated."""
        self._free.append(buffer)

    def _close(self, wall: float, reason: str) -> list[ClosedWindow]:
        cur = self._current
        pane = self.index % self.config.sliding_panes
        self._sliding -= self._ring[pane]
        self._ring[pane] = cur.counts
        self._sliding += cur.counts
        self._ring_rows[pane] = cur.rows
        self._panes = min(self._panes + 1, self.config.sliding_panes)
        self.index += 1
        if not self._free and self._spare > 0:
            self._spare -= 1
            self._free.append(self._new_buffer())
        if not self._free:
            self.dropped += 1
            cur.reset()
            return []
        self._current = self._free.pop()
        self._current.reset()
        return [
            ClosedWindow(
                index=self.index,
                buffer=cur,
                reason=reason,
                opened_wall=cur.opened_wall,
                closed_wall=wall,
                sliding=self._sliding.copy(),
                sliding_panes=self._panes,
                sliding_rows=int(self._ring_rows.sum()),
            )
        ]
