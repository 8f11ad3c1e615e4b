"""The adaptive concurrency limit: AIMD on the share of calls that used too much of their budget."""

from __future__ import annotations

import pytest

from gateway.concurrency import ConcurrencyLimit, LimitConfig


def _fill(limit: ConcurrencyLimit) -> int:
    taken = 0
    while limit.try_acquire():
        taken += 1
    return taken


def test_refuses_past_the_limit_and_counts_refusals() -> None:
    limit = ConcurrencyLimit(LimitConfig(initial=4, min_limit=1, max_limit=4, window=1000))
    assert _fill(limit) == 4
    assert limit.inflight == 4
    assert not limit.try_acquire()
    assert limit.refused == 2  # the one that ended _fill and this one
    limit.release(0.001, 0.1)
    assert limit.try_acquire()


def test_late_windows_shrink_the_limit_multiplicatively_down_to_the_floor() -> None:
    config = LimitConfig(initial=100, min_limit=10, max_limit=100, window=4, backoff=0.5)
    limit = ConcurrencyLimit(config)
    sizes = []
    for _ in range(6):
        for _ in range(config.window):
            assert limit.try_acquire()
            limit.release(0.09, 0.1)  # 90% of the budget: late
        sizes.append(limit.limit)
    assert sizes == [50, 25, 12, 10, 10, 10]


def test_a_missed_deadline_counts_as_late() -> None:
    limit = ConcurrencyLimit(LimitConfig(initial=100, min_limit=1, max_limit=100, window=2, backoff=0.5))
    for latency in (0.2, 0.001):  # one of two late: 50% > 5% tolerance
        assert limit.try_acquire()
        limit.release(latency, 0.2)
    assert limit.limit == 50


def test_queueing_within_budget_is_not_punished_and_a_saturated_limit_grows() -> None:
    config = LimitConfig(initial=16, min_limit=1, max_limit=64, window=16)
    limit = ConcurrencyLimit(config)
    grown = []
    for _ in range(5):
        assert _fill(limit) == limit.limit  # saturated: every slot in use, and one refused
        for _ in range(limit.inflight):
            limit.release(0.03, 0.1)  # 30% of the budget: on time
        grown.append(limit.limit)
    assert grown == sorted(grown)
    assert grown[0] == 20
    assert grown[-1] <= 64
    assert grown[-1] > 16


def test_an_unsaturated_limit_stays_put_when_on_time() -> None:
    limit = ConcurrencyLimit(LimitConfig(initial=32, min_limit=1, max_limit=64, window=8))
    for _ in range(64):
        assert limit.try_acquire()
        limit.release(0.001, 0.1)
    assert limit.limit == 32


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": 0},
        {"min_limit": 10, "initial": 5},
        {"initial": 600, "max_limit": 512},
        {"budget_share": 0.0},
        {"late_tolerance": 1.0},
        {"backoff": 1.0},
        {"window": 0},
    ],
)
def test_config_is_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        LimitConfig(**kwargs)  # type: ignore[arg-type]


def test_forget_gives_a_slot_back_without_judging_it() -> None:
    limit = ConcurrencyLimit(LimitConfig(initial=8, min_limit=1, max_limit=16, window=1))
    for _ in range(8):
        assert limit.try_acquire()
    assert not limit.try_acquire()
    for _ in range(8):
        limit.forget()  # with a window of 1, any release would have moved the saturated limit
    assert limit.inflight == 0
    assert limit.limit == 8
    assert limit.try_acquire()
    limit.release(0.0, 1.0)  # the same slot released on time: the saturated limit grows
    assert limit.limit == 10
