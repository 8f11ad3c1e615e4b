"""Collation: pure numpy stacking of request feeds into one batch and splitting outputs back.

Contracts:
- :func:`batch_key` is equal for two requests exactly when they may share a batch: same input names,
  datatypes and non-batch dims.
- :func:`stack` concatenates along axis 0 and returns ``offsets`` (``offsets[i]:offsets[i+1]`` are request
  ``i``'s rows; ``offsets[-1]`` is the total). A batch of one request passes its arrays through uncopied.
- :func:`split` returns per-request views; it raises if the outputs do not have ``offsets[-1]`` rows, so a
  model that breaks the batch contract can never hand one request another request's rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

Feeds = Mapping[str, npt.NDArray[Any]]
BatchKey = tuple[tuple[str, str, tuple[int, ...]], ...]


class CollationError(RuntimeError):
    """The model's outputs do not line up with the batch's rows (a model bug, never a client error)."""


def batch_key(feeds: Feeds) -> BatchKey:
    """Identity of the batch a request may join: (name, dtype, non-batch dims) per input, sorted by name."""
    if len(feeds) == 1:  # the common case, without the sort and the generator
        ((name, array),) = feeds.items()
        return ((name, array.dtype.str, array.shape[1:]),)
    return tuple(sorted((name, array.dtype.str, tuple(array.shape[1:])) for name, array in feeds.items()))


def stack(requests: Sequence[Feeds]) -> tuple[dict[str, npt.NDArray[Any]], npt.NDArray[np.int64]]:
    """Concatenates the requests' feeds along the batch axis; all must share one :func:`batch_key`."""
    if not requests:
        raise ValueError("stack needs at least one request")
    first = requests[0]
    rows = [len(next(iter(feeds.values()))) for feeds in requests]
    offsets = np.array([0, *itertools.accumulate(rows)], dtype=np.int64)
    if len(requests) == 1:
        return dict(first), offsets
    return {name: np.concatenate([feeds[name] for feeds in requests], axis=0) for name in first}, offsets


def pad(feeds: Feeds, rows: int, target: int) -> dict[str, npt.NDArray[Any]]:
    """Pads a stacked batch of ``rows`` rows up to ``target`` rows by repeating the last row (finite values
    the model has already accepted, unlike zeros that may be out of its domain)."""
    if target <= rows:
        return dict(feeds)
    extra = target - rows
    return {
        name: np.concatenate([array, np.repeat(array[-1:], extra, axis=0)]) for name, array in feeds.items()
    }


def unpad(outputs: list[npt.NDArray[Any]], rows: int, padded: int) -> list[npt.NDArray[Any]]:
    """The outputs of a batch padded from ``rows`` to ``padded`` rows, without the padding rows (the same
    list when nothing was padded)."""
    if padded <= rows:
        return outputs
    return [output[:rows] if output.ndim and output.shape[0] == padded else output for output in outputs]


def bucket_for(rows: int, buckets: Sequence[int]) -> int:
    """The smallest bucket holding ``rows`` rows; ``rows`` itself when none does (or there are none)."""
    for size in buckets:
        if size >= rows:
            return size
    return rows


def check_rows(outputs: Sequence[npt.NDArray[Any]], total: int) -> None:
    """Raises :class:`CollationError` unless every output has ``total`` rows along axis 0."""
    for index, output in enumerate(outputs):
        if output.ndim == 0 or output.shape[0] != total:
            raise CollationError(f"output {index} has shape {output.shape}, expected {total} rows")


def split(
    outputs: Sequence[npt.NDArray[Any]], offsets: npt.NDArray[np.int64]
) -> list[list[npt.NDArray[Any]]]:
    """Per-request views of each output: ``result[i][k]`` is output ``k`` for request ``i``."""
    check_rows(outputs, int(offsets[-1]))
    bounds = offsets.tolist()
    return [[output[start:end] for output in outputs] for start, end in itertools.pairwise(bounds)]
