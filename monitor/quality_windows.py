"""Quality windows: labelled predictions of one model version, grouped by PREDICTION time.

This module owns the step between a join and the quality statistics. Contracts:

* Window ``k`` holds the predictions made in ``[k * span, (k + 1) * span)`` ns since the epoch
  (``span`` = ``[feedback].window_seconds``), whenever their labels arrive.
* It counts the predictions the monitor saw in its span (sampled rows, :meth:`predicted`) and collects
  the labelled rows (:meth:`labelled`): ground truth, prediction, probabilities, and whether each came
  from a stored (sampled) prediction or one carried by the feedback item.
* It closes (:meth:`close_due`) once the wall clock passes its end plus ``grace_seconds``
  (``closed_by`` "time"), or as soon as it holds ``window_rows`` labelled rows (``"rows"``; the batch
  that crosses the limit goes in whole). A closed window takes no more rows: labels for its predictions
  are refused as ``late`` (:meth:`labelled` returns how many), predictions for it are not counted.
* Coverage of a closed window = labelled sampled rows / sampled predictions in its span. With sampling
  rate r, the monitor sees about r of the predictions and can join only their labels (a label for an
  unsampled request must carry its prediction), so coverage estimates the fraction of predictions that
  got a label, whatever r is; carried rows are reported apart (``carried``).
* It keeps the probabilities of up to :data:`ESTIMATE_ROWS` sampled predictions per open window, for
  the estimate made before labels come (:meth:`latest_probabilities`).
Not thread-safe: the event loop owns it. Memory: at most ``window_rows`` labelled rows (plus the batch
that crosses it) and :data:`ESTIMATE_ROWS` probability rows per open window.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from registry.feedback_config import FeedbackConfig

__all__ = ["ESTIMATE_ROWS", "ClosedQuality", "QualityWindows"]

ESTIMATE_ROWS = 5_000
"""At most this many sampled rows' probabilities are kept per open window for its running estimate."""

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(eq=False)
class _Open:
    start_ns: int
    end_ns: int
    predictions: int = 0
    requests: int = 0
    y_true: list[F64] = field(default_factory=list)
    y_pred: list[F64] = field(default_factory=list)
    proba: list[npt.NDArray[np.float32]] = field(default_factory=list)
    carried: int = 0
    rows: int = 0
    sampled_proba: list[npt.NDArray[np.float32]] = field(default_factory=list)
    sampled_rows: int = 0


@dataclass(frozen=True, eq=False)
class ClosedQuality:
    """A closed window: its number ``index`` (prediction time // span), span, why it closed, sampled
    ``predictions`` in its span, labelled ``rows`` (``carried`` of them with the item's own prediction),
    the labelled ``requests``, and the arrays (``proba`` None without probabilities)."""

    index: int
    start_ns: int
    end_ns: int
    closed_by: str
    closed_ns: int
    predictions: int
    rows: int
    carried: int
    requests: int
    y_true: F64
    y_pred: F64
    proba: npt.NDArray[np.float32] | None

    @property
    def coverage(self) -> float | None:
        """Labelled sampled rows / sampled predictions (None when none was sampled)."""
        return min(1.0, (self.rows - self.carried) / self.predictions) if self.predictions else None


