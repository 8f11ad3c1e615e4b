"""The batcher's execution paths and overload behaviour, driven by tests/batcher_rig.py: adaptive LIFO
with CoDel under a stale standing queue, the idle fast path, inline runs, and what the latency profile
learns from each path."""

from __future__ import annotations

import asyncio

import pytest

from gateway.arrivals import COMPANY_MIN
from gateway.batcher import INLINE_COMPUTE_S, THREAD_HOP_S
from gateway.clock import loop_is_idle
from gateway.cores import CoreWatch
from gateway.errors import DeadlineExceededError
from gateway.execution import ALONE_INLINE_MAX_S, SOLO_INLINE_MAX_S
from tests.batcher_rig import occupy, own_rows, release_all, request, rig, settle


async def test_a_standing_queue_serves_newest_first_sheds_stale_requests_and_recovers() -> None:
    r = rig(codel_target_ms=5.0, codel_interval_ms=50.0)
    await occupy(r)
    old = r.submit(1, budget=1.0)
    urgent = r.submit(2, budget=0.5)
    await settle()
    r.clock.advance(0.010)
    r.runner.allow(1)
    await settle()
    assert r.batches() == [[0], [2]]  # queued for 10 ms only: deadline order
    aging = [r.submit(ident, budget=1.0) for ident in (3, 4, 5)]
    await settle()
    r.clock.advance(0.050)  # the queue has not been empty for 61 ms: it stands
    fresh = [r.submit(6, budget=1.0), r.submit(7, budget=1.0)]
    await settle()
    r.runner.allow(1)
    await settle()
    assert r.batches()[2:] == [[7]]  # newest first
    for future in [old, *aging]:
        with pytest.raises(DeadlineExceededError, match="standing queue"):
            await future
    assert r.observer.shed == ["codel"] * 4
    r.runner.allow(2)
    await settle()
    assert r.batches()[2:] == [[7], [6]]
    own_rows(await urgent, 2)
    for ident, future in zip([6, 7], fresh, strict=True):
        own_rows(await future, ident)
    # Drained: deadline order again.
    await occupy(r, 8)
    later, sooner = r.submit(9, budget=1.0), r.submit(10, budget=0.5)
    await settle()
    await release_all(r)
    assert r.batches()[4:] == [[8], [10], [9]]
    own_rows(await later, 9)
    own_rows(await sooner, 10)


async def test_idle_fast_path_runs_in_the_callers_task_with_unchanged_statistics() -> None:
    r = rig(gated=False)
    result = await r.submit(1)
    own_rows(result, 1)
    assert not r.runner.calls[0].task.startswith("batcher-")
    assert (result.queue_ns, result.compute_ns, result.batch_rows) == (0, 1_000_000, 1)
    assert r.observer.batches == [(1, 1_000_000)]
    assert [(p.batch_size, p.observations) for p in r.batcher.profiles[0].snapshot()] == [(1, 1)]
    assert r.observer.depth == []  # never queued


async def test_a_busy_instance_sends_requests_through_the_queue() -> None:
    r = rig(max_batch_size=4)
    await occupy(r)
    queued = r.submit(1)
    await settle()
    await release_all(r)
    result = await queued
    own_rows(result, 1)
    assert r.runner.calls[1].task.startswith("batcher-")
    assert result.batch_rows == 1
    assert result.compute_ns == 1_000_000
    assert r.observer.batches == [(1, 1_000_000), (1, 1_000_000)]
    assert r.observer.depth == [1, 0]


async def test_a_cancelled_fast_path_call_still_counts_its_batch_and_frees_the_instance() -> None:
    r = rig()
    running = await occupy(r)
    running.cancel()
    await settle()
    assert running.cancelled()
    assert [rows for rows, _ in r.observer.batches] == [1]
    after = r.submit(2)
    await settle()
    await release_all(r)
    own_rows(await after, 2)
    assert r.observer.shed == []


