"""The prediction store and the quality windows: bounded, oldest first, counted; joins by prediction time."""

from __future__ import annotations

import numpy as np

from monitor.feedback_store import ENTRY_OVERHEAD, PredictionStore, from_bytes, to_bytes
from monitor.quality_windows import QualityWindows
from registry.feedback_config import FeedbackConfig

S = 10**9


def fill(store: PredictionStore, start: int, n: int, rows: int = 1, t0: int = 0) -> list[str]:
    """Add ``n`` entries of ``rows`` rows; entry i predicts i (every row), probabilities (i, -i)."""
    ids = [f"id-{i}" for i in range(start, start + n)]
    values = np.repeat(np.arange(start, start + n, dtype=np.float64), rows)
    proba = np.stack([values, -values], axis=1).astype(np.float32) if store.classes else None
    times = t0 + np.arange(start, start + n, dtype=np.int64) * S
    store.add(ids, 1, np.full(n, rows, np.int32), times, values, proba)
    return ids


def present(store: PredictionStore, ids: list[str]) -> list[str]:
    return [i for i, s in zip(ids, store.lookup(ids).tolist(), strict=True) if s >= 0]


def test_rows_bound_evicts_the_oldest_first_and_counts() -> None:
    store = PredictionStore(FeedbackConfig(max_rows=100), classes=2)
    ids = []
    for start in range(0, 130, 10):
        ids += fill(store, start, 10)
    assert present(store, ids) == ids[30:]
    assert (store.rows.size, store.evicted) == (100, {"rows": 30, "bytes": 0, "ttl": 0})
    seqs = store.lookup(["id-129", "id-31"])
    pred, proba = store.row_columns(store.gather(seqs).row_index)
    assert pred.tolist() == [129.0, 31.0]
    assert proba is not None
    assert proba.tolist() == [[129.0, -129.0], [31.0, -31.0]]


def test_multi_row_entries_are_evicted_whole() -> None:
    store = PredictionStore(FeedbackConfig(max_rows=10), classes=0)
    ids = fill(store, 0, 3, rows=3) + fill(store, 3, 1, rows=3)
    assert present(store, ids) == ids[1:]
    gathered = store.gather(store.lookup(["id-3", "id-1"]))
    assert gathered.rows.tolist() == [3, 3]
    assert store.row_columns(gathered.row_index)[0].tolist() == [3.0] * 3 + [1.0] * 3


def test_bytes_bound_and_ttl_evict_oldest_first() -> None:
    per_entry = 8 + 4 + 8 + 4 + 1 + 4 + ENTRY_OVERHEAD + len("id-00") + 8
    store = PredictionStore(FeedbackConfig(max_bytes=max(1024, 50 * per_entry)), classes=0)
    ids = fill(store, 10, 90)
    kept = present(store, ids)
    assert kept == ids[len(ids) - len(kept) :]
    assert store.nbytes <= store.max_bytes
    assert store.evicted["bytes"] == len(ids) - len(kept) > 0
    ttl = PredictionStore(FeedbackConfig(ttl_seconds=10.0), classes=0)
    ids = fill(ttl, 0, 30)
    assert ttl.expire(25 * S) == 15  # predictions at 0..14 s are older than 10 s at 25 s
    assert present(ttl, ids) == ids[15:]
    assert ttl.evicted["ttl"] == 15


def test_snapshot_round_trip_keeps_order_flags_and_values() -> None:
    store = PredictionStore(FeedbackConfig(max_rows=50), classes=2)
    ids = fill(store, 0, 40) + fill(store, 40, 10, rows=2)
    store.mark(store.lookup(["id-45", "id-12"]))
    copy = PredictionStore(FeedbackConfig(max_rows=50), classes=2)
    copy.restore(from_bytes(to_bytes(store.snapshot())))
    assert present(copy, ids) == present(store, ids)
    for s in (store, copy):
        gathered = s.gather(s.lookup(["id-45", "id-12", "id-20"]))
        assert gathered.labelled.tolist() == [True, True, False]
        assert s.row_columns(gathered.row_index)[0].tolist() == [45.0, 45.0, 12.0, 20.0]
    fill(copy, 50, 1)  # the restored store goes on evicting its oldest first
    assert present(copy, ["id-10", "id-11"]) == ["id-11"]


def test_windows_close_by_time_plus_grace_or_rows_and_refuse_late_rows() -> None:
    windows = QualityWindows(FeedbackConfig(window_seconds=10.0, grace_seconds=5.0, window_rows=4))
    times = np.array([1, 2, 11, 12, 13], np.int64) * S
    ones = np.ones(5, np.int32)
    windows.predicted(times, ones, now_ns=13 * S)
    late = windows.labelled(times[:2], ones[:2], np.zeros(2), np.zeros(2), None, np.zeros(2, bool), 13 * S)
    assert late.tolist() == [False, False]
    assert windows.close_due(14 * S) == []  # window 0 ends at 10 s, closes at 15 s
    (first,) = windows.close_due(15 * S)
    assert (first.index, first.predictions, first.rows, first.coverage, first.closed_by) == (
        0,
        2,
        2,
        1.0,
        "time",
    )
    assert windows.labelled(
        times[:1], ones[:1], np.ones(1), np.ones(1), None, np.ones(1, bool), 15 * S
    ).tolist() == [True]
    four = np.array([11, 12, 13, 14], np.int64) * S
    windows.labelled(
        four, np.ones(4, np.int32), np.ones(4), np.zeros(4), None, np.array([0, 0, 0, 1], bool), 15 * S
    )
    (second,) = windows.close_due(15 * S)
    assert (second.index, second.rows, second.carried, second.closed_by) == (1, 4, 1, "rows")
    assert second.coverage == 1.0  # 3 sampled rows labelled of 3 sampled predictions
    assert second.y_true.tolist() == [1.0] * 4
    assert windows.labelled(
        four[:1], ones[:1], np.ones(1), np.ones(1), None, np.zeros(1, bool), 16 * S
    ).tolist() == [True]