class QualityWindows:
    """The quality windows of one version (see the module doc)."""

    def __init__(self, config: FeedbackConfig) -> None:
        self.span_ns = int(config.window_seconds * 1e9)
        self.grace_ns = int(config.grace_seconds * 1e9)
        self.window_rows = config.window_rows
        self.open: dict[int, _Open] = {}
        self.closed_rows: set[int] = set()  # windows closed by rows whose time has not yet passed
        self.stale_predictions = 0
        self.changed: set[int] = set()  # open windows with new sampled probabilities

    def _final(self, k: I64, now_ns: int) -> npt.NDArray[np.bool_]:
        """Whether windows ``k`` are closed: by time, or by rows."""
        done = (k + 1) * self.span_ns + self.grace_ns <= now_ns
        if self.closed_rows:
            done |= np.isin(k, np.fromiter(self.closed_rows, np.int64, len(self.closed_rows)))
        return done

    def _window(self, k: int) -> _Open:
        w = self.open.get(k)
        if w is None:
            w = self.open[k] = _Open(k * self.span_ns, (k + 1) * self.span_ns)
        return w

    def predicted(self, time_ns: I64, rows: npt.NDArray[np.int32], now_ns: int,
                  proba: npt.NDArray[np.float32] | None = None) -> None:  # fmt: skip
        """Count sampled predictions (``rows[i]`` rows made at ``time_ns[i]``) in their windows, and keep
        their probabilities (all rows in order; at most :data:`ESTIMATE_ROWS` per window) for the
        estimate of the open window."""
        k = time_ns // self.span_ns
        final = self._final(k, now_ns)
        self.stale_predictions += int(rows[final].sum())
        keys, inverse = np.unique(k[~final], return_inverse=True)
        counts = np.bincount(inverse, weights=rows[~final], minlength=len(keys))
        row_k = np.repeat(k, rows) if proba is not None else None
        for key, count in zip(keys.tolist(), counts.tolist(), strict=True):
            w = self._window(key)
            w.predictions += int(count)
            if proba is not None and row_k is not None and w.sampled_rows < ESTIMATE_ROWS:
                usable = (row_k == key) & np.isfinite(proba).all(axis=1)
                taken = proba[usable][: ESTIMATE_ROWS - w.sampled_rows]
                w.sampled_proba.append(taken)
                w.sampled_rows += len(taken)
                self.changed.add(key)

    def labelled(
        self,
        time_ns: I64,
        rows: npt.NDArray[np.int32],
        y_true: F64,
        y_pred: F64,
        proba: npt.NDArray[np.float32] | None,
        carried: npt.NDArray[np.bool_],
        now_ns: int,
    ) -> npt.NDArray[np.bool_]:
        """Add labelled requests (``rows[i]`` rows each at ``time_ns[i]``; the row arrays hold all their
        rows in order). Returns, per request, whether it was refused as late (its window is closed)."""
        k = time_ns // self.span_ns
        late = self._final(k, now_ns)
        row_k = np.repeat(k, rows)
        row_keep = np.repeat(~late, rows)
        row_carried = np.repeat(carried, rows)
        for key in np.unique(k[~late]).tolist():
            sel = row_keep & (row_k == key)
            w = self._window(key)
            w.y_true.append(y_true[sel])
            w.y_pred.append(y_pred[sel])
            if proba is not None:
                w.proba.append(proba[sel])
            n = int(sel.sum())
            w.rows += n
            w.carried += int(row_carried[sel].sum())
            w.requests += int(((k == key) & ~late).sum())
        return late

    def close_due(self, now_ns: int) -> list[ClosedQuality]:
        """Close the windows that are due (see the module doc), oldest first."""
        closed = []
        for key in sorted(self.open):
            w = self.open[key]
            by_time = w.end_ns + self.grace_ns <= now_ns
            if by_time or w.rows >= self.window_rows:
                del self.open[key]
                if not by_time:
                    self.closed_rows.add(key)
                if w.rows or w.predictions:
                    closed.append(self._closed(key, w, "time" if by_time else "rows", now_ns))
        horizon = now_ns - self.grace_ns
        self.closed_rows = {k for k in self.closed_rows if (k + 1) * self.span_ns > horizon}
        return closed

    def _closed(self, key: int, w: _Open, reason: str, now_ns: int) -> ClosedQuality:
        return ClosedQuality(
            index=key,
            start_ns=w.start_ns,
            end_ns=w.end_ns,
            closed_by=reason,
            closed_ns=now_ns,
            predictions=w.predictions,
            rows=w.rows,
            carried=w.carried,
            requests=w.requests,
            y_true=np.concatenate(w.y_true) if w.y_true else np.empty(0),
            y_pred=np.concatenate(w.y_pred) if w.y_pred else np.empty(0),
            proba=np.concatenate(w.proba) if w.proba else None,
        )

    def latest_probabilities(self) -> tuple[int, npt.NDArray[np.float32]] | None:
        """The newest open window with sampled probabilities not yet estimated: (index, probabilities);
        None when none changed since the last call."""
        live = sorted(k for k in self.changed if k in self.open)
        self.changed.clear()
        if not live:
            return None
        w = self.open[live[-1]]
        return live[-1], np.concatenate(w.sampled_proba)

    def pending(self) -> list[tuple[int, int, int]]:
        """(index, predictions, labelled rows) of the open windows, oldest first."""
        return [(k, self.open[k].predictions, self.open[k].rows) for k in sorted(self.open)]
