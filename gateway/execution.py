"""Batch execution: the stage after the batch former. It collates a formed batch, runs it on one runner
instance, and answers each request's future with its own rows.

Contracts:
- :meth:`BatchExecutor.execute` answers every future of the batch exactly once (a future already done,
  because its caller was cancelled, is left alone). When a batch of several requests fails, each is re-run
  alone, so only a request that fails by itself gets an error; the failure never escapes.
- Statistics: ``queue_ns`` is from admission to the start of the batch, ``compute_ns`` is the run
  (collation to split) in :meth:`Clock.ns`, ``batch_rows`` the real rows (bucket padding excluded); the
  instance's latency profile learns (padded rows, compute seconds) and the observer gets ``on_batch``.
- The profile predicts latency as the executor path costs it: the session's own run time (measured on the
  executor thread when the runner offers ``last_compute_ns``, so the event loop's delay in resuming the
  batch never inflates predictions) plus ``thread_hop_s``; an inline batch teaches it its run plus
  ``thread_hop_s`` too, so predictions do not depend on the path. Where a batch runs is chosen on the
  session's own compute instead (:meth:`LatencyProfile.compute`: warm-up and inline runs, no hop in it),
  so a batch that once went to the executor is not judged by what the hop cost it. A CPU batch runs with
  ``run_sync`` on the event loop when that compute is in ``(0, inline_compute_s]`` (the hop would cost
  more than the work); or up to :data:`SOLO_INLINE_MAX_S` while the process may use one core only
  (:class:`gateway.cores.CoreWatch`): the executor thread would share that core, so the hop buys no
  parallelism, and a loop busy computing takes calls from gRPC core no faster than it can serve them, so
  under overload gRPC core refuses the excess (``max_pending_calls``) instead of the loop spending the core
  on calls it must shed; or up to :data:`ALONE_INLINE_MAX_S` when it runs ``alone`` (the batcher's idle
  fast path with nothing else ready on the loop): nothing waits for that instance, and the hop there and
  back cost a lone request about 100 µs of latency in our runs (C=1 p50 0.84-0.87x inline, tiny and mlp).
  Any other batch runs on the runner's executor (``run``). ``compute_ns`` and ``on_batch`` always report
  the span from collation to split, as seen by the batch.
- A batch of one request is not collated: its own feeds go to the session and its outputs (checked to
  hold its rows) come back as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy.typing as npt

from gateway.clock import Clock
from gateway.collate import bucket_for, check_rows, pad, split, stack, unpad
from gateway.cores import CoreWatch
from gateway.deferred import defer
from gateway.errors import GatewayError
from gateway.profile import LatencyProfile
from gateway.queueing import Entry
from gateway.sharing import LONG_COMPUTE_S, TRANSPORT
from gateway.validate import DecodedRequest

log = logging.getLogger(__name__)

#: On one usable core, batches predicted to take up to this long run on the event loop (module doc). The
#: cap keeps the loop answering health checks and metadata within a few milliseconds behind a long model.
SOLO_INLINE_MAX_S = 0.01

#: A request running alone on an idle instance runs on the event loop when its session compute is up to this
#: long (module doc). Nothing else is ready on the loop then, so holding it costs others at most this much
#: (a health check arriving meanwhile), while the executor round trip costs the request ~100 µs. At 200 µs
#: the mlp's one row (110 µs on a quiet machine, 160-210 µs when the shared host was slow) flipped between
#: the paths; 500 µs keeps such a model on the loop with room to spare.
ALONE_INLINE_MAX_S = 500e-6


class BatchRunner(Protocol):
    """What the batcher needs of a runner (:class:`gateway.runner.Runner` is one): ``instances`` sessions,
    an awaitable run off the loop, a synchronous run, and the provider (only ``"cpu"`` may run inline)."""

    instances: int
    provider: str

    async def run(
        self, instance: int, feeds: Mapping[str, npt.NDArray[Any]], output_names: Sequence[str]
    ) -> list[npt.NDArray[Any]]: ...

    def run_sync(
        self, instance: int, feeds: Mapping[str, npt.NDArray[Any]], output_names: Sequence[str]
    ) -> list[npt.NDArray[Any]]: ...


class BatchObserver(Protocol):
    """Receives the batcher's events (statistics and metrics live elsewhere)."""

    def on_batch(self, rows: int, compute_ns: int) -> None: ...

    def on_shed(self, reason: str) -> None: ...

    def on_queue_depth(self, rows: int) -> None: ...


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~1 µs more, once per request
class BatchResult:
    """One request's outputs (in its requested order) and what its batch cost."""

    outputs: list[npt.NDArray[Any]]
    queue_ns: int
    compute_ns: int
    batch_rows: int


