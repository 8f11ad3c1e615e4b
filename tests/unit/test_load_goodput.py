"""Goodput, error accounting and latency measured from the intended send time."""

from __future__ import annotations

import grpc
import pytest

from loadtests.figures import summary_figures
from loadtests.recorder import Recorder
from loadtests.status import CLIENT_DROPPED, OK, code_of

MS = 1_000_000
DEADLINE = code_of(grpc.StatusCode.DEADLINE_EXCEEDED)


def _recorder(budget_ms: float | None) -> Recorder:
    return Recorder(
        measure_ns=0, window_ns=100 * MS, budget_ns=None if budget_ms is None else int(budget_ms * MS)
    )


def _figures(budget_ms: float | None) -> dict:
    rec = _recorder(budget_ms)
    # (intended, sent, done, code): latencies 1, 5, 10, 20 ms OK; one late error; one client drop.
    for i, latency in enumerate((1, 5, 10, 20)):
        rec.add(i * 100 * MS, i * 100 * MS, i * 100 * MS + latency * MS, OK)
    rec.add(500 * MS, 500 * MS, 503 * MS, DEADLINE)
    rec.add(600 * MS, 600 * MS, 600 * MS, CLIENT_DROPPED)
    rec.add(-5 * MS, -5 * MS, 1000 * MS, OK)  # warm-up: intended before measure_ns
    rec.fold()
    return summary_figures(rec.summary, measure_ns=0, rows=4, budget_ms=budget_ms)


def test_goodput_counts_ok_responses_within_budget_inclusive() -> None:
    fig = _figures(10.0)
    assert fig["requests"] == 6
    assert fig["ok"] == 4
    assert fig["errors"] == {"DEADLINE_EXCEEDED": 1, "CLIENT_DROPPED": 1}
    assert fig["warmup_requests"] == 1
    assert fig["goodput"]["within_budget"] == 3
    assert fig["duration_s"] == pytest.approx(0.6)
    assert fig["goodput_rps"] == pytest.approx(3 / 0.6)
    assert fig["throughput_rps"] == pytest.approx(4 / 0.6)
    assert fig["rows_per_s"] == pytest.approx(16 / 0.6)


def test_without_budget_every_ok_response_is_good() -> None:
    fig = _figures(None)
    assert fig["goodput"]["within_budget"] == 4
    assert fig["goodput_rps"] == pytest.approx(fig["throughput_rps"])


def test_latency_runs_from_intended_not_actual_send_time() -> None:
    """A request due at t=0 but sent at 400 ms (the client or server stalled) has 401 ms latency."""
    rec = _recorder(50.0)
    rec.add(0, 400 * MS, 401 * MS, OK)
    rec.fold()
    fig = summary_figures(rec.summary, measure_ns=0, rows=1, budget_ms=50.0)
    assert fig["latency_ms"]["max"] == pytest.approx(401.0)
    assert fig["send_lag_ms"]["max"] == pytest.approx(400.0)
    assert fig["goodput"]["within_budget"] == 0


def test_refusal_latency_is_reported_apart_from_ok_latency() -> None:
    rec = Recorder(measure_ns=0, window_ns=50_000_000, budget_ns=None)
    unavailable = code_of(grpc.StatusCode.UNAVAILABLE)
    rec.add(0, 0, 10_000_000, OK)
    rec.add(0, 0, 2_000_000, unavailable)
    rec.add(0, 0, 4_000_000, unavailable)
    rec.fold()
    fig = summary_figures(rec.summary, measure_ns=0, rows=1, budget_ms=None)
    assert fig["latency_ms"]["max"] == pytest.approx(10.0)
    assert fig["error_latency_ms"]["max"] == pytest.approx(4.0)
    assert fig["error_latency_ms"]["min"] == pytest.approx(2.0)
