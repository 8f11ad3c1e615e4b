"""The batcher's scheduling, driven by the fake runner and fake clock of tests/batcher_rig.py: EDF order,
batch formation, when waiting to batch pays, deadline shedding, queue limits, cancellation, failure
isolation, close, the fixed scheduler, the idle probe and pipelined batches."""

from __future__ import annotations

import asyncio

import pytest

from gateway.batcher import QUEUED_PATH_S
from gateway.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    ResourceExhaustedError,
    UnavailableError,
)
from tests.batcher_rig import occupy, own_rows, release_all, request, rig, settle


async def test_service_order_is_earliest_deadline_then_priority_then_arrival() -> None:
    r = rig()
    first = await occupy(r)
    later = r.submit(1, budget=3.0)
    earliest = r.submit(2, budget=1.0)
    low = r.submit(3, budget=2.0, priority=2)
    high = r.submit(4, budget=2.0, priority=1)
    high_after = r.submit(5, budget=2.0, priority=1)
    await settle()
    await release_all(r)
    assert r.batches() == [[0], [2], [4], [5], [3], [1]]
    for ident, future in [(0, first), (1, later), (2, earliest), (3, low), (4, high), (5, high_after)]:
        own_rows(await future, ident)


async def test_batches_hold_same_key_rows_up_to_the_maximum() -> None:
    r = rig(max_batch_size=4)
    await occupy(r)
    two = r.submit(1, rows=2)
    one = r.submit(2)
    wide = r.submit(3, width=5)
    two_more = r.submit(4, rows=2)
    last = r.submit(5)
    await settle()
    await release_all(r)
    assert r.batches() == [[0], [1, 1, 2], [3], [4, 4, 5]]
    assert [call.task.startswith("batcher-") for call in r.runner.calls] == [False, True, True, True]
    own_rows(await two, 1, rows=2)
    own_rows(await one, 2)
    assert (await wide).outputs[0].shape == (1, 5)
    own_rows(await two_more, 4, rows=2)
    result = await last
    own_rows(result, 5)
    assert result.batch_rows == 3


async def test_former_waits_for_more_rows_only_within_the_queue_delay() -> None:
    r = rig(max_batch_size=4, max_queue_delay_ms=2.0, gated=False)
    await r.submit(0)  # idle, arrival rate unknown: runs at once
    r.clock.advance(0.0001)
    second = r.submit(1)
    await settle()
    assert r.clock.sleepers == 1
    assert len(r.runner.calls) == 1
    r.clock.advance(0.0001)
    third = r.submit(2)
    await settle()
    assert len(r.runner.calls) == 1  # not full yet: still waiting, until the delay from the head's arrival
    r.clock.advance(0.0018)
    await settle()
    assert len(r.runner.calls) == 1  # 1.9 ms after the head arrived
    r.clock.advance(0.0001)
    await settle()
    assert r.batches()[1:] == [[1, 2]]
    result = await second
    assert abs(result.queue_ns - 2_000_000) <= 1
    own_rows(result, 1)
    own_rows(await third, 2)
    r.clock.advance(0.0001)
    fill = [r.submit(3, rows=2), r.submit(4, rows=2)]
    await settle()  # full: runs without waiting for the delay
    assert r.batches()[2:] == [[3, 3, 4, 4]]
    for ident, future in zip([3, 4], fill, strict=True):
        own_rows(await future, ident, rows=2)


async def test_former_waits_no_longer_than_the_heads_slack() -> None:
    r = rig(max_batch_size=4, max_queue_delay_ms=50.0, gated=False)
    await r.submit(0)  # teaches the profile: 1 ms per row-1 batch, so 4 rows predict 4 ms
    r.clock.advance(0.0001)
    tight = r.submit(1, budget=0.006)
    await settle()
    assert r.clock.sleepers == 1
    r.clock.advance(0.0019)
    await settle()
    assert len(r.runner.calls) == 1
    r.clock.advance(0.0001)  # deadline minus the full batch's prediction (2 ms), long before 50 ms
    await settle()
    assert r.batches()[1:] == [[1]]
    own_rows(await tight, 1)


