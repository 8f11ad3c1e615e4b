"""Dynamic batching under latency budgets: one bounded EDF queue per model version and one batch former
per instance.

Contracts:
- :meth:`Batcher.submit` never blocks admission: a full queue raises ResourceExhaustedError at once, and
  a request whose budget is below the predicted latency of its own rows raises DeadlineExceededError at
  once. Otherwise it waits for its batch and returns its own rows of the outputs it asked for.
- Order is by deadline, then priority (1 = highest), then arrival. When an instance frees up, every
  request at the head that can no longer finish in time is answered DEADLINE_EXCEEDED before it costs any
  compute; then the batch former takes the largest EDF batch (same :func:`collate.batch_key`, at most
  ``max_batch_size`` rows) whose predicted completion meets every deadline in it, and waits for more rows
  only while ``max_queue_delay_ms`` has not passed and the head's slack allows.
- A cancelled call leaves the queue and is never computed. When a batch fails, its requests are re-run
  one by one, so only a request that fails alone gets an error; the server keeps serving.
- ``scheduler = "fixed"`` switches the deadline logic off (FIFO, wait ``max_queue_delay_ms``, no shedding):
  Triton's dynamic batcher, for comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy.typing as npt

from gateway.collate import BatchKey, batch_key, bucket_for, pad, split, stack
from gateway.errors import DeadlineExceededError, GatewayError, ResourceExhaustedError, UnavailableError
from gateway.profile import LatencyProfile
from gateway.runner import Runner
from gateway.validate import DecodedRequest

log = logging.getLogger(__name__)

#: After this long without a batch, a request the profile would refuse is admitted as a probe.
PROBE_INTERVAL_S = 1.0


class BatchObserver(Protocol):
    """Receives the batcher's events (statistics and metrics live elsewhere)."""

    def on_batch(self, rows: int, compute_ns: int) -> None: ...

    def on_shed(self, reason: str) -> None: ...

    def on_queue_depth(self, rows: int) -> None: ...


@dataclass(frozen=True)
class BatchResult:
    """One request's outputs (in its requested order) and what its batch cost."""

    outputs: list[npt.NDArray[Any]]
    queue_ns: int
    compute_ns: int
    batch_rows: int


@dataclass(eq=False)
class _Pending:
    request: DecodedRequest
    deadline: float
    priority: int
    enqueued: float
    future: asyncio.Future[BatchResult]
    key: BatchKey
    queued: bool = True
    probe: bool = False

    @property
    def rows(self) -> int:
        return self.request.rows


@dataclass
class _KeyQueue:
    heap: list[tuple[float, int, int, _Pending]] = field(default_factory=list)
    rows: int = 0


