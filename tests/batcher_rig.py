"""The batcher's test rig: a fake clock advanced by the test, a fake runner gated by a semaphore that
records every batch, an observer, and helpers to submit, settle and check each request's own rows.
Nothing here sleeps or reads the wall clock; the event loop only runs what is ready."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.batcher import Batcher, BatchResult
from gateway.cores import CoreWatch
from gateway.errors import InvalidArgumentError
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
    #: What the batcher is told of the event loop: True = nothing else ready (a lone client's request),
    #: False = other calls waiting (the test's own tasks never count: they are always ready here).
    idle: list[bool] = field(default_factory=lambda: [True])

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
    cores: CoreWatch | None = None,
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
    idle = [True]
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
        cores=cores,
        loop_idle=lambda loop: idle[0],
        **codel,  # type: ignore[arg-type]
    )
    batcher.start()
    return Rig(clock, runner, batcher, observer, idle)


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