@pytest.mark.parametrize(
    ("provider", "seed_s", "inline"),
    [
        ("cpu", INLINE_COMPUTE_S / 4, True),
        ("cpu", INLINE_COMPUTE_S * 4, False),
        ("cpu", None, False),  # nothing known yet: never inline
        ("cuda", INLINE_COMPUTE_S / 4, False),
    ],
)
async def test_only_queued_cpu_batches_predicted_shorter_than_a_thread_hop_run_on_the_loop(
    provider: str, seed_s: float | None, inline: bool
) -> None:
    r = rig(provider=provider, seed_s=seed_s, max_batch_size=64)
    r.submit(0, rows=64)  # predicted far past every inline cap: held on the executor by the gate
    await settle()
    assert r.runner.started.is_set()
    queued = r.submit(1)  # the instance is busy: through the queue and the former
    await settle()
    await release_all(r)
    own_rows(await queued, 1)
    assert r.runner.calls[1].task.startswith("batcher-")
    assert r.runner.calls[1].sync is inline


async def test_where_a_batch_runs_follows_its_own_compute_not_the_latency_a_hop_added() -> None:
    """Latency through the executor (hop and contention included) looks slow; the session's own compute,
    from warm-up and inline runs, decides, so a fast model returns to the loop and stays there."""
    r = rig(gated=False, provider="cpu", seed_s=INLINE_COMPUTE_S * 10)  # latency seen through a hop
    profile = r.batcher.profiles[0]
    profile.observe_compute(1, INLINE_COMPUTE_S / 4)  # what warm-up measured of the session itself
    r.runner.compute_s = INLINE_COMPUTE_S / 2
    r.idle[0] = False  # not alone: the queued path's threshold applies
    for ident in range(3):
        own_rows(await r.submit(ident), ident)
    assert [call.sync for call in r.runner.calls] == [True, True, True]
    assert INLINE_COMPUTE_S / 4 < profile.compute(1) < INLINE_COMPUTE_S / 2  # learning the inline runs
    assert profile.typical(1) > INLINE_COMPUTE_S  # latency keeps its hop


async def test_a_stale_slow_warm_up_estimate_is_lowered_by_executor_runs_until_batches_return() -> None:
    """Warm-up measured the session slower than it is: the thread-measured runs on the executor lower the
    compute estimate until lone requests run on the loop again."""
    r = rig(gated=False, provider="cpu", seed_s=ALONE_INLINE_MAX_S * 2)
    r.batcher.profiles[0].observe_compute(1, ALONE_INLINE_MAX_S * 2)  # the stale warm-up figure
    r.runner.last_compute_ns = [20_000]  # type: ignore[attr-defined]  # 20 µs measured on the thread
    r.runner.compute_s = 20e-6  # and as long on the loop
    for ident in range(20):
        own_rows(await r.submit(ident), ident)
    syncs = [call.sync for call in r.runner.calls]
    assert syncs[0] is False
    assert syncs[-5:] == [True] * 5
    assert syncs.index(True) > 1  # lowered gradually, not by one run


def test_loop_is_idle_reads_the_ready_queue_and_refuses_loops_without_one() -> None:
    loop = asyncio.new_event_loop()
    try:
        assert loop_is_idle(loop)
        loop.call_soon(lambda: None)
        assert not loop_is_idle(loop)
    finally:
        loop.close()
    assert not loop_is_idle(object())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cores", "provider", "seed_s", "inline"),
    [
        (1, "cpu", ALONE_INLINE_MAX_S * 4, True),  # one core: the hop buys no parallelism
        (1, "cpu", SOLO_INLINE_MAX_S / 2, True),
        (1, "cpu", SOLO_INLINE_MAX_S * 2, False),  # too long to hold the loop
        (1, "cpu", None, False),
        (1, "cuda", ALONE_INLINE_MAX_S * 4, False),
        (2, "cpu", ALONE_INLINE_MAX_S * 4, False),
    ],
)
async def test_on_one_usable_core_cpu_batches_up_to_the_cap_run_on_the_loop(
    cores: int, provider: str, seed_s: float | None, inline: bool
) -> None:
    r = rig(gated=False, provider=provider, seed_s=seed_s, cores=CoreWatch(lambda: cores))
    own_rows(await r.submit(1), 1)
    assert r.runner.calls[0].sync is inline


