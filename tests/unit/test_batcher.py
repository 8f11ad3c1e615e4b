"""The batcher driven by a fake runner gated with asyncio.Event and a fake clock advanced by the test: EDF
order, batch formation, deadline shedding, queue limits, cancellation, failure isolation, close, the fixed
scheduler, the idle probe, adaptive LIFO under a standing queue, the idle fast path and inline runs.
Nothing here sleeps or reads the wall clock; the event loop only runs what is ready."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from gateway.batcher import INLINE_COMPUTE_S, QUEUED_PATH_S, THREAD_HOP_S, Batcher, BatchResult
from gateway.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    ResourceExhaustedError,
    UnavailableError,
)
from gateway.profile import LatencyProfile
from gateway.validate import DecodedRequest


class FakeClock:
    """Time moves only when the test calls :meth:`advance`; timed waits wake when it passes their end."""

    def __init__(self) -> None:
        self.t = 1000.0
        self._timers: list[tuple[float, asyncio.Future[Any]]] = []

    def now(self) -> float:
        return self.t

    def ns(self) -> int:
        return round(self.t * 1e9)

    @property
    def sleepers(self) -> int:
        return sum(1 for _, timer in self._timers if not timer.done())

    async def wait_until(self, event: asyncio.Event, until: float) -> bool:
        if event.is_set():
            return True
        if until <= self.t:
            return False
        timer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._timers.append((until, timer))
        waiter: asyncio.Future[Any] = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait([waiter, timer], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            timer.cancel()
        return event.is_set()

    def advance(self, seconds: float) -> None:
        self.t += seconds
        for until, timer in self._timers:
            if until <= self.t and not timer.done():
                timer.set_result(None)
        self._timers = [(u, t) for u, t in self._timers if not t.done()]


@dataclass
class Call:
    """One runner call: the batch's first-column values (request ids), how it ran, and in which task."""

    ids: list[float]
    sync: bool
    task: str


@dataclass
class FakeRunner:
    """Outputs ``y = 2 * x`` (so each request can check its own rows); fails a batch holding a negative
    value; records each batch as it starts; with a ``gate``, each ``run`` waits for one permit
    (:meth:`allow`); each takes ``compute_s`` of the fake clock."""

    clock: FakeClock
    instances: int = 1
    provider: str = "fake"
    compute_s: float = 0.001
    hop_s: float = 0.0  # extra fake-clock time of an executor run: the thread hop
    gate: asyncio.Semaphore | None = None
    calls: list[Call] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    last_feeds: Mapping[str, npt.NDArray[Any]] | None = None

    def _record(self, feeds: Mapping[str, npt.NDArray[Any]], sync: bool) -> None:
        self.last_feeds = feeds
        task = asyncio.current_task()
        self.calls.append(Call(feeds["x"][:, 0].tolist(), sync, task.get_name() if task else ""))

    def _compute(self, feeds: Mapping[str, npt.NDArray[Any]], names: Sequence[str]) -> list[Any]:
        x = feeds["x"]
        if (x < 0).any():
            raise InvalidArgumentError("negative input")
        self.clock.advance(self.compute_s)
        return [2 * x for _ in names]

    async def run(
        self, instance: int, feeds: Mapping[str, npt.NDArray[Any]], names: Sequence[str]
    ) -> list[Any]:
        self._record(feeds, sync=False)
        self.started.set()
        if self.gate is not None:
            await self.gate.acquire()
        self.clock.advance(self.hop_s)
        return self._compute(feeds, names)

    def allow(self, runs: int) -> None:
        assert self.gate is not None
        for _ in range(runs):
            self.gate.release()

    def run_sync(
        self, instance: int, feeds: Mapping[str, npt.NDArray[Any]], names: Sequence[str]
    ) -> list[Any]:
        self._record(feeds, sync=True)
        return self._compute(feeds, names)


class Observer:
    def __init__(self) -> None:
        self.batches: list[tuple[int, int]] = []
        self.shed: list[str] = []
        self.depth: list[int] = []

    def on_batch(self, rows: int, compute_ns: int) -> None:
        self.batches.append((rows, compute_ns))

    def on_shed(self, reason: str) -> None:
        self.shed.append(reason)

    def on_queue_depth(self, rows: int) -> None:
        self.depth.append(rows)


