"""The prediction store: sampled predictions of one model, kept to be joined with their ground truth.

This module owns the memory of predictions between a sample and its label. Contracts:

* Columns in numpy arrays, one entry per request (its request id, version, prediction time, rows and
  whether it was labelled) and one row per sampled row (the prediction, and the probabilities when the
  model has them); request ids map to entries through one dict. Lookups and label marks are vectorised
  over a batch (:meth:`lookup`, :meth:`gather`, :meth:`mark`); no SQL and no per-row I/O.
* Bounded: at most ``max_rows`` rows, about ``max_bytes`` bytes (:attr:`nbytes`, an estimate with
  :data:`ENTRY_OVERHEAD` per entry for the dict, the deque and the id string) and predictions younger
  than ``ttl_seconds`` by the wall clock given to :meth:`expire`. The oldest entries go first (insertion
  order); each eviction is counted by reason in :attr:`evicted` (``rows``, ``bytes``, ``ttl``).
* :meth:`snapshot` / :meth:`restore` serialize the store (npz) so it survives a restart; the caller does
  the disk work off the event loop. Not thread-safe: the event loop owns it.
"""

from __future__ import annotations

import io
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from registry.feedback_config import FeedbackConfig

__all__ = ["ENTRY_OVERHEAD", "Gathered", "PredictionStore", "Snapshot", "from_bytes", "to_bytes"]

ENTRY_OVERHEAD = 160
"""Bytes counted per entry besides its columns and id: the dict slot and key, the deque slot, the str
header (an estimate, measured by ``python -m bench feedback``)."""
_ENTRY_COLUMNS = {
    "first": np.int64,
    "rows": np.int32,
    "time": np.int64,
    "version": np.int32,
    "labelled": np.bool_,
    "idlen": np.int32,
}
_PER_ENTRY = sum(np.dtype(d).itemsize for d in _ENTRY_COLUMNS.values()) + ENTRY_OVERHEAD
I64 = npt.NDArray[np.int64]


class _Fifo:
    """Columns appended at the end and dropped from the front; ``base`` is the absolute number of
    ``data[0]``, live rows are ``data[lo:hi]``."""

    def __init__(self, dtypes: dict[str, Any], widths: dict[str, int] | None = None) -> None:
        self.widths = widths or {}
        self.data = {k: np.empty((16, *self._tail(k)), dtype=d) for k, d in dtypes.items()}
        self.base = self.lo = self.hi = 0

    def _tail(self, key: str) -> tuple[int, ...]:
        width = self.widths.get(key)
        return (width,) if width else ()

    @property
    def size(self) -> int:
        return self.hi - self.lo

    @property
    def end(self) -> int:
        """Absolute number of the next row appended."""
        return self.base + self.hi

    def append(self, columns: dict[str, Any], n: int) -> None:
        capacity = len(next(iter(self.data.values())))
        if self.hi + n > capacity:
            size = self.size
            new_capacity = max(capacity, 16)
            while size + n > new_capacity // 2:
                new_capacity *= 2
            for key, array in self.data.items():
                fresh = np.empty((new_capacity, *array.shape[1:]), dtype=array.dtype)
                fresh[:size] = array[self.lo : self.hi]
                self.data[key] = fresh
            self.base += self.lo
            self.lo, self.hi = 0, size
        for key, values in columns.items():
            self.data[key][self.hi : self.hi + n] = values
        self.hi += n

    def live(self, key: str) -> npt.NDArray[Any]:
        return self.data[key][self.lo : self.hi]

    def drop(self, n: int) -> None:
        self.lo += n


@dataclass(frozen=True)
class Gathered:
    """Columns of looked-up entries (in the order asked) and of their rows (entry by entry)."""

    version: npt.NDArray[np.int32]
    time_ns: I64
    rows: npt.NDArray[np.int32]
    labelled: npt.NDArray[np.bool_]
    row_index: I64  # absolute row numbers of every row of every entry, concatenated