async def test_the_core_count_is_reread_once_per_refresh_and_the_choice_follows_it() -> None:
    """``taskset -p`` while serving: the next read after the refresh interval moves batches on or off
    the loop, and between reads no probe runs."""
    counts = [2]
    probes: list[int] = []

    def probe() -> int:
        probes.append(counts[0])
        return counts[0]

    r = rig(gated=False, provider="cpu", seed_s=ALONE_INLINE_MAX_S * 4, cores=CoreWatch(probe, refresh_s=1.0))
    own_rows(await r.submit(1), 1)
    counts[0] = 1  # pinned to one core
    r.clock.advance(0.5)
    own_rows(await r.submit(2), 2)
    r.clock.advance(0.6)
    own_rows(await r.submit(3), 3)
    assert [call.sync for call in r.runner.calls] == [False, False, True]
    assert probes == [2, 1]


@pytest.mark.parametrize(
    ("compute_s", "inline"), [(INLINE_COMPUTE_S / 2, True), (ALONE_INLINE_MAX_S * 2, False)]
)
async def test_the_inline_choice_settles_by_compute_time(compute_s: float, inline: bool) -> None:
    """Inline runs teach the profile their compute plus a thread hop, as executor runs do (the hop is in
    their latency), so a fast model stays on the loop and a slower one leaves it for good (lone requests,
    judged against the fast path's cap)."""
    r = rig(gated=False, provider="cpu", seed_s=compute_s)
    r.runner.compute_s = compute_s
    r.runner.hop_s = THREAD_HOP_S
    for ident in range(60):
        r.clock.advance(0.001)
        own_rows(await r.submit(ident), ident)
    assert [call.sync for call in r.runner.calls[-20:]] == [inline] * 20
    assert r.batcher.predict(1) >= compute_s + THREAD_HOP_S
    assert (r.batcher.predict(1) <= ALONE_INLINE_MAX_S) is inline
    # Statistics report what was measured: the compute alone inline, the compute and the hop otherwise.
    for call, (_, ns) in zip(r.runner.calls, r.observer.batches, strict=True):
        assert ns == round((compute_s if call.sync else compute_s + THREAD_HOP_S) * 1e9)


async def test_a_lone_sequential_client_never_waits_for_company() -> None:
    """Arrivals faster than the queue delay, but never while another call is pending (one closed-loop
    client): every request runs at once in its caller's task instead of waiting for rows that cannot come."""
    r = rig(max_batch_size=8, max_queue_delay_ms=2.0, gated=False)
    waited = []
    for ident in range(40):
        r.clock.advance(0.0001)
        future = r.submit(ident)
        await settle()
        waited.append(not future.done())
        if waited[-1]:  # still presumed to have company: the former waits out the delay
            r.clock.advance(0.002)
            await settle()
        own_rows(await future, ident)
    assert waited[:2] == [False, True]  # the first runs at once (no arrival seen yet), then it waits...
    assert waited[-10:] == [False] * 10  # ...until the batcher has seen that arrivals never overlap
    assert [call.task.startswith("batcher-") for call in r.runner.calls[-10:]] == [False] * 10


@pytest.mark.parametrize(("idle", "company"), [(True, False), (False, True)])
async def test_arrivals_count_as_company_when_the_loop_has_other_work_ready(
    idle: bool, company: bool
) -> None:
    """Requests that never overlap in the batcher (each runs at once, as inline runs do): with the loop
    otherwise idle they are one sequential client; with other calls ready on the loop (many clients the
    loop has yet to reach) they have company, so the former may wait for rows."""
    r = rig(max_batch_size=8, max_queue_delay_ms=0.0, gated=False)
    r.idle[0] = idle
    for ident in range(40):
        r.clock.advance(0.0001)
        own_rows(await r.submit(ident), ident)
    assert (r.batcher._arrivals.company >= COMPANY_MIN) is company