def request(ident: float, rows: int = 1, width: int = 4) -> DecodedRequest:
    x = np.full((rows, width), ident, np.float32)
    x[:, 1:] = np.arange(rows * (width - 1), dtype=np.float32).reshape(rows, width - 1)
    return DecodedRequest({"x": x}, rows, ("y",))


async def settle() -> None:
    """Runs everything that is ready (no time passes)."""
    for _ in range(50):
        await asyncio.sleep(0)


@dataclass
class Rig:
    clock: FakeClock
    runner: FakeRunner
    batcher: Batcher
    observer: Observer

    def submit(
        self, ident: float, budget: float = 10.0, priority: int = 1, rows: int = 1, width: int = 4
    ) -> asyncio.Future[BatchResult]:
        deadline = self.clock.now() + budget
        return asyncio.ensure_future(self.batcher.submit(request(ident, rows, width), deadline, priority))

    def batches(self) -> list[list[float]]:
        return [call.ids for call in self.runner.calls]


def rig(
    *,
    max_batch_size: int = 1,
    max_queue_delay_ms: float = 0.0,
    max_queue_size: int = 64,
    scheduler: str = "deadline",
    gated: bool = True,
    instances: int = 1,
    provider: str = "fake",
    seed_s: float | None = None,
    **codel: float,
) -> Rig:
    clock = FakeClock()
    runner = FakeRunner(
        clock, instances=instances, provider=provider, gate=asyncio.Semaphore(0) if gated else None
    )
    profiles = [LatencyProfile(max(max_batch_size, 1)) for _ in range(instances)]
    if seed_s is not None:
        for profile in profiles:
            profile.observe(1, seed_s)
    observer = Observer()
    batcher = Batcher(
        runner,
        profiles,
        output_names=["y"],
        max_batch_size=max_batch_size,
        max_queue_delay_ms=max_queue_delay_ms,
        max_queue_size=max_queue_size,
        scheduler=scheduler,
        observer=observer,
        clock=clock,
        **codel,  # type: ignore[arg-type]
    )
    batcher.start()
    return Rig(clock, runner, batcher, observer)


async def release_all(r: Rig) -> None:
    r.runner.allow(1000)
    await settle()


async def occupy(r: Rig, ident: float = 0.0, budget: float = 10.0) -> asyncio.Future[BatchResult]:
    """Puts a request on the (only) instance, held there by the gate."""
    first = r.submit(ident, budget=budget)
    await settle()
    assert r.runner.started.is_set()
    return first


def own_rows(result: BatchResult, ident: float, rows: int = 1) -> None:
    expected = 2 * request(ident, rows).feeds["x"]
    assert len(result.outputs) == 1
    np.testing.assert_array_equal(result.outputs[0], expected)


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
async def test_only_cpu_batches_predicted_shorter_than_a_thread_hop_run_on_the_loop(
    provider: str, seed_s: float | None, inline: bool
) -> None:
    r = rig(gated=False, provider=provider, seed_s=seed_s)
    own_rows(await r.submit(1), 1)
    assert r.runner.calls[0].sync is inline
    assert r.observer.batches == [(1, 1_000_000)]


@pytest.mark.parametrize(
    ("compute_s", "inline"), [(INLINE_COMPUTE_S / 2, True), (INLINE_COMPUTE_S * 2, False)]
)
async def test_the_inline_choice_settles_by_compute_time(compute_s: float, inline: bool) -> None:
    """Inline runs teach the profile their compute plus a thread hop, as executor runs do (the hop is in
    their latency), so a fast model stays on the loop and a slower one leaves it for good."""
    r = rig(gated=False, provider="cpu", seed_s=compute_s)
    r.runner.compute_s = compute_s
    r.runner.hop_s = THREAD_HOP_S
    for ident in range(60):
        r.clock.advance(0.001)
        own_rows(await r.submit(ident), ident)
    assert [call.sync for call in r.runner.calls[-20:]] == [inline] * 20
    assert r.batcher.predict(1) >= compute_s + THREAD_HOP_S
    assert (r.batcher.predict(1) <= INLINE_COMPUTE_S + THREAD_HOP_S) is inline
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