async def test_budget_below_the_prediction_is_refused_at_admission_uncomputed() -> None:
    r = rig(seed_s=0.010, gated=False)
    with pytest.raises(DeadlineExceededError, match="below the predicted"):
        await r.batcher.submit(request(1), r.clock.now() + 0.005, 1)
    assert r.observer.shed == ["deadline_admission"]
    assert r.runner.calls == []


async def test_an_idle_version_admits_one_probe_for_a_stale_profile() -> None:
    r = rig(seed_s=0.010, gated=False)
    r.clock.advance(1.5)
    own_rows(await r.batcher.submit(request(1), r.clock.now() + 0.005, 1), 1)
    with pytest.raises(DeadlineExceededError):
        await r.batcher.submit(request(2), r.clock.now() + 0.005, 1)
    assert r.batches() == [[1]]
    assert r.observer.shed == ["deadline_admission"]


async def test_requests_whose_deadline_passes_in_the_queue_are_shed_uncomputed() -> None:
    r = rig(seed_s=0.001)
    first = await occupy(r)
    doomed = r.submit(1, budget=0.05)
    kept = r.submit(2, budget=1.0)
    await settle()
    r.clock.advance(0.06)
    await release_all(r)
    with pytest.raises(DeadlineExceededError, match="cannot be met"):
        await doomed
    own_rows(await kept, 2)
    own_rows(await first, 0)
    assert r.batches() == [[0], [2]]
    assert r.observer.shed == ["deadline_expired"]


async def test_full_queue_is_refused_at_once() -> None:
    r = rig(max_queue_size=2)
    await occupy(r)
    queued = [r.submit(1), r.submit(2)]
    await settle()
    with pytest.raises(ResourceExhaustedError, match="queue is full"):
        await r.batcher.submit(request(3), r.clock.now() + 10, 1)
    assert r.observer.shed == ["queue_full"]
    await release_all(r)
    for ident, future in zip([1, 2], queued, strict=True):
        own_rows(await future, ident)
    assert r.batcher.queued_rows == 0


async def test_a_cancelled_request_is_never_computed_and_is_counted() -> None:
    r = rig()
    await occupy(r)
    cancelled = r.submit(1)
    kept = r.submit(2)
    await settle()
    cancelled.cancel()
    await settle()
    assert r.observer.shed == ["cancelled"]
    assert r.batcher.queued_rows == 1
    await release_all(r)
    own_rows(await kept, 2)
    assert cancelled.cancelled()
    assert r.batches() == [[0], [2]]
    assert r.observer.depth[-1] == 0


async def test_a_failing_batch_is_rerun_one_by_one_so_only_the_bad_request_fails() -> None:
    r = rig(max_batch_size=4)
    await occupy(r)
    good, bad, other = r.submit(1), r.submit(-1), r.submit(3)
    await settle()
    await release_all(r)
    assert r.batches() == [[0], [1, -1, 3], [1], [-1], [3]]
    own_rows(await good, 1)
    own_rows(await other, 3)
    with pytest.raises(InvalidArgumentError):
        await bad


async def test_close_answers_queued_requests_and_refuses_new_ones() -> None:
    r = rig()
    first = await occupy(r)
    queued = [r.submit(1), r.submit(2)]
    await settle()
    closing = asyncio.ensure_future(r.batcher.close())
    await settle()
    with pytest.raises(UnavailableError):
        await r.batcher.submit(request(3), r.clock.now() + 10, 1)
    assert not closing.done()
    await release_all(r)
    await closing
    own_rows(await first, 0)
    for ident, future in zip([1, 2], queued, strict=True):
        own_rows(await future, ident)