class BatchExecutor:
    """Runs formed batches of one version on its runner's instances."""

    def __init__(
        self,
        runner: BatchRunner,
        profiles: Sequence[LatencyProfile],
        *,
        output_names: Sequence[str],
        batchable: bool,
        buckets: Sequence[int],
        clock: Clock,
        observer: BatchObserver | None,
        name: str,
        inline_compute_s: float,
        thread_hop_s: float,
        cores: CoreWatch | None = None,
    ) -> None:
        self._runner = runner
        self._profiles = profiles
        self._output_names = tuple(output_names)
        self._batchable = batchable
        self._buckets = tuple(buckets)
        self._clock = clock
        self._observer = observer
        self._name = name
        self._inline_s = inline_compute_s
        self._hop_ns = int(thread_hop_s * 1e9)
        self._cores = cores if inline_compute_s > 0 else None  # only a CPU runner may run inline
        self.running = 0  # batches executing now
        self.last_batch = 0.0  # clock time when the last batch finished

    async def execute(self, instance: int, batch: list[Entry], *, alone: bool = False) -> None:
        """Runs a batch and answers every future; ``alone``: the batcher's idle fast path (module doc)."""
        self.running += 1
        try:
            await self._run(instance, batch, alone)
        except Exception as exc:
            if len(batch) == 1:
                self._fail(batch[0], exc)
                return
            log.warning(
                "%s: batch of %d requests failed (%s); re-running them one by one",
                self._name,
                len(batch),
                exc,
            )
            for entry in batch:
                try:
                    await self._run(instance, [entry])
                except Exception as single:
                    self._fail(entry, single)
        finally:
            self.running -= 1
            self.last_batch = self._clock.now()

    def run_alone(self, instance: int, request: DecodedRequest, enqueued: float) -> BatchResult | None:
        """The idle fast path's run of one request with nothing else ready on the loop (``alone``, module
        doc), done here and now on the event loop: no future, no task switch. Returns its result or raises
        its own error, as :meth:`execute` answers a batch of one; or returns None, having done nothing,
        when its compute belongs on the executor (then the caller takes the awaited path)."""
        clock = self._clock
        profile = self._profiles[instance]
        rows = request.rows
        padded = bucket_for(rows, self._buckets)
        started = clock.now()
        if not self._inline(profile.compute(padded), started, alone=True):
            return None
        feeds = request.feeds if padded == rows else pad(request.feeds, rows, padded)
        self.running += 1
        try:
            begin = clock.ns()
            outputs = self._runner.run_sync(instance, feeds, request.output_names)
            own_ns = clock.ns() - begin
            if padded != rows:
                outputs = unpad(outputs, rows, padded)
            if self._batchable:
                check_rows(outputs, rows)
        except Exception as exc:
            if not isinstance(exc, GatewayError):
                log.error("%s: batch failed", self._name, exc_info=exc)
            raise
        finally:
            self.running -= 1
            self.last_batch = clock.now()
        compute_ns = clock.ns() - begin
        # The lone caller's answer does not wait for the profile and the observer (gateway.deferred).
        defer(self._learn_alone, profile, padded, rows, own_ns, compute_ns)
        return BatchResult(outputs, int((started - enqueued) * 1e9), compute_ns, rows)

    def _learn_alone(
        self, profile: LatencyProfile, padded: int, rows: int, own_ns: int, compute_ns: int
    ) -> None:
        """What :meth:`_run_inline` and :meth:`_learn` teach for a batch, for :meth:`run_alone`'s run
        (deferred): ``own_ns`` the session's own time, ``compute_ns`` its collation to split."""
        profile.observe_compute(padded, own_ns / 1e9)
        self._teach(profile, padded, rows, own_ns + self._hop_ns, compute_ns)

    def _run_inline(
        self,
        instance: int,
        profile: LatencyProfile,
        feeds: Mapping[str, npt.NDArray[Any]],
        names: Sequence[str],
        padded: int,
    ) -> tuple[list[npt.NDArray[Any]], int]:
        """Runs a batch on the event loop; its own time teaches the profile's compute estimate. Returns the
        outputs and the run as the profile learns it: that time plus the hop (module doc)."""
        begin = self._clock.ns()
        outputs = self._runner.run_sync(instance, feeds, names)
        own_ns = self._clock.ns() - begin
        profile.observe_compute(padded, own_ns / 1e9)
        return outputs, own_ns + self._hop_ns

    def _learn(self, profile: LatencyProfile, padded: int, rows: int, run_ns: int, begin: int) -> int:
        """Ends a batch whose run began at ``begin``: the profile learns ``run_ns``, the observer gets the
        batch; returns ``compute_ns`` (from ``begin`` to now: collation to split)."""
        compute_ns = self._clock.ns() - begin
        self._teach(profile, padded, rows, run_ns, compute_ns)
        return compute_ns

    def _teach(self, profile: LatencyProfile, padded: int, rows: int, run_ns: int, compute_ns: int) -> None:
        """A finished batch teaches the profile ``run_ns`` and the observer the batch."""
        # The profile learns the run as the executor path costs it: the session's own time (measured on its
        # thread, so the event loop's delay in resuming us never inflates predictions) plus the hop.
        profile.observe(padded, run_ns / 1e9)
        if self._observer is not None:
            self._observer.on_batch(rows, compute_ns)

    def _inline(self, cost: float, started: float, alone: bool) -> bool:
        """Whether a batch whose session compute is predicted at ``cost`` runs on the event loop (module
        doc); never before the profile has a compute estimate."""
        return (
            bool(self._inline_s)
            and cost > 0.0
            and (
                cost <= self._inline_s
                or (alone and cost <= ALONE_INLINE_MAX_S)
                or (cost <= SOLO_INLINE_MAX_S and self._cores is not None and self._cores.solo(started))
            )
        )

    async def _run(self, instance: int, batch: list[Entry], alone: bool = False) -> None:
        clock = self._clock
        profile = self._profiles[instance]
        started = clock.now()
        single = len(batch) == 1
        if single:  # nothing to collate: the request's own feeds and outputs, in its own order
            names: list[str] = list(batch[0].request.output_names)
            feeds: Mapping[str, npt.NDArray[Any]] = batch[0].request.feeds
            rows = batch[0].request.rows
            offsets = None
        else:
            wanted = {name for entry in batch for name in entry.request.output_names}
            names = [name for name in self._output_names if name in wanted]
            feeds, offsets = stack([entry.request.feeds for entry in batch])
            rows = int(offsets[-1])
        padded = bucket_for(rows, self._buckets)
        if padded > rows:
            feeds = pad(feeds, rows, padded)
        begin = clock.ns()
        cost = profile.compute(padded)
        # long compute holds the one core without a yield: gRPC's transport threads preempt meanwhile
        with TRANSPORT.long_compute() if cost > LONG_COMPUTE_S else contextlib.nullcontext():
            if self._inline(cost, started, alone):
                outputs, run_ns = self._run_inline(instance, profile, feeds, names, padded)
            else:
                try:
                    outputs = await self._runner.run(instance, feeds, names)
                except asyncio.CancelledError:  # only a fast-path caller is ever cancelled here
                    if self._observer is not None:  # the rows still run on the executor: count the batch
                        self._observer.on_batch(rows, clock.ns() - begin)
                    raise
                run_ns = self._executor_ns(instance, begin, padded)
        outputs = unpad(outputs, rows, padded)  # padded rows never reach a response
        if single:
            if self._batchable:
                check_rows(outputs, rows)
            parts = [outputs]
        elif self._batchable:
            assert offsets is not None
            parts = split(outputs, offsets)
        else:
            parts = [outputs]
        compute_ns = self._learn(profile, padded, rows, run_ns, begin)
        if single:
            entry = batch[0]
            if not entry.future.done():
                entry.future.set_result(
                    BatchResult(outputs, int((started - entry.enqueued) * 1e9), compute_ns, rows)
                )
            return
        index = {name: i for i, name in enumerate(names)}
        for entry, part in zip(batch, parts, strict=True):
            if entry.future.done():  # cancelled while computing
                continue
            chosen = [part[index[name]] for name in entry.request.output_names]
            queue_ns = int((started - entry.enqueued) * 1e9)
            entry.future.set_result(BatchResult(chosen, queue_ns, compute_ns, rows))

    def _executor_ns(self, instance: int, begin: int, padded: int) -> int:
        """What an executor run costs: its own duration measured on the runner's thread plus the hop, when
        the runner measures it (``last_compute_ns``, which may also lower the compute estimate); else the
        span the caller saw, which includes both."""
        measured = getattr(self._runner, "last_compute_ns", None)
        if measured is not None:
            own_ns = int(measured[instance])
            self._profiles[instance].observe_compute(padded, own_ns / 1e9, lower_only=True)
            return own_ns + self._hop_ns
        return self._clock.ns() - begin

    def _fail(self, entry: Entry, exc: Exception) -> None:
        if not isinstance(exc, GatewayError):
            log.error("%s: batch failed", self._name, exc_info=exc)
        if not entry.future.done():
            entry.future.set_exception(exc)