class Batcher:
    """Queue and batch formers of one loaded version."""

    def __init__(
        self,
        runner: Runner,
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
    ) -> None:
        if len(profiles) != runner.instances:
            raise ValueError("one latency profile per instance is required")
        self._runner = runner
        self.profiles = list(profiles)
        self._output_names = tuple(output_names)
        self._batchable = max_batch_size > 0
        self._max_rows = max(max_batch_size, 1)
        self._max_delay = max_queue_delay_ms / 1000.0
        self._max_queue_rows = max_queue_size
        self._deadline_aware = scheduler == "deadline"
        self._observer = observer
        self._name = name
        self.buckets = tuple(buckets) if max_batch_size > 0 else ()
        self._queues: dict[BatchKey, _KeyQueue] = {}
        self._queued_rows = 0
        self._sequence = itertools.count()
        self._arrived = asyncio.Event()
        self._closing = False
        self._last_arrival = 0.0
        self._gap = 0.0  # EWMA of the time between arrivals, seconds (0: unknown)
        self._last_batch = 0.0  # loop.time() when the last batch finished
        self._running = 0
        self._workers: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Starts one batch former per instance (the profile was just seeded by warm-up)."""
        self._last_batch = asyncio.get_running_loop().time()
        self._workers = [
            asyncio.create_task(self._work(i), name=f"batcher-{self._name}-{i}")
            for i in range(len(self.profiles))
        ]

    async def close(self) -> None:
        """Refuses new requests, answers every queued one, then stops the formers."""
        self._closing = True
        self._arrived.set()
        await asyncio.gather(*self._workers, return_exceptions=True)

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def predict(self, rows: int) -> float:
        """Best predicted latency of ``rows`` rows over the instances."""
        return min(profile.predict(rows) for profile in self.profiles)

    async def submit(self, request: DecodedRequest, deadline: float, priority: int) -> BatchResult:
        """Queues a validated request; ``deadline`` is in ``loop.time()`` seconds."""
        if self._closing:
            raise UnavailableError(f"{self._name}: version is being unloaded")
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._queued_rows + request.rows > self._max_queue_rows:
            self._shed("queue_full")
            raise ResourceExhaustedError(
                f"{self._name}: queue is full ({self._queued_rows} of {self._max_queue_rows} rows waiting)"
            )
        probe = False
        if self._deadline_aware and now + self.predict(request.rows) > deadline:
            if self._queued_rows == 0 and self._running == 0 and now - self._last_batch > PROBE_INTERVAL_S:
                # Idle for a while yet refusing everything: the profile may be stale (the model got
                # faster, or a stall inflated it). Run this one anyway so the profile can learn again.
                probe = True
            else:
                self._shed("deadline_admission")
                raise DeadlineExceededError(
                    f"{self._name}: budget of {max(deadline - now, 0) * 1000:.1f} ms is below the predicted "
                    f"{self.predict(request.rows) * 1000:.1f} ms for {request.rows} rows"
                )
        key = batch_key(request.feeds) if self._batchable else (("#", str(next(self._sequence)), ()),)
        entry = _Pending(request, deadline, priority, now, loop.create_future(), key, probe=probe)
        if self._last_arrival:
            gap = now - self._last_arrival
            self._gap = gap if not self._gap else self._gap + 0.1 * (gap - self._gap)
        self._last_arrival = now
        order = deadline if self._deadline_aware else now
        queue = self._queues.setdefault(key, _KeyQueue())
        heapq.heappush(queue.heap, (order, priority, next(self._sequence), entry))
        queue.rows += entry.rows
        self._set_depth(self._queued_rows + entry.rows)
        self._arrived.set()
        try:
            return await entry.future
        except asyncio.CancelledError:
            if entry.queued:  # never computed: take it out of the accounting now, off the heap lazily
                entry.queued = False
                queue.rows -= entry.rows
                self._set_depth(self._queued_rows - entry.rows)
                self._shed("cancelled")
            raise

    async def _work(self, instance: int) -> None:
        profile = self.profiles[instance]
        while True:
            batch = await self._next_batch(profile)
            if batch is None:
                return
            try:
                await self._execute(instance, profile, batch)
            except Exception:  # pragma: no cover - _execute answers every future itself
                log.exception("%s: batch former %d failed", self._name, instance)

    async def _next_batch(self, profile: LatencyProfile) -> list[_Pending] | None:
        """Waits for, then forms, the next batch; None once closing with nothing left."""
        loop = asyncio.get_running_loop()
        while True:
            if self._queued_rows == 0:
                if self._closing:
                    return None
                self._arrived.clear()
                await self._arrived.wait()
                continue
            now = loop.time()
            if self._deadline_aware:
                self._shed_infeasible(now, profile)
            key, queue = self._head_queue()
            if queue is None:  # only cancelled entries were left
                self._set_depth(sum(q.rows for q in self._queues.values()))
                continue
            head = queue.heap[0][3]
            if self._batchable and queue.rows < self._max_rows and not self._closing:
                wait_until = head.enqueued + self._max_delay
                if self._deadline_aware:
                    wait_until = min(wait_until, head.deadline - profile.predict(self._max_rows))
                # Wait only when another arrival is likely within the window: at low load (a lone client)
                # waiting adds latency and batches nothing.
                if now < wait_until and self._gap and (wait_until - now) >= self._gap:
                    self._arrived.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._arrived.wait(), wait_until - now)
                    if self._queued_rows_in(key) < self._max_rows and loop.time() < wait_until:
                        continue
                    # Another former may have emptied this key's queue while we waited: start over.
                    if self._queues.get(key) is not queue:
                        continue
            batch = self._take(key, queue, loop.time(), profile)
            if batch:
                return batch

    def _take(self, key: BatchKey, queue: _KeyQueue, now: float, profile: LatencyProfile) -> list[_Pending]:
        batch: list[_Pending] = []
        rows = 0
        earliest = float("inf")
        while queue.heap:
            entry = queue.heap[0][3]
            if not entry.queued:
                heapq.heappop(queue.heap)
                continue
            if batch and (not self._batchable or rows + entry.rows > self._max_rows):
                break
            late = now + profile.predict(rows + entry.rows) > min(earliest, entry.deadline)
            if batch and self._deadline_aware and late:
                break
            heapq.heappop(queue.heap)
            entry.queued = False
            batch.append(entry)
            rows += entry.rows
            earliest = min(earliest, entry.deadline)
        queue.rows -= rows
        if not queue.heap and self._queues.get(key) is queue:
            del self._queues[key]
        self._set_depth(self._queued_rows - rows)
        return batch

    def _head_queue(self) -> tuple[BatchKey, _KeyQueue | None]:
        """The key whose first live entry comes first; cancelled entries at heads are discarded."""
        best: tuple[Any, BatchKey, _KeyQueue] | None = None
        for key in list(self._queues):
            queue = self._queues[key]
            while queue.heap and not queue.heap[0][3].queued:
                heapq.heappop(queue.heap)
            if not queue.heap:
                del self._queues[key]
                continue
            rank = queue.heap[0][:3]
            if best is None or rank < best[0]:
                best = (rank, key, queue)
        return (best[1], best[2]) if best else ((), None)

    def _queued_rows_in(self, key: BatchKey) -> int:
        queue = self._queues.get(key)
        return queue.rows if queue else 0

    def _shed_infeasible(self, now: float, profile: LatencyProfile) -> None:
        """Answers DEADLINE_EXCEEDED to every head request that can no longer finish in time."""
        for key in list(self._queues):
            queue = self._queues[key]
            while queue.heap:
                entry = queue.heap[0][3]
                if entry.queued and (entry.probe or now + profile.predict(entry.rows) <= entry.deadline):
                    break
                heapq.heappop(queue.heap)
                if entry.queued:
                    entry.queued = False
                    queue.rows -= entry.rows
                    self._set_depth(self._queued_rows - entry.rows)
                    self._shed("deadline_expired")
                    waited = (now - entry.enqueued) * 1000
                    entry.future.set_exception(
                        DeadlineExceededError(
                            f"{self._name}: deadline cannot be met after {waited:.1f} ms queued"
                        )
                    )
            if not queue.heap:
                del self._queues[key]

    async def _execute(self, instance: int, profile: LatencyProfile, batch: list[_Pending]) -> None:
        """Runs a batch and answers every future. If the batch fails and holds several requests, each is
        re-run alone, so one request the model rejects cannot fail the others."""
        self._running += 1
        try:
            await self._run_batch(instance, profile, batch)
        except Exception as exc:
            if len(batch) == 1:
                self._fail([batch[0]], exc)
                return
            log.warning(
                "%s: batch of %d requests failed (%s); re-running them one by one",
                self._name,
                len(batch),
                exc,
            )
            for entry in batch:
                try:
                    await self._run_batch(instance, profile, [entry])
                except Exception as single:
                    self._fail([entry], single)
        finally:
            self._running -= 1
            self._last_batch = asyncio.get_running_loop().time()

    async def _run_batch(self, instance: int, profile: LatencyProfile, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        wanted = {name for entry in batch for name in entry.request.output_names}
        names = [name for name in self._output_names if name in wanted]
        feeds, offsets = stack([entry.request.feeds for entry in batch])
        rows = int(offsets[-1])
        padded = bucket_for(rows, self.buckets)
        if padded > rows:
            feeds = pad(feeds, rows, padded)
        begin = time.perf_counter_ns()
        outputs = await self._runner.run(instance, feeds, names)
        if padded > rows:  # padded rows never reach a response
            outputs = [
                output[:rows] if output.ndim and output.shape[0] == padded else output for output in outputs
            ]
        parts = split(outputs, offsets) if self._batchable else [outputs]
        compute_ns = time.perf_counter_ns() - begin
        profile.observe(padded, compute_ns / 1e9)
        if self._observer is not None:
            self._observer.on_batch(rows, compute_ns)
        index = {name: i for i, name in enumerate(names)}
        for entry, part in zip(batch, parts, strict=True):
            if entry.future.done():  # cancelled while computing
                continue
            chosen = [part[index[name]] for name in entry.request.output_names]
            queue_ns = int((started - entry.enqueued) * 1e9)
            entry.future.set_result(BatchResult(chosen, queue_ns, compute_ns, rows))

    def _fail(self, batch: list[_Pending], exc: Exception) -> None:
        if not isinstance(exc, GatewayError):
            log.error("%s: batch failed", self._name, exc_info=exc)
        for entry in batch:
            if not entry.future.done():
                entry.future.set_exception(exc)

    def _set_depth(self, rows: int) -> None:
        self._queued_rows = rows
        if self._observer is not None:
            self._observer.on_queue_depth(rows)

    def _shed(self, reason: str) -> None:
        if self._observer is not None:
            self._observer.on_shed(reason)
