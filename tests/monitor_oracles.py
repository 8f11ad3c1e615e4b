"""Plain-numpy references for the monitor's statistics, written apart from monitor/ (stumpy's naive.py habit).

Conventions (docs/monitor.md): bins are ``[e_k, e_k+1)`` with +-inf ends; NaN and +-inf are left out of
every distribution; PSI = sum((q - p) * ln(q / p)) over the coarse bins with zero proportions replaced by
1e-4 and no renormalisation; the grid KS statistic is the largest ECDF gap just left of a fine edge.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

EPS = 1e-4
F64 = npt.NDArray[np.float64]


def finite(values: npt.ArrayLike) -> F64:
    array = np.asarray(values, dtype=np.float64)
    return array[np.isfinite(array)]


def bin_counts(edges: F64, values: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Counts of the finite values per bin ``(-inf, e0), [e0, e1), ..., [e_last, +inf)``."""
    x = finite(values)
    index = np.array([int(np.sum(edges <= v)) for v in x], dtype=np.int64)  # deliberately not searchsorted
    return np.bincount(index, minlength=edges.size + 1).astype(np.int64)


def special_counts(values: npt.ArrayLike) -> tuple[int, int, int]:
    x = np.asarray(values, dtype=np.float64)
    return int(np.isnan(x).sum()), int(np.isposinf(x).sum()), int(np.isneginf(x).sum())


def psi(reference: npt.ArrayLike, current: npt.ArrayLike, coarse_edges: F64, eps: float = EPS) -> float:
    """PSI of the finite values over the bins cut by ``coarse_edges`` (NaN if a side has no value)."""
    ref, cur = finite(reference), finite(current)
    if ref.size == 0 or cur.size == 0:
        return float("nan")
    p = bin_counts(coarse_edges, ref) / ref.size
    q = bin_counts(coarse_edges, cur) / cur.size
    p = np.where(p == 0, eps, p)
    q = np.where(q == 0, eps, q)
    return float(np.sum((q - p) * np.log(q / p)))


def categorical_psi(reference: npt.ArrayLike, current: npt.ArrayLike, eps: float = EPS) -> float:
    """PSI over the reference's categories plus one bin for every value the reference never had."""
    ref, cur = finite(reference), finite(current)
    categories = np.unique(ref)
    p = np.array([np.mean(ref == c) for c in categories] + [0.0])
    q = np.array([np.mean(cur == c) for c in categories] + [np.mean(~np.isin(cur, categories))])
    p = np.where(p == 0, eps, p)
    q = np.where(q == 0, eps, q)
    return float(np.sum((q - p) * np.log(q / p)))


def grid_ks(reference: npt.ArrayLike, current: npt.ArrayLike, fine_edges: F64) -> float:
    """max over fine edges e of |P_ref(X < e) - P_cur(X < e)|."""
    ref, cur = finite(reference), finite(current)
    gaps = [abs(np.mean(ref < e) - np.mean(cur < e)) for e in fine_edges]
    return float(max(gaps, default=0.0))


def max_bin_mass(reference: npt.ArrayLike, current: npt.ArrayLike, fine_edges: F64) -> float:
    """The largest share of either sample in one fine bin."""
    ref, cur = finite(reference), finite(current)
    return float(
        max((bin_counts(fine_edges, ref) / ref.size).max(), (bin_counts(fine_edges, cur) / cur.size).max())
    )


def quantile_edges(values: npt.ArrayLike, levels: list[Fraction]) -> F64:
    """Distinct inverted-CDF quantiles: for each exact level, the smallest value whose ECDF reaches it."""
    x = np.sort(finite(values))
    picked = [x[math.ceil(level * x.size) - 1] for level in levels]
    return np.unique(np.array(picked, dtype=np.float64))


def shifted_normal_ks(d: float) -> float:
    """The KS distance between N(0, 1) and N(d, 1): 2 Phi(d / 2) - 1."""
    from math import erf, sqrt

    return erf(d / 2 / sqrt(2))


def sample_batch(
    model: str, version: str, inputs: dict[str, Any], outputs: dict[str, Any] | None = None
) -> bytes:
    """A serialized SampleBatch of one sample (V2 datatypes from the arrays' dtypes)."""
    from protos import monitor_pb2

    names = {
        np.dtype(np.float32): "FP32",
        np.dtype(np.float64): "FP64",
        np.dtype(np.int64): "INT64",
        np.dtype(np.int32): "INT32",
        np.dtype(np.bool_): "BOOL",
        np.dtype(np.float16): "FP16",
    }
    batch = monitor_pb2.SampleBatch()
    sample = batch.samples.add(model=model, version=version)
    for side, tensors in (("inputs", inputs), ("outputs", outputs or {})):
        for name, array in tensors.items():
            a = np.ascontiguousarray(array)
            getattr(sample, side).add(
                name=name, datatype=names[a.dtype], shape=list(a.shape), raw=a.tobytes()
            )
    return batch.SerializeToString()