class PredictionStore:
    """Stored predictions of one model (see the module doc); ``classes`` probability columns (0: none)."""

    def __init__(self, config: FeedbackConfig, classes: int) -> None:
        self.max_rows, self.max_bytes = config.max_rows, config.max_bytes
        self.ttl_ns = int(config.ttl_seconds * 1e9)
        self.classes = classes
        self.entries = _Fifo(dict(_ENTRY_COLUMNS))
        row_types: dict[str, Any] = {"pred": np.float64}
        if classes:
            row_types["proba"] = np.float32
        self.rows = _Fifo(row_types, {"proba": classes})
        self.ids: deque[str] = deque()
        self.index: dict[str, int] = {}
        self.evicted = {"rows": 0, "bytes": 0, "ttl": 0}
        self._id_bytes = 0

    @property
    def row_bytes(self) -> int:
        return 8 + 4 * self.classes

    @property
    def nbytes(self) -> int:
        """The estimated bytes held (columns, ids and :data:`ENTRY_OVERHEAD` per entry)."""
        return self.rows.size * self.row_bytes + self.entries.size * _PER_ENTRY + self._id_bytes

    def __len__(self) -> int:
        return self.entries.size

    def add(
        self,
        ids: list[str],
        version: int | npt.NDArray[np.int32],
        rows: npt.NDArray[np.int32],
        time_ns: I64,
        pred: npt.NDArray[np.float64],
        proba: npt.NDArray[np.float32] | None,
        labelled: bool | npt.NDArray[np.bool_] = False,
    ) -> I64:
        """Store entries (``rows[i]`` rows each; ``pred`` and ``proba`` hold all their rows in order),
        then evict the oldest (these too, if they alone exceed a bound) until the bounds hold; returns
        their absolute entry numbers."""
        n, total = len(ids), int(rows.sum())
        idlen = np.fromiter(map(len, ids), np.int32, n)
        first = self.rows.end + np.concatenate(([0], np.cumsum(rows[:-1], dtype=np.int64)))
        columns: dict[str, Any] = {"pred": pred}
        if self.classes:
            columns["proba"] = proba if proba is not None else np.nan
        self.rows.append(columns, total)
        seqs = np.arange(self.entries.end, self.entries.end + n, dtype=np.int64)
        self.entries.append(
            {
                "first": first,
                "rows": rows,
                "time": time_ns,
                "version": version,
                "labelled": labelled,
                "idlen": idlen,
            },
            n,
        )
        self.ids.extend(ids)
        self.index.update(zip(ids, seqs.tolist(), strict=True))
        self._id_bytes += int(idlen.sum())
        self._trim()
        return seqs

    def lookup(self, ids: list[str]) -> I64:
        """Absolute entry numbers of ``ids`` (-1 where not stored)."""
        get = self.index.get
        return np.fromiter((get(i, -1) for i in ids), np.int64, len(ids))

    def gather(self, seqs: I64) -> Gathered:
        """Columns of stored entries ``seqs`` (each >= 0)."""
        e = self.entries
        at = seqs - e.base
        rows = e.data["rows"][at]
        first = e.data["first"][at]
        starts = np.repeat(first - np.concatenate(([0], np.cumsum(rows[:-1], dtype=np.int64))), rows)
        row_index = starts + np.arange(int(rows.sum()), dtype=np.int64)
        return Gathered(e.data["version"][at], e.data["time"][at], rows, e.data["labelled"][at], row_index)

    def row_columns(self, row_index: I64) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float32] | None]:
        """Predictions and probabilities (None without) of absolute rows ``row_index``."""
        at = row_index - self.rows.base
        proba = self.rows.data["proba"][at] if self.classes else None
        return self.rows.data["pred"][at], proba

    def mark(self, seqs: I64) -> None:
        """Mark entries as labelled (first label wins: later ones are duplicates)."""
        self.entries.data["labelled"][seqs - self.entries.base] = True

    def expire(self, now_ns: int) -> int:
        """Evict entries, oldest first, while their prediction is older than the TTL; returns how many."""
        times = self.entries.live("time")
        young = np.flatnonzero(times >= now_ns - self.ttl_ns)
        count = int(young[0]) if len(young) else len(times)
        self._drop(count, "ttl")
        return count

    def _trim(self) -> None:
        """Evict the oldest entries until the rows and bytes bounds hold."""
        e = self.entries
        excess_rows = self.rows.size - self.max_rows
        if excess_rows > 0:
            limit = self.rows.base + self.rows.lo + excess_rows
            self._drop(int(np.searchsorted(e.live("first"), limit, "left")), "rows")
        excess = self.nbytes - self.max_bytes
        if excess > 0 and e.size:
            sizes = e.live("rows").astype(np.int64) * self.row_bytes + _PER_ENTRY + e.live("idlen")
            self._drop(min(int(np.searchsorted(np.cumsum(sizes), excess, "left")) + 1, e.size), "bytes")

    def _drop(self, count: int, reason: str) -> None:
        if count <= 0:
            return
        e = self.entries
        seq0 = e.base + e.lo
        self._id_bytes -= int(e.live("idlen")[:count].sum())
        index, ids = self.index, self.ids
        for seq in range(seq0, seq0 + count):
            rid = ids.popleft()
            if index.get(rid) == seq:
                del index[rid]
        e.drop(count)
        self.rows.drop((int(e.live("first")[0]) if e.size else self.rows.end) - self.rows.base - self.rows.lo)
        self.evicted[reason] += count

    def snapshot(self) -> Snapshot:
        """Copies of the live columns and the ids (a few ms for a million rows; serialize it with
        :func:`to_bytes` off the loop)."""
        arrays = {f"e_{k}": self.entries.live(k).copy() for k in _ENTRY_COLUMNS}
        arrays |= {f"r_{k}": self.rows.live(k).copy() for k in self.rows.data}
        arrays["e_first"] -= self.rows.base + self.rows.lo
        return Snapshot(arrays, list(self.ids))

    def restore(self, arrays: dict[str, npt.NDArray[Any]]) -> None:
        """Load what :func:`from_bytes` read (into an empty store), within this store's limits."""
        blob = arrays["id_blob"].tobytes()
        ends = np.cumsum(arrays["id_len"], dtype=np.int64).tolist()
        ids = [blob[a:b].decode() for a, b in zip([0, *ends[:-1]], ends, strict=True)]
        proba = arrays.get("r_proba")
        fits = proba is not None and proba.ndim == 2 and proba.shape[1] == self.classes
        self.add(
            ids,
            arrays["e_version"],
            arrays["e_rows"],
            arrays["e_time"],
            arrays["r_pred"],
            proba if fits else None,
            labelled=arrays["e_labelled"],
        )


@dataclass(frozen=True)
class Snapshot:
    """A store's columns (copies) and ids, as :meth:`PredictionStore.snapshot` took them."""

    arrays: dict[str, npt.NDArray[Any]]
    ids: list[str]


def to_bytes(snapshot: Snapshot) -> bytes:
    """An npz of the snapshot, ids as UTF-8 with their byte lengths (for the history database; run it
    off the event loop)."""
    encoded = [i.encode() for i in snapshot.ids]
    arrays = dict(snapshot.arrays)
    arrays["id_blob"] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    arrays["id_len"] = np.fromiter(map(len, encoded), np.int64, len(encoded))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def from_bytes(data: bytes) -> dict[str, npt.NDArray[Any]]:
    """The arrays :func:`to_bytes` wrote (for :meth:`PredictionStore.restore`)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}
