"""The fine-bin grid: the layout of every feature's bins that the drift kernels work on.

This module owns the data structure between the reference profile and the kernels of
:mod:`monitor.stats`: per feature, its fine-bin edges (strictly increasing, finite) stored contiguously
in one flat array and followed by a +inf sentinel, the grouping of fine bins into coarse (PSI) bins, and
the lookup table that lets the ingest kernel find a value's bin without a full binary search. With ``m``
edges a feature has ``m + 1`` bins ``(-inf, e_0), [e_0, e_1), ..., [e_{m-1}, +inf)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from monitor import stats
from monitor.errors import StatsError

__all__ = ["Grid"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class Grid:
    """The fine bins of every feature and their grouping into coarse (PSI) bins; see the module doc.

    Build it with :meth:`build`. Feature ``f`` owns positions ``bin_off[f]:bin_off[f + 1]`` of a counts
    vector (one per bin) and of ``bounds`` (its edges, then a +inf sentinel). ``coarse_of[b]`` is the
    coarse bin, numbered per feature, of fine bin ``b``. ``point_bins[f]`` marks features whose values
    all sit on the left edge of their bin (categorical): their grid KS is exact.
    """

    bounds: F64
    bin_off: I64
    coarse_of: npt.NDArray[np.int32]
    coarse_off: I64
    point_bins: npt.NDArray[np.uint8]
    lut: npt.NDArray[np.int32]
    lo: F64
    scale: F64
    steps: I64

    @classmethod
    def build(cls, edges: list[F64], coarse_of: list[npt.NDArray[Any]], point_bins: list[bool]) -> Grid:
        """A Grid from per-feature strictly increasing finite edges and per-feature coarse maps.

        ``coarse_of[f]`` has ``len(edges[f]) + 1`` entries that use every coarse bin ``0 .. k - 1`` (a
        coarse bin may gather fine bins that are not adjacent). StatsError if any of that does not hold.
        """
        if not (len(edges) == len(coarse_of) == len(point_bins)):
            raise StatsError("edges, coarse_of and point_bins must have one entry per feature")
        padded, flat_coarse, coarse_off, lo, span = [], [], [0], [], []
        for f, (e, c) in enumerate(zip(edges, coarse_of, strict=True)):
            e = np.asarray(e, dtype=np.float64)
            c = np.asarray(c)
            if e.ndim != 1 or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
                raise StatsError(f"feature {f}: edges must be finite and strictly increasing")
            if c.shape != (e.size + 1,) or np.unique(c).tolist() != list(range(int(c.max()) + 1)):
                raise StatsError(f"feature {f}: coarse_of must map its {e.size + 1} bins onto all of 0..k-1")
            padded.append(np.append(e, np.inf))
            flat_coarse.append(c.astype(np.int32))
            coarse_off.append(coarse_off[-1] + int(c[-1]) + 1)
            lo.append(e[0] if e.size else 0.0)
            span.append(e[-1] - e[0] if e.size else 0.0)
        spans = np.asarray(span, dtype=np.float64)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            scale = np.where(spans > 0, stats.CELLS / spans, 0.0)
        scale[~np.isfinite(scale)] = 0.0
        n = len(padded)
        bounds = np.concatenate(padded) if padded else np.empty(0)
        bin_off = np.cumsum([0] + [p.size for p in padded], dtype=np.int64)
        lo_array = np.asarray(lo, dtype=np.float64).reshape(n)
        lut, steps_array = stats.build_lut(bounds, bin_off, lo_array, scale.reshape(n))
        return cls(
            bounds=bounds,
            bin_off=bin_off,
            coarse_of=np.concatenate(flat_coarse) if flat_coarse else np.empty(0, np.int32),
            coarse_off=np.asarray(coarse_off, dtype=np.int64),
            point_bins=np.asarray(point_bins, dtype=np.uint8).reshape(n),
            lut=lut,
            lo=lo_array,
            scale=scale.reshape(n),
            steps=steps_array,
        )

    @property
    def binning(self) -> tuple[F64, I64, npt.NDArray[np.int32], F64, F64, I64]:
        """The arrays the ingest kernels take, in their order."""
        return self.bounds, self.bin_off, self.lut, self.lo, self.scale, self.steps

    @property
    def coarse(self) -> tuple[I64, npt.NDArray[np.int32], I64, npt.NDArray[np.uint8]]:
        """The arrays the evaluation kernel takes, in its order."""
        return self.bin_off, self.coarse_of, self.coarse_off, self.point_bins

    @property
    def n_features(self) -> int:
        return int(self.bin_off.size - 1)

    @property
    def n_bins(self) -> int:
        """Fine bins over all features (each feature has one more bin than edges)."""
        return int(self.bin_off[-1])

    def edges(self, f: int) -> F64:
        """Feature ``f``'s fine-bin edges (a view, without the sentinel)."""
        return self.bounds[self.bin_off[f] : self.bin_off[f + 1] - 1]

    def zeros(self) -> tuple[I64, I64]:
        """Empty window state: fine-bin counts ``[n_bins]`` and ``special[3 * n_features]``."""
        return np.zeros(self.n_bins, dtype=np.int64), np.zeros(3 * self.n_features, dtype=np.int64)
