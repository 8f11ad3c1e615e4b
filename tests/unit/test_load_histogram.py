"""Percentiles merged across client processes agree with numpy on the union of all samples."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadtests.histogram import MAX_VALUE_NS, SUB_BUCKETS, Histogram, bucket_bounds, bucket_index
from loadtests.recorder import Recorder, Summary
from loadtests.status import OK

QUANTILES = (1, 50, 90, 99, 99.9, 100)


def _close(estimate: float | None, exact: float) -> bool:
    """Within half a bucket: 1/SUB_BUCKETS of the value (exact below 256 ns)."""
    assert estimate is not None
    return abs(estimate - exact) <= exact / SUB_BUCKETS + 0.5


def test_bucket_layout_is_contiguous_and_tight() -> None:
    values = np.unique(
        np.concatenate([np.arange(0, 5000), np.geomspace(1, MAX_VALUE_NS, 5000).astype(np.int64)])
    )
    index = bucket_index(values)
    lower, width = bucket_bounds(index)
    assert np.all(lower <= values)
    assert np.all(values < lower + width)
    assert np.all(np.diff(index) >= 0)
    assert np.all(width[values >= 256] <= lower[values >= 256] / (SUB_BUCKETS - 1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merged_percentiles_match_numpy_on_the_union(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Three "processes" with different latency distributions (ns), as a sweep over a stall would give.
    parts = [
        rng.lognormal(13.5, 0.6, 4000).astype(np.int64),
        rng.lognormal(14.5, 1.2, 2500).astype(np.int64),
        (rng.pareto(1.5, 700) * 1e6).astype(np.int64) + 200_000,
    ]
    merged = Histogram.merged(Histogram.of(p) for p in parts)
    union = np.concatenate(parts)
    direct = Histogram.of(union)
    assert np.array_equal(merged.counts, direct.counts)
    assert (merged.total, merged.sum_ns, merged.min_ns, merged.max_ns) == (
        union.size,
        int(union.sum()),
        int(union.min()),
        int(union.max()),
    )
    for q in QUANTILES:
        exact = float(np.percentile(union, q, method="inverted_cdf"))
        assert merged.percentile(q) == direct.percentile(q)
        assert _close(merged.percentile(q), exact), (q, merged.percentile(q), exact)
    assert merged.percentile(100) == union.max()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 10**11), min_size=0, max_size=40), min_size=1, max_size=5),
    st.sampled_from(QUANTILES),
)
def test_merge_property(parts: list[list[int]], q: float) -> None:
    union = np.array([v for p in parts for v in p], dtype=np.int64)
    merged = Histogram.merged(Histogram.of(np.array(p, dtype=np.int64)) for p in parts)
    if union.size == 0:
        assert merged.percentile(q) is None
        return
    assert _close(merged.percentile(q), float(np.percentile(union, q, method="inverted_cdf")))


def test_summaries_of_processes_merge_exactly() -> None:
    """Per-process Recorder summaries merged == one Recorder that saw every request."""
    rng = np.random.default_rng(7)
    n = 3000
    intended = np.sort(rng.integers(0, 5_000_000_000, n))
    done = intended + rng.lognormal(14, 1, n).astype(np.int64)
    codes = np.where(rng.random(n) < 0.05, 4, OK)
    owner = rng.integers(0, 3, n)

    def recorder() -> Recorder:
        return Recorder(measure_ns=1_000_000_000, window_ns=100_000_000, budget_ns=2_000_000)

    whole, parts = recorder(), [recorder() for _ in range(3)]
    for i in range(n):
        record = (int(intended[i]), int(intended[i]), int(done[i]), int(codes[i]))
        whole.add(*record)
        parts[owner[i]].add(*record)
    whole.fold()
    merged = Summary()
    for part in parts:
        part.fold()
        merged.merge(part.summary)
    w = whole.summary
    assert np.array_equal(merged.latency.counts, w.latency.counts)
    assert np.array_equal(merged.timeline.keys, w.timeline.keys)
    assert np.array_equal(merged.timeline.counts, w.timeline.counts)
    assert np.array_equal(merged.status_totals(), w.status_totals())
    assert (merged.good, merged.warmup, merged.last_done_ns) == (w.good, w.warmup, w.last_done_ns)
    assert merged.warmup == int(np.count_nonzero(intended < 1_000_000_000))
