"""Reference profiles: features, quantile edges, categorical bins, summaries, subsampling and the cache."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monitor.config import ProfileSettings
from monitor.errors import NoReferenceError, ProfileError
from monitor.features import FeatureLayout
from monitor.reference import CACHE_FILE, build_profile, load_profile
from registry.signature import Signature, TensorSpec
from tests import monitor_oracles as oracle

SIGNATURE = Signature(
    inputs=(
        TensorSpec("x", "FP32", (-1, 3)),
        TensorSpec("image", "FP32", (-1, 2, 3)),
        TensorSpec("wide", "FP64", (-1, 300)),
        TensorSpec("ragged", "FP32", (-1, -1)),
        TensorSpec("text", "BYTES", (-1,)),
    ),
    outputs=(TensorSpec("label", "INT64", (-1,)), TensorSpec("score", "FP32", (-1, 1))),
)


def arrays(rows: int = 400, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3)).astype(np.float32)
    x[::10, 1] = np.nan
    x[::25, 2] = np.inf
    return {
        "input:x": x,
        "input:image": rng.normal(size=(rows, 2, 3)).astype(np.float32),
        "input:wide": rng.normal(size=(rows, 300)),
        "input:ragged": rng.normal(size=(rows, 5)).astype(np.float32),
        "output:label": rng.integers(0, 3, rows).astype(np.int64),
        "output:score": rng.integers(0, 1000, (rows, 1)).astype(np.float32),
    }


def test_layout_names_and_modes() -> None:
    layout = FeatureLayout.build(SIGNATURE, arrays(), max_features=256)
    assert [(t.name, t.mode, t.first, t.width) for t in layout.tensors] == [
        ("x", "columns", 0, 3),
        ("image", "columns", 3, 6),
        ("wide", "summary", 9, 4),
        ("ragged", "summary", 13, 4),
        ("label", "columns", 17, 1),
        ("score", "columns", 18, 1),
    ]
    names = layout.names
    assert names[:4] == ("x[0]", "x[1]", "x[2]", "image[0]")
    assert names[9:13] == ("wide.mean", "wide.std", "wide.min", "wide.max")
    assert names[17:] == ("label[0]", "score[0]")
    assert FeatureLayout.from_json(layout.to_json()) == layout


def test_profile_edges_are_pinned_quantiles_and_deciles_nest() -> None:
    data = arrays()
    profile = build_profile(SIGNATURE, data, ProfileSettings(fine_bins=100), bins=10)
    grid = profile.grid
    x0 = data["input:x"][:, 0].astype(np.float64)
    levels = sorted({Fraction(j, 100) for j in range(1, 100)} | {Fraction(k, 10) for k in range(1, 10)})
    assert np.array_equal(grid.edges(0), oracle.quantile_edges(x0, levels))
    deciles = oracle.quantile_edges(x0, [Fraction(k, 10) for k in range(1, 10)])
    assert np.isin(deciles, grid.edges(0)).all()
    assert profile.coarse_bins(0) == deciles.size + 1
    for f in range(profile.n_features):
        assert np.array_equal(
            profile.counts[grid.bin_off[f] : grid.bin_off[f + 1]].sum(), np.diff(profile.sorted_off)[f]
        )


def test_profile_counts_rates_kinds_and_sorted_values() -> None:
    data = arrays()
    profile = build_profile(SIGNATURE, data, ProfileSettings(max_categories=5), bins=10)
    assert profile.kinds[17] == "categorical"  # label: 3 levels
    assert profile.kinds[18] == "continuous"  # score: float, even if integral
    assert profile.kinds[0] == "continuous"
    x1 = data["input:x"][:, 1]
    assert profile.nan_rate()[1] == pytest.approx(np.isnan(x1).mean())
    assert profile.inf_rate()[2] == pytest.approx(np.isinf(data["input:x"][:, 2]).mean())
    sorted_x1 = profile.sorted_values[profile.sorted_off[1] : profile.sorted_off[2]]
    assert np.array_equal(sorted_x1, np.sort(oracle.finite(x1)))
    off = profile.grid.bin_off
    label_edges = profile.grid.edges(17)
    assert label_edges.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert np.array_equal(
        profile.counts[off[17] : off[18]], oracle.bin_counts(label_edges, data["output:label"])
    )
    assert profile.psi_df(17) == 2
    mean = profile.sorted_values[profile.sorted_off[9] : profile.sorted_off[10]]
    assert np.allclose(mean, np.sort(data["input:wide"].mean(axis=1)))


def test_large_reference_is_subsampled_deterministically() -> None:
    data = arrays(rows=3000)
    settings = ProfileSettings(max_reference_rows=1000)
    a = build_profile(SIGNATURE, data, settings, bins=10)
    b = build_profile(SIGNATURE, data, settings, bins=10)
    assert a.rows == 1000
    assert np.array_equal(a.sorted_values, b.sorted_values)
    assert np.isin(a.sorted_values[: a.sorted_off[1]], data["input:x"][:, 0]).all()


def test_no_numeric_tensor_means_no_reference() -> None:
    with pytest.raises(NoReferenceError):
        build_profile(SIGNATURE, {"input:text": np.array([b"a"])}, ProfileSettings(), bins=10)


def test_cache_is_written_reused_and_rebuilt_when_settings_change(tmp_path: Path) -> None:
    path = tmp_path / "reference.npz"
    np.savez(path, **arrays())
    first = load_profile(path, SIGNATURE, ProfileSettings(), 10, "a" * 64)
    cache = tmp_path / CACHE_FILE
    assert cache.is_file()
    stamp = cache.stat().st_mtime_ns
    again = load_profile(path, SIGNATURE, ProfileSettings(), 10, "a" * 64)
    assert cache.stat().st_mtime_ns == stamp
    assert again.names == first.names
    assert again.kinds == first.kinds
    assert np.array_equal(again.counts, first.counts)
    assert np.array_equal(again.grid.lut, first.grid.lut)
    other = load_profile(path, SIGNATURE, ProfileSettings(), 5, "a" * 64)
    assert other.coarse_bins(0) <= 5
    assert cache.stat().st_mtime_ns != stamp
    cache.write_bytes(b"not an npz")
    assert load_profile(path, SIGNATURE, ProfileSettings(), 5, "b" * 64).names == first.names


def test_missing_and_invalid_references(tmp_path: Path) -> None:
    with pytest.raises(NoReferenceError):
        load_profile(tmp_path / "reference.npz", SIGNATURE, ProfileSettings(), 10, "a" * 64)
    bad = tmp_path / "reference.npz"
    bad.write_bytes(b"junk")
    with pytest.raises(ProfileError, match="not a readable"):
        load_profile(bad, SIGNATURE, ProfileSettings(), 10, "a" * 64)
    np.savez(bad, **{"input:x": np.zeros((4, 5), dtype=np.float32)})
    with pytest.raises(ProfileError, match="input:x"):
        load_profile(bad, SIGNATURE, ProfileSettings(), 10, "c" * 64)
