"""Reference profile summaries: per input column, what a version's ``reference.npz`` looks like.

This module owns the summary that ``infergate-registry diff`` shows for each version: the number of
reference rows and, per input feature column, the mean, standard deviation, minimum and maximum of its
finite values (and how many values are NaN or infinite). Columns follow the monitor's naming
(DESIGN.md §3): an input tensor of shape ``[rows, *dims]`` is flattened per row, row-major, into columns
``<tensor>[0]``, ``<tensor>[1]``, ...; inputs are taken in signature order. BYTES inputs have no numeric
columns and are listed as skipped. At most ``max_columns`` columns are summarised (the first ones), so a
wide input costs nothing beyond reading its array. Everything is vectorised over rows and columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from registry.artifacts import INPUT_PREFIX, read_npz
from registry.errors import ManifestError
from registry.signature import Signature

__all__ = ["STATS", "ColumnStats", "ReferenceProfile", "reference_profile"]

STATS = ("mean", "std", "min", "max")


@dataclass(frozen=True)
class ColumnStats:
    """Summary of one feature column's finite values (NaN when it has none)."""

    mean: float
    std: float
    min: float
    max: float
    nonfinite: int

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready form; NaN becomes None."""
        values: dict[str, float | int | None] = {k: _json_float(getattr(self, k)) for k in STATS}
        values["nonfinite"] = self.nonfinite
        return values


@dataclass(frozen=True)
class ReferenceProfile:
    """One version's reference summary: ``rows``, ``columns`` summarised by feature name (in order, at
    most ``max_columns``), the number of numeric input columns in all, and input tensors skipped."""

    rows: int
    columns: dict[str, ColumnStats]
    total_columns: int
    skipped: tuple[str, ...]

    @property
    def truncated(self) -> bool:
        """Whether some columns were left out by the cap."""
        return len(self.columns) < self.total_columns


def reference_profile(path: Path, signature: Signature, *, max_columns: int = 32) -> ReferenceProfile:
    """Summarise the ``input:<tensor>`` arrays of the ``reference.npz`` at ``path`` (never with pickles).

    Inputs of ``signature`` absent from the file, or of BYTES type, are listed in ``skipped``.
    NotFoundError if there is no file; ManifestError if it is unreadable or its inputs disagree on rows.
    """
    arrays = read_npz(path, ManifestError, prefix=INPUT_PREFIX)
    columns: dict[str, ColumnStats] = {}
    skipped: list[str] = []
    rows: set[int] = set()
    total = 0
    for spec in signature.inputs:
        array = arrays.get(INPUT_PREFIX + spec.name)
        if array is None or array.ndim == 0 or array.dtype.kind not in "biuf":
            skipped.append(spec.name)
            continue
        rows.add(array.shape[0])
        width = math.prod(array.shape[1:])
        take = max(0, min(width, max_columns - len(columns)))
        total += width
        if take:
            flat = array.reshape(array.shape[0], -1)[:, :take]
            columns.update(zip([f"{spec.name}[{i}]" for i in range(take)], column_stats(flat), strict=True))
    if len(rows) > 1:
        raise ManifestError(f"{path}: inputs disagree on the number of rows: {sorted(rows)}")
    return ReferenceProfile(
        rows=rows.pop() if rows else 0, columns=columns, total_columns=total, skipped=tuple(skipped)
    )


def column_stats(matrix: npt.NDArray[Any]) -> list[ColumnStats]:
    """Per column of the ``rows x columns`` ``matrix``: stats of its finite values, vectorised."""
    x = np.asarray(matrix, dtype=np.float64)
    finite = np.isfinite(x)
    count = finite.sum(axis=0)
    safe = np.maximum(count, 1)
    values = np.where(finite, x, 0.0)
    mean = values.sum(axis=0) / safe
    std = np.sqrt((np.where(finite, x - mean, 0.0) ** 2).sum(axis=0) / safe)
    low = np.where(finite, x, np.inf).min(axis=0, initial=np.inf)
    high = np.where(finite, x, -np.inf).max(axis=0, initial=-np.inf)
    empty = count == 0
    mean, std, low, high = (np.where(empty, np.nan, a) for a in (mean, std, low, high))
    nonfinite = x.shape[0] - count
    return [
        ColumnStats(float(m), float(s), float(lo), float(hi), int(n))
        for m, s, lo, hi, n in zip(mean, std, low, high, nonfinite, strict=True)
    ]


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value