async def test_fixed_scheduler_is_fifo_and_never_sheds() -> None:
    r = rig(scheduler="fixed", seed_s=0.010)
    await occupy(r)
    futures = [r.submit(1, budget=3.0), r.submit(2, budget=1.0), r.submit(3, budget=0.001)]
    await settle()
    r.clock.advance(5.0)  # every deadline has passed
    await release_all(r)
    assert r.batches() == [[0], [1], [2], [3]]
    for ident, future in zip([1, 2, 3], futures, strict=True):
        own_rows(await future, ident)
    assert r.observer.shed == []


async def test_no_waiting_to_batch_when_batching_saves_less_than_the_queued_path_costs() -> None:
    """The same arrivals as above, but a model whose full batch costs barely more than one row (the
    profile has seen both): every request runs at once instead of waiting for company."""
    r = rig(max_batch_size=4, max_queue_delay_ms=2.0, gated=False)
    profile = r.batcher.profiles[0]
    profile.observe(1, 20e-6)
    profile.observe(4, 30e-6)  # batching 4 saves 12.5 us a request, far below QUEUED_PATH_S
    assert profile.typical(1) - profile.typical(4) / 4 < QUEUED_PATH_S
    r.runner.compute_s = 20e-6
    await r.submit(0)
    r.clock.advance(0.0001)
    second = r.submit(1)
    await settle()
    assert r.clock.sleepers == 0  # nobody waits for the queue delay
    own_rows(await second, 1)
    assert r.batches() == [[0], [1]]


async def test_waiting_to_batch_stays_when_batching_saves_more_than_the_queued_path_costs() -> None:
    r = rig(max_batch_size=4, max_queue_delay_ms=2.0, gated=False)
    profile = r.batcher.profiles[0]
    profile.observe(1, 1e-3)
    profile.observe(4, 1.2e-3)  # 0.7 ms a request saved by a full batch
    await r.submit(0)
    r.clock.advance(0.0001)
    second = r.submit(1)
    await settle()
    assert r.clock.sleepers == 1  # the former waits for more rows
    r.clock.advance(0.002)
    own_rows(await second, 1)


async def test_a_full_batch_waiting_is_handed_over_while_the_running_one_computes() -> None:
    r = rig(max_batch_size=2)
    await occupy(r)  # request 0 holds the instance (fast path, gated)
    futures = [r.submit(ident) for ident in (1, 2, 3, 4)]
    await settle()
    r.runner.allow(1)  # 0 finishes; the former takes [1, 2]; [3, 4] is a full batch waiting
    await settle()
    assert r.batches() == [[0], [1, 2], [3, 4]]  # [3, 4] handed over while [1, 2] is still running
    await release_all(r)
    for ident, future in zip((1, 2, 3, 4), futures, strict=True):
        own_rows(await future, ident)


async def test_less_than_a_full_batch_waits_for_the_running_one() -> None:
    r = rig(max_batch_size=2)
    await occupy(r)
    futures = [r.submit(ident) for ident in (1, 2, 3)]
    await settle()
    r.runner.allow(1)
    await settle()
    assert r.batches() == [[0], [1, 2]]  # one row waiting: it may still gain company
    r.runner.allow(1)
    await settle()
    assert r.batches() == [[0], [1, 2], [3]]
    await release_all(r)
    for ident, future in zip((1, 2, 3), futures, strict=True):
        own_rows(await future, ident)


async def test_pipelined_batches_stay_full_when_runs_beat_their_predictions() -> None:
    # Predicted 10 ms a batch, each run takes 1 ms: the predicted end of the batches in flight must follow
    # the runs as they finish, not add up prediction after prediction until no second request seems to fit
    # before its deadline (the 32-row mlp at 16 concurrent calls fell to one request a batch that way).
    r = rig(max_batch_size=2, seed_s=0.010)
    await occupy(r)
    futures = [r.submit(ident, budget=0.1) for ident in range(1, 41)]
    await settle()
    while not all(future.done() for future in futures):
        r.runner.allow(1)
        await settle()
    assert r.batches()[1:] == [[i, i + 1] for i in range(1, 41, 2)]
    assert r.observer.shed == []
    for ident, future in zip(range(1, 41), futures, strict=True):
        own_rows(await future, ident)
