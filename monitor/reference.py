"""Reference profiles: what "no drift" looks like for one model version.

This module owns the first stage of the monitor's data path: turning a version's ``reference.npz`` into
the per-feature state every window is compared with (a :class:`Profile`), once per (model, version).

* Features follow :mod:`monitor.features`. Rows above ``max_reference_rows`` are reduced to a
  deterministic subsample (``numpy.random.default_rng(0)``, without replacement, order kept).
* Integer and bool columns with at most ``max_categories`` distinct finite values are **categorical**:
  one fine bin per category ``[c, c + 1)`` and gap bins between, which the coarse (PSI) bins gather into
  one "unseen" category. Other columns are **continuous**: fine edges are the reference quantiles at
  levels ``j / fine_bins`` together with the coarse levels ``k / bins``, by the inverted CDF (Hyndman
  and Fan type 1: the smallest reference value whose ECDF reaches the level, i.e. the
  ``ceil(level * n)``-th smallest, computed in integers), duplicates removed. Every edge is a reference
  value; the coarse edges (deciles for ``bins = 10``) are a subset of the fine edges, so coarse bins
  nest exactly. Except one: when the top coarse edge is a repeated maximum (a point mass, a constant
  reference being the extreme case), ``nextafter(max, +inf)`` is added as a fine and coarse edge, so
  values above the maximum have a bin of their own instead of hiding in the maximum's.
* Per feature, contiguously: the edges, the reference count per fine bin (so proportions come from
  counting, never assumed), its NaN / +inf / -inf counts and its sorted finite values (for exact KS).

Profiles are cached beside the version as ``monitor-profile.npz`` (written atomically), keyed by the
SHA-256 of ``reference.npz`` and the settings, so a restart reuses them; a read-only registry only
costs the rebuild. The version's training profile (``training.npz``, the training inputs that the skew
check compares the first windows with) is built by the same code and cached as
``monitor-training-profile.npz``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from monitor import stats
from monitor.config import ProfileSettings
from monitor.errors import NoReferenceError, ProfileError
from monitor.features import FeatureLayout
from monitor.grid import Grid
from registry.signature import Signature

__all__ = [
    "CACHE_FILE",
    "QUANTILE_METHOD",
    "SUBSAMPLE_SEED",
    "TRAINING_CACHE_FILE",
    "Profile",
    "build_profile",
    "load_profile",
]

log = logging.getLogger(__name__)

CACHE_FILE = "monitor-profile.npz"
TRAINING_CACHE_FILE = "monitor-training-profile.npz"
QUANTILE_METHOD = "inverted_cdf (exact ranks)"
SUBSAMPLE_SEED = 0
_FORMAT = 2  # 2: a point mass at the maximum gets a bin above it
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class Profile:
    """A version's reference: layout and names, ``kinds[f]`` ("continuous" or "categorical"), the
    fine-bin :class:`~monitor.Grid`, reference counts per fine bin and ``special`` (NaN, +inf,
    -inf) per feature, sorted finite reference values per feature, and the reference row count."""

    layout: FeatureLayout
    kinds: tuple[str, ...]
    grid: Grid
    counts: I64
    special: I64
    sorted_values: F64
    sorted_off: I64
    rows: int

    @property
    def names(self) -> tuple[str, ...]:
        return self.layout.names

    @property
    def n_features(self) -> int:
        return self.grid.n_features

    def coarse_bins(self, f: int) -> int:
        """How many coarse (PSI) bins feature ``f`` has (for a categorical one, with its "unseen" bin)."""
        return int(self.grid.coarse_off[f + 1] - self.grid.coarse_off[f])

    def psi_df(self, f: int) -> int:
        """Degrees of freedom of feature ``f``'s PSI under no drift: the coarse bins that hold reference
        values, less one, and **at least 1**.

        Bins the reference left empty (a categorical feature's "unseen" bin, the sides of a point mass
        at the reference maximum) have no chi-square null of their own: under no drift a window puts
        nothing there, and any mass ``q`` there adds about ``q ln(q / eps)`` to PSI. The floor makes a
        feature with one filled bin (a one-category feature, a constant one) a comparison of two cells,
        filled and empty, which is a chi-square with 1 degree of freedom: its calibrated threshold is
        finite, so values the reference never had are flagged in calibrated mode as in fixed mode.
        """
        return int(self._psi_df[f])

    @cached_property
    def _psi_df(self) -> I64:
        grid = self.grid
        feature = np.repeat(np.arange(self.n_features), np.diff(grid.bin_off))
        held = np.zeros(int(grid.coarse_off[-1]), dtype=bool)
        held[(grid.coarse_off[feature] + grid.coarse_of)[self.counts > 0]] = True
        filled = np.add.reduceat(held.astype(np.int64), grid.coarse_off[:-1]) if held.size else held
        return np.maximum(np.asarray(filled, dtype=np.int64) - 1, 1)

    def nan_rate(self) -> F64:
        return self.special[0::3] / max(self.rows, 1)

    def inf_rate(self) -> F64:
        return (self.special[1::3] + self.special[2::3]) / max(self.rows, 1)


def build_profile(
    signature: Signature, arrays: dict[str, npt.NDArray[Any]], settings: ProfileSettings, bins: int
) -> Profile:
    """The profile of the reference ``arrays`` (keys ``input:<t>`` / ``output:<t>``, equal row counts).

    NoReferenceError when no numeric tensor of the signature is in ``arrays``.
    """
    layout = FeatureLayout.build(signature, arrays, settings.max_features)
    if not layout.tensors:
        raise NoReferenceError("the arrays hold no numeric tensor of the signature")
    rows = int(arrays[layout.tensors[0].key].shape[0])
    keep = None
    if rows > settings.max_reference_rows:
        pick = np.random.default_rng(SUBSAMPLE_SEED).choice(rows, settings.max_reference_rows, replace=False)
        keep = np.sort(pick)
    columns, kinds, edges, coarse = [], [], [], []
    for t in layout.tensors:
        array = arrays[t.key] if keep is None else arrays[t.key][keep]
        matrix = t.matrix(array)
        discrete = t.mode == "columns" and np.dtype(array.dtype).kind in "biu"
        for j in range(t.width):
            column = matrix[:, j]
            finite = np.sort(column[np.isfinite(column)])
            levels = np.unique(finite) if discrete else None
            if levels is not None and 0 < levels.size <= settings.max_categories:
                kinds.append("categorical")
                e, c = _categorical_bins(levels)
            else:
                kinds.append("continuous")
                e, c = _quantile_bins(finite, settings.fine_bins, bins)
            columns.append(finite)
            edges.append(e)
            coarse.append(c)
    grid = Grid.build(edges, coarse, _point_bins(kinds, columns))
    counts, special = grid.zeros()
    for t in layout.tensors:
        array = arrays[t.key] if keep is None else arrays[t.key][keep]
        stats.ingest(grid, t.matrix(array), t.first, counts, special)
    return Profile(
        layout=layout,
        kinds=tuple(kinds),
        grid=grid,
        counts=counts,
        special=special,
        sorted_values=np.concatenate(columns) if columns else np.empty(0),
        sorted_off=np.cumsum([0] + [c.size for c in columns], dtype=np.int64),
        rows=rows if keep is None else int(keep.size),
    )


def _point_bins(kinds: list[str], sorted_columns: list[F64]) -> list[bool]:
    """Features whose grid KS is exact: categorical ones, and constant ones (their reference sits on one
    value, the left edge of its own bin, and has no mass in the bins beside it)."""
    return [
        k == "categorical" or (c.size > 0 and c[0] == c[-1])
        for k, c in zip(kinds, sorted_columns, strict=True)
    ]


def _quantile_bins(finite: F64, fine: int, bins: int) -> tuple[F64, npt.NDArray[np.int64]]:
    """Edges at the inverted-CDF quantiles of levels ``j / fine`` and ``k / bins`` of the sorted values."""
    n = finite.size
    if n == 0:
        return np.empty(0), np.zeros(1, dtype=np.int64)

    def ranks(den: int) -> npt.NDArray[np.int64]:
        # the ceil(level * n)-th smallest value, in integers: no rounding of level * n
        return (np.arange(1, den, dtype=np.int64) * n + den - 1) // den - 1

    edges = np.unique(finite[np.union1d(ranks(fine), ranks(bins))])
    coarse_edges = np.unique(finite[ranks(bins)])
    top = np.nextafter(finite[-1], np.inf)
    if coarse_edges[-1] == finite[-1] and (n == 1 or finite[-2] == finite[-1]) and np.isfinite(top):
        # The top coarse bin [max, +inf) holds only copies of the maximum (a constant reference is the
        # extreme case): values above it would share its bin, invisible to PSI and the grid KS. An edge
        # just above gives them a coarse bin of their own, empty in the reference.
        edges, coarse_edges = np.append(edges, top), np.append(coarse_edges, top)
    coarse_of = np.concatenate([[0], np.searchsorted(coarse_edges, edges, side="right")])
    return edges, coarse_of.astype(np.int64)


def _categorical_bins(levels: F64) -> tuple[F64, npt.NDArray[np.int64]]:
    edges = np.union1d(levels, levels + 1.0)
    unseen = levels.size
    lower = np.concatenate([[-np.inf], edges])  # each fine bin's lower edge
    where = np.searchsorted(levels, lower)
    hit = (where < levels.size) & (levels[np.minimum(where, levels.size - 1)] == lower)
    return edges, np.where(hit, where, unseen).astype(np.int64)


def load_profile(
    reference: Path,
    signature: Signature,
    settings: ProfileSettings,
    bins: int,
    digest: str,
    *,
    cache_name: str = CACHE_FILE,
) -> Profile:
    """The profile of ``reference`` (a version's ``reference.npz``, or its ``training.npz``, whose SHA-256
    is ``digest``), from the cache ``cache_name`` beside it when that was built from the same file and
    settings, else built and cached there.

    NoReferenceError if the file does not exist or holds no numeric tensor of the signature;
    ProfileError if it is unreadable or invalid.
    """
    if not reference.is_file():
        raise NoReferenceError(f"{reference}: no {reference.name}")
    key = {
        "format": _FORMAT,
        "reference_sha256": digest,
        "bins": bins,
        "method": QUANTILE_METHOD,
        "settings": [
            settings.fine_bins,
            settings.max_features,
            settings.max_reference_rows,
            settings.max_categories,
        ],
    }
    cache = reference.with_name(cache_name)
    cached = _read_cache(cache, key)
    if cached is not None:
        return cached
    try:
        with np.load(reference, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except Exception as exc:  # zip, format and pickle errors all mean "unusable"
        raise ProfileError(f"{reference}: not a readable .npz without pickles: {exc}") from None
    _check_arrays(reference, arrays, signature)
    try:
        profile = build_profile(signature, arrays, settings, bins)
    except NoReferenceError as exc:
        raise NoReferenceError(f"{reference}: {exc}") from None
    _write_cache(cache, key, profile)
    return profile


def _check_arrays(path: Path, arrays: dict[str, npt.NDArray[Any]], signature: Signature) -> None:
    rows = {a.shape[0] if a.ndim else -1 for a in arrays.values()}
    if len(rows) != 1 or min(rows) < 1:
        raise ProfileError(f"{path}: arrays must share one positive row count, got {sorted(rows)}")
    for side, specs in (("input", signature.inputs), ("output", signature.outputs)):
        for spec in specs:
            array = arrays.get(f"{side}:{spec.name}")
            if array is None or spec.datatype == "BYTES":
                continue
            dims_ok = array.ndim == len(spec.shape) and all(
                d in (-1, a) for d, a in zip(spec.shape[1:], array.shape[1:], strict=True)
            )
            if not dims_ok or array.dtype.kind not in "biuf":
                raise ProfileError(
                    f"{path}: {side}:{spec.name} has shape {array.shape} and dtype "
                    f"{array.dtype}, expected rows of {list(spec.shape)} {spec.datatype}"
                )


def _read_cache(path: Path, key: dict[str, Any]) -> Profile | None:
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(bytes(npz["meta"]).decode("utf-8"))
            if meta.get("key") != key:
                return None
            data = {name: npz[name] for name in npz.files}
        off, coarse_off = data["bin_off"], data["coarse_off"]
        n = off.size - 1
        grid = Grid.build(
            [data["bounds"][off[f] : off[f + 1] - 1] for f in range(n)],
            [data["coarse_of"][off[f] : off[f + 1]] for f in range(n)],
            _point_bins(meta["kinds"], np.split(data["sorted_values"], data["sorted_off"][1:-1])),
        )
        if not np.array_equal(grid.coarse_off, coarse_off):
            return None
        return Profile(
            FeatureLayout.from_json(meta["layout"]),
            tuple(meta["kinds"]),
            grid,
            data["counts"],
            data["special"],
            data["sorted_values"],
            data["sorted_off"],
            int(meta["rows"]),
        )
    except FileNotFoundError:
        return None
    except Exception as exc:  # a damaged cache is rebuilt, never fatal
        log.warning("ignoring unreadable profile cache %s: %s", path, exc)
        return None


def _write_cache(path: Path, key: dict[str, Any], profile: Profile) -> None:
    meta = {
        "key": key,
        "kinds": list(profile.kinds),
        "layout": profile.layout.to_json(),
        "rows": profile.rows,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            np.savez(
                f,
                meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
                bounds=profile.grid.bounds,
                bin_off=profile.grid.bin_off,
                coarse_of=profile.grid.coarse_of,
                coarse_off=profile.grid.coarse_off,
                counts=profile.counts,
                special=profile.special,
                sorted_values=profile.sorted_values,
                sorted_off=profile.sorted_off,
            )
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot cache the profile at %s (kept in memory only): %s", path, exc)
        tmp.unlink(missing_ok=True)