async def test_codel_defaults_follow_the_budgets_requests_bring() -> None:
    """50 ms budgets: the queue stands after 50 ms without draining, then waits over 25 ms are shed."""
    r = rig(seed_s=0.001)
    first = await occupy(r, budget=0.05)
    served, expired = r.submit(1, budget=0.05), r.submit(2, budget=0.05)
    await settle()
    r.clock.advance(0.045)
    r.runner.allow(1)
    await settle()  # 46 ms since the queue last drained: deadline order still
    aged = r.submit(3, budget=0.05)
    await settle()
    r.clock.advance(0.026)  # still feasible (24 ms of budget left), but queued past the target
    fresh = r.submit(4, budget=0.05)
    await settle()
    await release_all(r)
    with pytest.raises(DeadlineExceededError, match="cannot be met"):
        await expired
    with pytest.raises(DeadlineExceededError, match=r"after 27\.0 ms in a standing queue \(limit 25\.0 ms"):
        await aged
    own_rows(await first, 0)
    own_rows(await served, 1)
    own_rows(await fresh, 4)
    assert r.batches() == [[0], [1], [4]]
    assert r.observer.shed == ["deadline_expired", "codel"]


async def test_profile_learns_the_thread_measured_run_plus_the_hop_not_the_loop_delay() -> None:
    """A runner that times its own runs (``last_compute_ns``, as the real one does on its executor thread):
    the profile learns that time plus the hop, however long the caller waited to be resumed."""
    r = rig(max_batch_size=4, gated=False)
    r.runner.hop_s = 0.010  # the caller sees 10 ms of hop and loop delay on top of the 1 ms run
    r.runner.last_compute_ns = [250_000]  # type: ignore[attr-defined]  # 0.25 ms measured on the thread
    result = await r.submit(1)
    own_rows(result, 1)
    assert result.compute_ns >= 11_000_000  # what the batch saw, as before
    predicted = r.batcher.profiles[0].predict(1)
    assert abs(predicted - (0.00025 + THREAD_HOP_S)) < 1e-9


async def test_a_batch_of_one_goes_to_the_session_uncollated_in_its_own_output_order() -> None:
    r = rig(max_batch_size=4, gated=False)
    decoded = request(7, rows=3)
    result = await r.batcher.submit(decoded, r.clock.now() + 10.0, 1)
    assert result.batch_rows == 3
    own_rows(result, 7, rows=3)
    assert r.runner.calls[0].ids == [7.0, 7.0, 7.0]
    assert r.runner.last_feeds is decoded.feeds  # not copied, not concatenated


async def test_a_queue_that_stands_but_moves_keeps_deadline_order() -> None:
    """A closed loop of clients keeps a queue from ever draining, yet each request waits less than the
    target: that is not overload, so no LIFO (which would starve the oldest) and nothing is shed."""
    r = rig(codel_target_ms=60.0, codel_interval_ms=50.0)
    await occupy(r)
    first = r.submit(1, budget=1.0)
    await settle()
    r.clock.advance(0.030)
    second = r.submit(2, budget=1.0)
    await settle()
    r.clock.advance(0.010)
    r.runner.allow(1)
    await settle()
    assert r.batches() == [[0], [1]]
    r.clock.advance(0.030)
    third = r.submit(3, budget=1.0)
    await settle()
    r.clock.advance(0.010)  # non-empty for 80 ms (it stands), but its head has waited 50 ms < 60 ms
    r.runner.allow(1)
    await settle()
    assert r.batches() == [[0], [1], [2]]  # oldest first: deadline order, not newest first
    await release_all(r)
    for ident, future in zip([1, 2, 3], [first, second, third], strict=True):
        own_rows(await future, ident)
    assert r.observer.shed == []
