"""The lock-free request-path families export exactly what prometheus-client's Counter and Histogram of the
same name, labels and buckets export (prometheus-client is the oracle), and a scrape racing the writer
never sees a histogram whose count and buckets disagree."""

from __future__ import annotations

import re
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.loopmetrics import LoopCounter, LoopHistogram
from gateway.metrics import BATCH_BUCKETS, LATENCY_BUCKETS

_CREATED = re.compile(r"^(\w+_created)(\{[^}]*\})? .*$", re.MULTILINE)


def _without_created_values(text: bytes) -> str:
    """The exposition with each ``_created`` timestamp blanked (the two families are created apart)."""
    return _CREATED.sub(r"\1\2 T", text.decode())


# Values around and on the bucket bounds: an observation equal to a bound belongs to that bucket.
_values = st.lists(
    st.one_of(
        st.sampled_from([*LATENCY_BUCKETS, *BATCH_BUCKETS, 0.0, 1e-9, 20.0, 1e6]),
        st.floats(min_value=0.0, max_value=1e4, allow_nan=False),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(latencies=_values, rows=_values, increments=st.lists(st.floats(0, 1e3), max_size=10))
def test_exposition_matches_prometheus_client(
    latencies: list[float], rows: list[float], increments: list[float]
) -> None:
    oracle, ours = CollectorRegistry(), CollectorRegistry()
    pairs = [
        (
            Histogram(
                "t_seconds", "Latency.", ["model", "version"], buckets=LATENCY_BUCKETS, registry=oracle
            ),
            LoopHistogram("t_seconds", "Latency.", ["model", "version"], LATENCY_BUCKETS, registry=ours),
            latencies,
        ),
        (
            Histogram("t_rows", "Rows.", ["model", "version"], buckets=BATCH_BUCKETS, registry=oracle),
            LoopHistogram("t_rows", "Rows.", ["model", "version"], BATCH_BUCKETS, registry=ours),
            rows,
        ),
    ]
    for expected, actual, values in pairs:
        for index, value in enumerate(values):
            labels = ("m", str(index % 2))
            expected.labels(*labels).observe(value)
            actual.labels(*labels).observe(value)
    counted = Counter("t_requests", "Requests.", ["model", "code"], registry=oracle)
    loop_counted = LoopCounter("t_requests", "Requests.", ["model", "code"], registry=ours)
    for index, amount in enumerate(increments):
        counted.labels("m", "OK" if index % 3 else "INTERNAL").inc(amount)
        loop_counted.labels("m", "OK" if index % 3 else "INTERNAL").inc(amount)
    assert _without_created_values(generate_latest(ours)) == _without_created_values(generate_latest(oracle))


def test_labels_are_checked_and_children_kept() -> None:
    family = LoopCounter("t_total_checked", "Checked.", ["model", "version"])
    assert family.labels("m", 1) is family.labels("m", "1")
    with pytest.raises(ValueError, match="expected labels"):
        family.labels("m")
    with pytest.raises(ValueError, match="ascending"):
        LoopHistogram("t_bad", "Bad.", ["model"], [0.1, 0.1])


def test_a_scrape_racing_the_writer_sees_consistent_histograms() -> None:
    registry = CollectorRegistry()
    family = LoopHistogram("t_race_seconds", "Race.", ["model"], LATENCY_BUCKETS, registry=registry)
    child = family.labels("m")
    stop = threading.Event()

    def write() -> None:
        value = 0.0
        while not stop.is_set():
            child.observe(value)
            value = (value + 0.0037) % 12.0

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(200):
            text = generate_latest(registry).decode()
            (metric,) = [m for m in text_string_to_metric_families(text) if m.name == "t_race_seconds"]
            count = [s.value for s in metric.samples if s.name == "t_race_seconds_count"]
            buckets = [s.value for s in metric.samples if s.name == "t_race_seconds_bucket"]
            assert len(buckets) == len(LATENCY_BUCKETS) + 1
            assert count == [buckets[-1]]  # +Inf
            assert buckets == sorted(buckets)  # cumulative
    finally:
        stop.set()
        writer.join()
