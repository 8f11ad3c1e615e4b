"""Dynamic batching under latency budgets for one model version: admission, the idle fast path and one
batch former per instance. The queue's service order and shedding rules live in :mod:`gateway.queueing`,
running a formed batch in :mod:`gateway.execution`.

Contracts:
- :meth:`Batcher.submit` (and :meth:`Batcher.serve`, its form for the hot path) never blocks admission:
  a full queue raises ResourceExhaustedError at once, and a request whose budget is below the predicted
  latency of its own rows raises DeadlineExceededError at once (after a second without batches one such
  request runs anyway, as a probe of a stale profile).
  Otherwise it returns its own rows of the outputs it asked for, or its own error. Every admitted request
  is answered exactly once, and never computed after its deadline has passed.
- Order is by deadline, then priority (1 = highest), then arrival. When an instance frees up, queued
  requests that can no longer finish in time are answered DEADLINE_EXCEEDED uncomputed; the former takes
  the largest batch (same batch key, at most ``max_batch_size`` rows) whose predicted completion meets
  every deadline in it, and waits for more rows only within ``max_queue_delay_ms``, the head's slack, and
  only when another arrival is likely in that window (:class:`gateway.arrivals.Arrivals`). An arrival has
  company when another request of the version is pending or the event loop has other work ready: inline
  requests never overlap, so pending alone made many clients look like one (README, batching).
- Standing queue (CoDel-style): once the queue has not been empty for ``codel_interval`` and its head
  has waited ``codel_target``, service turns newest-first (adaptive LIFO) and anything queued longer
  than ``codel_target`` is answered DEADLINE_EXCEEDED (shed reason ``codel``); the queue returns to
  deadline order once it drains. Both default to fractions of the budgets requests bring (target half a
  budget, at least twice the queue delay and one full batch's predicted latency; interval one budget).
  A tighter target refused requests that would have met their deadlines (README, batching).
- Idle fast path: a request that finds the queue empty, an instance idle and no arrival likely within
  the delay window runs at once in the caller's task, without the queue or a former wake-up; ``alone``
  (inline up to a higher cap, :class:`gateway.execution.BatchExecutor`) only while the event loop has
  nothing else ready (:func:`gateway.clock.loop_is_idle`; why not pending rows: README, batching).
- A batch whose session compute is up to :data:`INLINE_COMPUTE_S` on a CPU runner runs on the event loop
  (``run_sync``): the executor hop would cost more than the work.
- A cancelled call leaves the queue and is never computed. When a batch fails, its requests are re-run
  one by one, so only a request that fails alone gets an error.
- ``scheduler = "fixed"`` switches the deadline logic off (FIFO, wait ``max_queue_delay_ms``, no shedding,
  no LIFO): Triton's dynamic batcher, for comparison.
- Time comes only from the injected :class:`gateway.clock.Clock` (default: the loop's monotonic clock).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from gateway.arrivals import Arrivals
from gateway.clock import Clock, LoopClock, loop_is_idle
from gateway.collate import BatchKey, batch_key
from gateway.cores import CoreWatch
from gateway.errors import DeadlineExceededError, ResourceExhaustedError, UnavailableError
from gateway.execution import BatchExecutor, BatchObserver, BatchResult, BatchRunner
from gateway.profile import LatencyProfile
from gateway.queueing import Entry, EntryQueue, codel_limits
from gateway.validate import DecodedRequest

log = logging.getLogger(__name__)

__all__ = [
    "INLINE_COMPUTE_S",
    "PIPELINE_DEPTH",
    "PROBE_INTERVAL_S",
    "QUEUED_PATH_S",
    "THREAD_HOP_S",
    "BatchObserver",
    "BatchResult",
    "BatchRunner",
    "Batcher",
]

#: After this long without a batch, a request the profile would refuse is admitted as a probe.
PROBE_INTERVAL_S = 1.0
#: A batch whose session compute is up to this runs on the event loop instead of the runner's executor
#: thread (CPU provider only): below it, the thread hop costs more than the compute it moves off the loop.
#: The hop is ~50 us on an idle machine but far more to a saturated loop (GIL hand-offs, wake-ups); with
#: 100 us tiny's batches stay on the loop and the mlp's leave it (measurements: README, batching).
INLINE_COMPUTE_S = 100e-6
#: Handing work to a thread and back (run_in_executor, then call_soon_threadsafe and the loop's self-pipe
#: wake-up): 46-54 us per round trip for a no-op, measured on the 2-core development machine (CPython
#: 3.11). Profiles learn executor-path latency, which includes it (see gateway.execution).
THREAD_HOP_S = 50e-6
#: Event-loop time a request spends on the queued path beyond running at once (its task suspends on a
#: future, the former wakes, takes the batch, answers the future, the task resumes): ~75 us per request,
#: measured through gRPC on the development machine (a tiny model at 64 concurrent calls: 2,850 req/s
#: with the batcher bypassed, 2,240 with every request queued). Waiting to batch pays only when batching
#: saves more compute per request than this (:meth:`Batcher._waiting_helps`).
QUEUED_PATH_S = 75e-6
#: Batches one instance may have in flight: the running one and the next, handed over while a full batch
#: waits (see :meth:`Batcher._work`). On mlp, 32-row requests at 16 concurrent calls: 0.61-0.65 of the
#: in-process onnxruntime rows/s with one in flight, the session idling while the loop handed over.
PIPELINE_DEPTH = 2


class Batcher:
    """Queue, batch formers and idle fast path of one loaded version."""

    def __init__(
        self,
        runner: BatchRunner,
        profiles: Sequence[LatencyProfile],
        *,
        output_names: Sequence[str],
        max_batch_size: int,
        max_queue_delay_ms: float,
        max_queue_size: int,
        scheduler: str = "deadline",
        observer: BatchObserver | None = None,
        name: str = "model",
        buckets: Sequence[int] = (),
        clock: Clock | None = None,
        codel_target_ms: float | None = None,
        codel_interval_ms: float | None = None,
        cores: CoreWatch | None = None,
        loop_idle: Callable[[asyncio.AbstractEventLoop], bool] = loop_is_idle,
    ) -> None:
        if len(profiles) != runner.instances:
            raise ValueError("one latency profile per instance is required")
        self.profiles = list(profiles)
        self._batchable = max_batch_size > 0
        self._max_rows = max(max_batch_size, 1)
        self._max_delay = max_queue_delay_ms / 1000.0
        self._max_queue_rows = max_queue_size
        self._deadline_aware = scheduler == "deadline"
        self._observer = observer
        self._name = name
        self._clock: Clock = clock or LoopClock()
        self._loop_idle = loop_idle  # whether the loop has nothing else ready (tests pass their own)
        self._codel_target = None if codel_target_ms is None else codel_target_ms / 1000.0
        self._codel_interval = None if codel_interval_ms is None else codel_interval_ms / 1000.0
        self.buckets = tuple(buckets) if max_batch_size > 0 else ()
        self._executor = BatchExecutor(
            runner,
            self.profiles,
            output_names=output_names,
            batchable=self._batchable,
            buckets=self.buckets,
            clock=self._clock,
            observer=observer,
            name=name,
            inline_compute_s=INLINE_COMPUTE_S if runner.provider == "cpu" else 0.0,
            thread_hop_s=THREAD_HOP_S,
            cores=cores,
        )
        self._queue = EntryQueue(deadline_order=self._deadline_aware)
        self._sequence = itertools.count()
        self._arrived = asyncio.Event()
        self._closing = False
        self._arrivals = Arrivals()
        self._pending = 0  # requests submitted and not yet answered
        n = runner.instances
        self._parked = [False] * n  # former waiting for an arrival with the queue empty
        self._claimed = [False] * n  # instance running a fast-path request
        self._released = [asyncio.Event() for _ in range(n)]
        self._in_flight_s = [0.0] * n  # sum of the predictions of the batches in flight on each instance
        self._workers: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Starts one batch former per instance (the profile was just seeded by warm-up)."""
        self._executor.last_batch = self._clock.now()
        self._workers = [
            asyncio.create_task(self._work(i), name=f"batcher-{self._name}-{i}")
            for i in range(len(self.profiles))
        ]

    async def close(self) -> None:
        """Refuses new requests, answers every queued one, then stops the formers."""
        self._closing = True
        self._arrived.set()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for instance, claimed in enumerate(self._claimed):
            if claimed:  # a fast-path request is still running there
                await self._released[instance].wait()

    @property
    def queued_rows(self) -> int:
        return self._queue.rows

    def count_batch(self, rows: int, compute_ns: int) -> None:
        """Reports a batch run outside the queue (a rollout mirror group) to the statistics and metrics."""
        if self._observer is not None:
            self._observer.on_batch(rows, compute_ns)

    def predict(self, rows: int) -> float:
        """Best predicted latency of ``rows`` rows over the instances."""
        profiles = self.profiles
        if len(profiles) == 1:
            return profiles[0].predict(rows)
        return min(profile.predict(rows) for profile in profiles)

    async def submit(self, request: DecodedRequest, deadline: float, priority: int) -> BatchResult:
        """Runs a validated request in a batch; ``deadline`` is in the batcher's clock (``loop.time()``)."""
        outcome = self.serve(request, deadline, priority)
        return outcome if isinstance(outcome, BatchResult) else await outcome

    def serve(
        self, request: DecodedRequest, deadline: float, priority: int
    ) -> BatchResult | Coroutine[Any, Any, BatchResult]:
        """:meth:`submit` for a caller on the hot path: admission and the lone inline run happen here and
        now, so a request that runs alone on the loop gets its result back without a coroutine being made
        (its error, or a refusal, is raised at once); any other request gets the coroutine that queues it
        or runs it off the loop, to await (exactly once)."""
        if self._closing:
            raise UnavailableError(f"{self._name}: version is being unloaded")
        now = self._clock.now()
        queue = self._queue
        if queue.rows + request.rows > self._max_queue_rows:
            self._shed("queue_full")
            raise ResourceExhaustedError(
                f"{self._name}: queue is full ({queue.rows} of {self._max_queue_rows} rows waiting)"
            )
        probe = False
        if self._deadline_aware and now + self.predict(request.rows) > deadline:
            executor = self._executor
            if queue.rows == 0 and not executor.running and now - executor.last_batch > PROBE_INTERVAL_S:
                # Idle for a while yet refusing everything: the profile may be stale (the model got
                # faster, or a stall inflated it). Run this one anyway so the profile can learn again.
                probe = True
            else:
                self._shed("deadline_admission")
                raise DeadlineExceededError(
                    f"{self._name}: budget of {max(deadline - now, 0) * 1000:.1f} ms is below the predicted "
                    f"{self.predict(request.rows) * 1000:.1f} ms for {request.rows} rows"
                )
        idle = self._loop_idle(asyncio.get_running_loop())  # other work ready is company too (module doc)
        self._arrivals.record(now, deadline - now, others_pending=self._pending > 0 or not idle)
        fast = None  # the idle instance this request runs on by itself (the idle fast path), if any
        if queue.rows == 0:
            fast = self._idle_instance()
            if fast is not None and self._waiting_helps(now, deadline, fast):
                fast = None
        if fast is not None and idle:
            # Alone on the loop: run it here and now when it belongs on the loop (no future, no task
            # switch, no coroutine).
            result = self._executor.run_alone(fast, request, now)
            if result is not None:
                return result
        return self._enqueue(request, deadline, priority, now, probe, fast, idle)

    async def _enqueue(
        self,
        request: DecodedRequest,
        deadline: float,
        priority: int,
        now: float,
        probe: bool,
        fast: int | None,
        idle: bool,
    ) -> BatchResult:
        """The rest of :meth:`serve`: the idle fast path off the loop (``fast``), or the queue."""
        key: BatchKey = batch_key(request.feeds) if self._batchable else ()
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        entry = Entry(request, deadline, priority, now, future, key, next(self._sequence), probe=probe)
        queue = self._queue
        self._pending += 1
        try:
            if fast is not None:
                # The idle fast path on the executor, or with other work ready on the loop: runs by itself
                # in the caller's task. Inline here, not a coroutine of its own: one level less for every
                # suspension and resumption of the request's task.
                entry.queued = False
                self._claimed[fast] = True
                self._released[fast].clear()
                try:
                    await self._executor.execute(fast, [entry], alone=idle)
                finally:
                    self._claimed[fast] = False
                    self._released[fast].set()
                return future.result()
            queue.push(entry)
            self._depth()
            self._arrived.set()
            try:
                return await future
            except asyncio.CancelledError:
                if queue.discard(entry):  # never computed
                    self._depth()
                    self._shed("cancelled")
                raise
        finally:
            self._pending -= 1

    def _idle_instance(self) -> int | None:
        for instance, parked in enumerate(self._parked):
            if parked and not self._claimed[instance]:
                return instance
        return None

    def _waiting_helps(self, now: float, deadline: float, instance: int) -> bool:
        """Whether a former would wait for more rows: another arrival is likely within the window, and
        batching saves more compute per request than the queued path costs (:data:`QUEUED_PATH_S`), judged
        once the profile has seen both one row and a full batch. For a model whose single row costs little
        more than a full batch's share (a small MatMul), every request runs at once."""
        if not self._batchable or self._max_rows <= 1:
            return False
        if not self._arrivals.likely(self._max_delay):  # the window is at most this: nothing to wait for
            return False
        profile = self.profiles[instance]
        single = profile.typical(1, fallback=False)
        full = profile.typical(self._max_rows, fallback=False)
        if single and full and single - full / self._max_rows < QUEUED_PATH_S:
            return False
        window = self._max_delay
        if self._deadline_aware:
            window = min(window, deadline - self.profiles[instance].predict(self._max_rows) - now)
        return self._arrivals.likely(window)

    async def _work(self, instance: int) -> None:
        """Forms and runs batches on ``instance``. While a full batch is already waiting, the next one is
        handed to the runner before the running one finishes (at most :data:`PIPELINE_DEPTH` at once; the
        runner's one thread per instance runs them in order), so the session never idles through the event
        loop's hand-off; with less than a full batch waiting the former waits for the running one, which
        lets more rows gather."""
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                if running and (
                    len(running) >= PIPELINE_DEPTH or self._max_rows < 2 or self._queue.rows < self._max_rows
                ):
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    continue
                batch = await self._next_batch(instance)
                if batch is None:
                    return
                task = asyncio.create_task(
                    self._run_batch(instance, batch, running), name=f"batcher-{self._name}-{instance}-batch"
                )
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    async def _run_batch(self, instance: int, batch: list[Entry], running: set[asyncio.Task[None]]) -> None:
        predicted = self.profiles[instance].predict(sum(entry.rows for entry in batch))
        self._in_flight_s[instance] += predicted
        try:
            await self._executor.execute(instance, batch)
        except Exception:  # pragma: no cover - execute answers every future itself
            log.exception("%s: batch former %d failed", self._name, instance)
        finally:
            # nothing else in flight on this instance: exactly zero, whatever the float sums left
            left = self._in_flight_s[instance] - predicted
            self._in_flight_s[instance] = max(0.0, left) if len(running) > 1 else 0.0

    async def _next_batch(self, instance: int) -> list[Entry] | None:
        """Waits for, then forms, the next batch; None once closing with nothing left."""
        profile = self.profiles[instance]
        queue = self._queue
        clock = self._clock
        while True:
            if self._claimed[instance]:
                await self._released[instance].wait()
                continue
            if queue.rows == 0:
                if self._closing:
                    return None
                self._arrived.clear()
                self._parked[instance] = True
                try:
                    await self._arrived.wait()
                finally:
                    self._parked[instance] = False
                continue
            now = clock.now()
            if self._deadline_aware:
                self._police(now, profile)
            key = queue.head_key()
            if key is None:  # everything left was shed or cancelled
                self._depth()
                continue
            if self._batchable and queue.key_rows(key) < self._max_rows and not self._closing:
                wait_until = queue.head(key).enqueued + self._max_delay
                if self._deadline_aware:
                    wait_until = min(wait_until, queue.head(key).deadline - profile.predict(self._max_rows))
                # Wait only when another arrival is likely within the window (at low load waiting adds
                # latency and batches nothing), and never while a queue stands (it only ages the queue).
                if now < wait_until and self._arrivals.likely(wait_until - now) and not queue.lifo:
                    self._arrived.clear()
                    await clock.wait_until(self._arrived, wait_until)
                    if queue.key_rows(key) < self._max_rows and clock.now() < wait_until:
                        continue
                    if queue.key_rows(key) == 0:  # another former took this key's requests meanwhile
                        continue
                    now = clock.now()
                    if self._deadline_aware:
                        self._police(now, profile)
                        if queue.key_rows(key) == 0:
                            continue
            limit = self._max_rows if self._batchable else 0  # unbatchable: one request per run
            # A pipelined batch starts after the predictions of those in flight, counted from now (an end
            # predicted earlier ran ahead of the clock when runs beat their predictions).
            start = now + self._in_flight_s[instance]
            batch = queue.take(key, start, profile.predict, limit, check_deadlines=self._deadline_aware)
            self._depth()
            if batch:
                return batch

    def _police(self, now: float, profile: LatencyProfile) -> None:
        """Answers what can no longer be served in time; LIFO while the queue stands (see queueing)."""
        budget = self._arrivals.budget or 0.1
        target, interval = codel_limits(
            budget,
            self._max_delay,
            profile.predict(self._max_rows),
            target=self._codel_target,
            interval=self._codel_interval,
        )
        shed = self._queue.police(now, profile.predict, target, interval)
        for entry, reason in shed:
            self._shed(reason)
            waited = (now - entry.enqueued) * 1000
            if reason == "codel":
                message = (
                    f"shed after {waited:.1f} ms in a standing queue (limit {target * 1000:.1f} ms under "
                    "overload, when the newest requests are served first)"
                )
            else:
                message = f"deadline cannot be met after {waited:.1f} ms queued"
            if not entry.future.done():
                entry.future.set_exception(DeadlineExceededError(f"{self._name}: {message}"))
        if shed:
            self._depth()

    def _depth(self) -> None:
        if self._observer is not None:
            self._observer.on_queue_depth(self._queue.rows)

    def _shed(self, reason: str) -> None:
        if self._observer is not None:
            self._observer.on_shed(reason)
