"""Feature layout: which numbers of a version's tensors the monitor watches, and under which names.

This module owns the step of the data path from decoded tensors (reference rows or sampled rows) to
feature columns, so that the reference profile and every window see exactly the same columns:

* a tensor of shape ``[batch]`` is one column, named ``<tensor>[0]``;
* a tensor whose non-batch dimensions are all fixed and multiply to at most ``max_features`` is
  flattened per row (row-major): columns ``<tensor>[0]``, ``<tensor>[1]``, ... (``[batch, k]`` gives
  the k columns of a 2-D tensor);
* any other tensor (too wide, or with a dynamic non-batch dimension) is reduced to four per-row
  summaries ``<tensor>.mean``, ``<tensor>.std``, ``<tensor>.min`` and ``<tensor>.max``;
* BYTES tensors have no numeric features and are not watched.

Tensors are taken in signature order, inputs first, and only those present in ``reference.npz``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from registry.signature import DYNAMIC, Signature

__all__ = ["SUMMARIES", "FeatureLayout", "TensorFeatures"]

SUMMARIES = ("mean", "std", "min", "max")
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TensorFeatures:
    """One watched tensor: ``side`` ("input" or "output"), its V2 datatype and non-batch ``dims``
    (signature values, -1 dynamic), ``mode`` ("columns" or "summary") and its features
    ``first .. first + width - 1``."""

    side: str
    name: str
    datatype: str
    dims: tuple[int, ...]
    mode: str
    first: int
    width: int

    @property
    def key(self) -> str:
        """The tensor's key in ``reference.npz``, e.g. ``input:pixels``."""
        return f"{self.side}:{self.name}"

    def feature_names(self) -> list[str]:
        if self.mode == "summary":
            return [f"{self.name}.{s}" for s in SUMMARIES]
        return [f"{self.name}[{i}]" for i in range(self.width)]

    def matrix(self, array: npt.NDArray[Any]) -> F64:
        """``rows x width`` float64 (C-contiguous) feature values of ``array`` (shape ``[rows, *dims]``)."""
        rows = array.shape[0]
        flat = array.reshape(rows, -1)
        if self.mode == "columns":
            return np.ascontiguousarray(flat, dtype=np.float64)
        values = flat.astype(np.float64)
        out = np.full((rows, len(SUMMARIES)), np.nan)
        if values.shape[1] and rows:
            with np.errstate(invalid="ignore", over="ignore"):
                out[:, 0] = values.mean(axis=1)
                out[:, 1] = values.std(axis=1)
                out[:, 2] = values.min(axis=1)
                out[:, 3] = values.max(axis=1)
        return out


@dataclass(frozen=True)
class FeatureLayout:
    """The watched tensors of one version, in feature order; ``names[f]`` names feature ``f``."""

    tensors: tuple[TensorFeatures, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for t in self.tensors for n in t.feature_names())

    @property
    def n_features(self) -> int:
        return sum(t.width for t in self.tensors)

    def tensor(self, side: str, name: str) -> TensorFeatures | None:
        """The watched tensor ``name`` on ``side``, or None if it is not watched."""
        for t in self.tensors:
            if t.side == side and t.name == name:
                return t
        return None

    @classmethod
    def build(cls, signature: Signature, present: Iterable[str], max_features: int) -> FeatureLayout:
        """The layout of ``signature``'s numeric tensors whose ``side:name`` key is in ``present``."""
        keys = set(present)
        tensors: list[TensorFeatures] = []
        first = 0
        for side, specs in (("input", signature.inputs), ("output", signature.outputs)):
            for spec in specs:
                if spec.datatype == "BYTES" or f"{side}:{spec.name}" not in keys:
                    continue
                dims = spec.shape[1:]
                columns = math.prod(dims)
                if DYNAMIC in dims or columns > max_features or columns == 0:
                    mode, width = "summary", len(SUMMARIES)
                else:
                    mode, width = "columns", columns
                tensors.append(TensorFeatures(side, spec.name, spec.datatype, dims, mode, first, width))
                first += width
        return cls(tuple(tensors))

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {"side": t.side, "name": t.name, "datatype": t.datatype, "dims": list(t.dims), "mode": t.mode}
            for t in self.tensors
        ]

    @classmethod
    def from_json(cls, items: list[dict[str, Any]]) -> FeatureLayout:
        tensors, first = [], 0
        for item in items:
            width = len(SUMMARIES) if item["mode"] == "summary" else math.prod(item["dims"])
            dims = tuple(int(d) for d in item["dims"])
            tensors.append(
                TensorFeatures(item["side"], item["name"], item["datatype"], dims, item["mode"], first, width)
            )
            first += width
        return cls(tuple(tensors))
