"""Windows: row and time closing (monotonic clock given explicitly), panes, audit buffers, shedding."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from monitor import stats
from monitor.config import ProfileSettings
from monitor.features import TensorFeatures
from monitor.reference import Profile, build_profile
from monitor.windows import ClosedWindow, VersionWindows
from registry.config import DriftConfig
from registry.signature import Signature, TensorSpec

SIGNATURE = Signature(inputs=(TensorSpec("x", "FP32", (-1, 2)),), outputs=(TensorSpec("y", "FP32", (-1, 1)),))


@pytest.fixture(scope="module")
def profile() -> Profile:
    rng = np.random.default_rng(0)
    data = {
        "input:x": rng.normal(size=(500, 2)).astype(np.float32),
        "output:y": rng.normal(size=(500, 1)).astype(np.float32),
    }
    return build_profile(SIGNATURE, data, ProfileSettings(fine_bins=50), bins=10)


def blocks(profile: Profile, x: np.ndarray[Any, Any], y: np.ndarray[Any, Any] | None = None) -> list[Any]:
    tensors: dict[str, TensorFeatures] = {t.name: t for t in profile.layout.tensors}
    out = [(tensors["x"], tensors["x"].matrix(x))]
    if y is not None:
        out.append((tensors["y"], tensors["y"].matrix(y)))
    return out


def batch_counts(profile: Profile, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    counts, special = profile.grid.zeros()
    stats.ingest(profile.grid, x, 0, counts, special)
    return counts


def test_rows_close_windows_exactly_and_split_batches(profile: Profile) -> None:
    windows = VersionWindows(profile, DriftConfig(window_rows=100, window_seconds=60.0))
    x = np.random.default_rng(1).normal(size=(250, 2))
    closed = windows.add(blocks(profile, x), 250, now=10.0, wall=1000.0)
    assert [(c.index, c.rows, c.reason) for c in closed] == [(1, 100, "rows"), (2, 100, "rows")]
    assert windows.open_rows == 50
    assert np.array_equal(closed[1].buffer.counts, batch_counts(profile, x[100:200]))
    assert closed[0].buffer.counts[: profile.grid.bin_off[2]].sum() == 200  # two features of x
    raw = closed[1].raw_values()
    assert raw is not None
    assert np.array_equal(raw[:2], x[100:200].T)
    assert np.isnan(raw[2]).all()  # y was not given: its row is NaN padding


def test_time_closes_a_window_from_its_first_row(profile: Profile) -> None:
    windows = VersionWindows(profile, DriftConfig(window_rows=1000, window_seconds=5.0))
    x = np.ones((3, 2))
    assert windows.close_due(now=100.0, wall=0.0) == []  # empty windows never close
    assert windows.add(blocks(profile, x), 3, now=100.0, wall=1.0) == []
    assert windows.add(blocks(profile, x), 3, now=104.9, wall=2.0) == []
    assert windows.close_due(now=104.99, wall=3.0) == []
    (closed,) = windows.close_due(now=105.0, wall=4.0)
    assert (closed.rows, closed.reason, closed.opened_wall, closed.closed_wall) == (6, "time", 1.0, 4.0)
    later = windows.add(blocks(profile, x), 3, now=200.0, wall=5.0)
    assert later == []
    (due,) = windows.add(blocks(profile, x), 3, now=205.5, wall=6.0)  # closed before the new rows go in
    assert due.rows == 3
    assert windows.open_rows == 3


def test_sliding_window_is_the_sum_of_the_last_panes(profile: Profile) -> None:
    windows = VersionWindows(profile, DriftConfig(window_rows=40, sliding_panes=3))
    x = np.random.default_rng(2).normal(size=(40 * 7, 2))
    closed: list[ClosedWindow] = []
    for start in range(0, len(x), 13):  # odd batch sizes cross window borders
        part = x[start : start + 13]
        closed += windows.add(blocks(profile, part), len(part), now=0.0, wall=0.0)
        for c in closed[-2:]:
            windows.release(c.buffer)
    assert [c.index for c in closed] == list(range(1, 8))
    for c in closed:
        first = max(0, c.index - 3) * 40
        assert np.array_equal(c.sliding, batch_counts(profile, x[first : c.index * 40]))
        assert (c.sliding_panes, c.sliding_rows) == (min(c.index, 3), min(c.index, 3) * 40)


def test_audit_off_for_large_windows_and_shedding_when_the_evaluator_lags(profile: Profile) -> None:
    windows = VersionWindows(profile, DriftConfig(window_rows=10, audit_max_rows=5))
    assert not windows.audit
    x = np.zeros((10, 2))
    held = []
    for _ in range(40):
        held += windows.add(blocks(profile, x), 10, now=0.0, wall=0.0)
    assert all(c.raw_values() is None for c in held)
    assert len(held) + windows.dropped == 40
    assert windows.dropped > 0
    windows.release(held[0].buffer)
    assert len(windows.add(blocks(profile, x), 10, now=0.0, wall=0.0)) == 1
