"""Ground-truth tensors of many feedback items at once, checked and decoded with numpy.

This module owns the hot half of the join: :func:`extract_labels` takes the label tensors of the items
joined to one version and returns their values row by row. The common case (binary bodies; one tensor
per item, of the expected name and datatype, shaped [rows] or [rows, 1] for the request's stored rows)
costs a few attribute reads per item and one ``np.frombuffer`` over all of their bytes; any other item
(JSON, a label with more rows than were sampled, or a faulty one) goes through
:meth:`~monitor.feedback_version.VersionFeedback.label`, which also says what is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from monitor.feedback_version import LabelError, VersionFeedback
from monitor.feedback_wire import FeedbackItems, LabelColumns
from registry.signature import numpy_dtype

__all__ = ["extract_labels"]

F64 = npt.NDArray[np.float64]


def _fast(
    vf: VersionFeedback, cols: LabelColumns | None, index: list[int], rows: npt.NDArray[np.int32]
) -> npt.NDArray[np.bool_]:
    """Which of items ``index`` can be decoded in bulk (see the module doc); ``cols`` None: none can."""
    n = len(index)
    if cols is None:
        return np.zeros(n, np.bool_)
    whole = n == len(cols.name)  # every item of the batch, in order (positions are unique and sorted)
    names = set(cols.name) if whole else {cols.name[i] for i in index}
    types = set(cols.datatype) if whole else {cols.datatype[i] for i in index}
    if not names <= {"", vf.roles.label} or types != {vf.label_datatype}:
        return np.zeros(n, np.bool_)
    raws = cols.raw if whole else [cols.raw[i] for i in index]
    shapes = cols.shape if whole else [cols.shape[i] for i in index]
    sizes = np.fromiter(map(len, raws), np.int64, n)
    first = np.fromiter(map(_leading, shapes), np.int64, n)
    itemsize = numpy_dtype(vf.label_datatype).itemsize
    fast: npt.NDArray[np.bool_] = (first == rows) & (sizes == rows.astype(np.int64) * itemsize)
    return fast


def _leading(shape: Sequence[int]) -> int:
    """The rows of a [n] or [n, 1] shape, else -1."""
    if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
        return int(shape[0])
    return -1


def extract_labels(
    vf: VersionFeedback, items: FeedbackItems, pick: npt.NDArray[np.int64], rows: npt.NDArray[np.int32]
) -> tuple[F64, npt.NDArray[np.bool_], list[tuple[int, LabelError]]]:
    """Values of the labels of items ``pick`` with ``rows[i]`` stored rows each: (the rows of the
    accepted items, in order; which items were accepted; (position, error) of the refused ones)."""
    n = len(pick)
    index = pick.tolist()
    cols = items.single
    fast = _fast(vf, cols, index, rows)
    ok = fast.copy()
    errors: list[tuple[int, LabelError]] = []
    slow: dict[int, F64] = {}
    for i in np.flatnonzero(~fast).tolist():
        try:
            slow[i] = vf.label(list(items.labels(index[i])), int(rows[i]))
            ok[i] = True
        except LabelError as exc:
            errors.append((i, exc))
    starts = np.concatenate(([0], np.cumsum(np.where(ok, rows, 0), dtype=np.int64)))
    values = np.empty(int(starts[-1]), np.float64)
    fast_idx = np.flatnonzero(fast)
    if len(fast_idx):
        dtype = numpy_dtype(vf.label_datatype).newbyteorder("<")
        assert cols is not None
        raws = cols.raw if len(fast_idx) == len(cols.raw) else [cols.raw[index[i]] for i in fast_idx.tolist()]
        data = np.frombuffer(b"".join(raws), dtype=dtype)
        fast_rows = rows[fast_idx]
        at = np.repeat(starts[fast_idx], fast_rows) + _ramp(fast_rows)
        values[at] = data
    for i, v in slow.items():
        values[starts[i] : starts[i + 1]] = v
    bad = ~np.isfinite(values)
    if vf.classifier and vf.roles.classes:
        bad |= (values < 0) | (values >= vf.roles.classes)
    if bad.any():
        row_item = np.repeat(np.arange(n), np.where(ok, rows, 0))
        refused = np.unique(row_item[bad])
        for i in refused.tolist():
            errors.append((i, LabelError("value", f"label {vf.roles.label!r}: not finite or not a class")))
        ok[refused] = False
        values = values[~np.isin(row_item, refused)]
    return values, ok, errors


def _ramp(counts: npt.NDArray[np.int32]) -> npt.NDArray[np.int64]:
    """0..c-1 for each count c, concatenated."""
    total = int(counts.sum())
    ends = np.cumsum(counts, dtype=np.int64)
    return np.arange(total, dtype=np.int64) - np.repeat(ends - counts, counts)
