"""Sampler decisions and its bounded buffer."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry

from gateway.metrics import GatewayMetrics
from gateway.sampler import Sampler
from registry.sampling import would_sample


def _offer(sampler: Sampler, rows: int, model: str = "m") -> bool:
    x = np.zeros((rows, 4), np.float32)
    return sampler.offer(model, "1", "id", {"x": ("FP32", x)}, {"y": ("FP32", x[:, :1])}, max_rows=64)


def test_decision_is_deterministic_per_request_id_and_follows_the_rate() -> None:
    first, second = Sampler(), Sampler()
    ids = [f"request-{i}" for i in range(20_000)]
    decisions = [first.decide(i, 0.05) for i in ids]
    assert decisions == [second.decide(i, 0.05) for i in ids]
    assert 0.04 < sum(decisions) / len(ids) < 0.06
    assert not any(first.decide(i, 0.0) for i in ids[:100])
    assert all(first.decide(i, 1.0) for i in ids[:100])
    assert {first.decide("", 0.5) for _ in range(200)} == {True, False}  # no id: random


def test_rate_override_wins_over_the_model_rate() -> None:
    assert Sampler().rate(0.2) == 0.2
    assert Sampler(rate_override=1.0).rate(0.2) == 1.0


def test_buffer_is_bounded_in_rows_and_bytes_and_drops_are_counted() -> None:
    registry = CollectorRegistry()
    sampler = Sampler(max_buffer_rows=10, max_buffer_bytes=10_000, metrics=GatewayMetrics(registry))
    assert _offer(sampler, 6)
    assert not _offer(sampler, 6)  # 12 rows > 10
    assert _offer(sampler, 4)
    assert sampler.buffered_rows == 10
    dropped = registry.get_sample_value("infergate_samples_total", {"model": "m", "outcome": "dropped"})
    assert dropped == 6
    big = Sampler(max_buffer_rows=10_000, max_buffer_bytes=1_000)
    assert not _offer(big, 100)  # 100 x 5 x 4 bytes > 1000


def test_rows_are_capped_per_request_and_take_respects_limits() -> None:
    sampler = Sampler()
    x = np.arange(200, dtype=np.float32).reshape(100, 2)
    sampler.offer("m", "1", "a", {"x": ("FP32", x)}, {"y": ("FP32", x)}, max_rows=8)
    sampler.offer("m", "1", "b", {"x": ("FP32", x)}, {"y": ("FP32", x)}, max_rows=8)
    taken = sampler.take(max_samples=1, max_bytes=1)
    assert len(taken) == 1  # always at least one
    assert taken[0].rows == 8
    assert taken[0].inputs[0][2].base is not None  # a view, not a copy
    assert sampler.buffered_rows == 8


def test_disconnected_sampler_drops_everything() -> None:
    registry = CollectorRegistry()
    sampler = Sampler(metrics=GatewayMetrics(registry))
    assert _offer(sampler, 3)
    sampler.connected = False
    assert not _offer(sampler, 2)
    sampler.drop_all()
    assert sampler.buffered_rows == 0
    assert registry.get_sample_value("infergate_samples_total", {"model": "m", "outcome": "dropped"}) == 5


def test_offer_keeps_views_cuts_to_max_rows_and_counts_bytes() -> None:
    sampler = Sampler()
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    assert sampler.offer("m", "1", "id", {"x": ("FP32", x)}, {"y": ("FP32", x[:, :1])}, max_rows=3)
    (sample,) = sampler.take(10, 1 << 20)
    (name, datatype, rows), (_, _, out) = sample.inputs[0], sample.outputs[0]
    assert (name, datatype, sample.rows) == ("x", "FP32", 3)
    assert np.shares_memory(rows, x)
    assert (rows.shape, out.shape) == ((3, 4), (3, 1))
    assert sample.nbytes == 3 * 4 * 4 + 3 * 4
    small = np.ones((2, 4), dtype=np.float32)
    assert sampler.offer("m", "1", "id", {"x": ("FP32", small)}, {}, max_rows=3)
    assert sampler.take(10, 1 << 20)[0].inputs[0][2] is small  # fewer rows than the cap: no slice at all


def test_the_gateway_decides_by_the_shared_rule_the_monitor_applies() -> None:
    sampler = Sampler()
    ids = [f"id-{i}" for i in range(2000)]
    assert [sampler.decide(i, 0.2) for i in ids] == [would_sample(i, 0.2) for i in ids]
