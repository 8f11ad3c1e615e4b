"""A rollout in progress inside one gateway process: the traffic split and the mirrored comparisons.

:class:`LiveRollout` is what the data plane consults per request (O(1), no I/O):

- Canary: :meth:`LiveRollout.picks` is True for a request whose id hashes below the step's share
  (``crc32(id) mod 10000 < percent * 100``), so one id always reaches the same version while the step
  lasts, and every id on the candidate stays there as the share grows. Requests without an id got one
  from the data plane (a counter), which spreads them evenly.
- Shadow: the same hash picks the requests mirrored to the candidate.
- Mirrors (shadow copies to the candidate, and canary pairs: copies of candidate-answered requests to the
  stable version, for the agreement gate) are made after the answer was built and never awaited by the
  request. The copies made within ``[rollout].mirror_window_ms`` of the first one (0: within its turn of
  the event loop, whose end sends them) go to the other version together, stacked into one request per
  batch key of at most the target's ``max_batch_size`` rows, in one task and one thread hop: the
  window's groups run, split and are compared on the target's executor thread (in turn with its own
  batches, :func:`gateway.rollout_copies.run_groups`), so the event loop pays only for making the copies
  and recording the results, and the target runs batches the size of a window's traffic (cheaper per
  row than the one or two copies a turn makes). A group that fails is re-run copy by copy, so only a
  copy that fails alone counts as a candidate error. Each copy is still recorded and counted on its own
  (latency: its window's, from the send to the answers). At most
  ``[rollout].shadow_max_inflight`` groups run at once; a copy is dropped (and counted) when it would
  start one more, whenever the stable version has requests waiting in its queue (the stable path comes
  first), or when the two versions' inputs differ.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy.typing as npt

from gateway.agreement import agreement_kind
from gateway.models import ModelTable
from gateway.rollout_copies import Comparison, Copy, GroupResult, group_copies, run_groups
from gateway.rollout_metrics import RolloutMetrics
from gateway.rollout_window import StepWindow
from gateway.validate import DecodedRequest
from gateway.version import LoadedVersion
from registry.rollout import RolloutState
from registry.rollout_config import RolloutConfig

__all__ = ["SHADOW_ID_SUFFIX", "LiveRollout", "SampleHook", "share_of"]

log = logging.getLogger(__name__)


#: Appended to a request's id when the candidate's answer to its shadow copy is sampled: the monitor keeps
#: it apart from the stable version's answer, the one the client got (and may send a label for).
SHADOW_ID_SUFFIX = "#shadow"
#: Offers a shadow copy's answer to sampling: (the candidate, the original request id, its inputs, the
#: output names, the candidate's outputs in that order).
SampleHook = Callable[
    [LoadedVersion, str, dict[str, npt.NDArray[Any]], tuple[str, ...], list[npt.NDArray[Any]]], None
]


def share_of(request_id: str) -> int:
    """The request id's place in 0..9999 (stable across processes and restarts)."""
    return zlib.crc32(request_id.encode()) % 10000


@dataclass(eq=False)
class LiveRollout:
    """One model's running rollout as this process serves it (module docstring)."""

    model: str
    stable: int
    candidate: int
    step: int
    config: RolloutConfig
    state: RolloutState
    started: float
    window: StepWindow = field(default_factory=StepWindow)
    #: The output compared for agreement and how ("" when none can be).
    output: str = ""
    kind: str = ""
    #: Mirror groups running or gathering copies in their window.
    mirrors_inflight: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _pending: dict[int, list[Copy]] = field(default_factory=dict)
    #: Schedules the end of a mirror window: ``call_later(seconds, send)`` returning a handle with
    #: ``cancel()`` (None: the running loop's; tests pass their own to end a window when they choose).
    call_later: Callable[[float, Callable[[], None]], asyncio.TimerHandle] | None = None
    #: The scheduled send of the pending copies (a timer, or the end of the loop turn), and that send.
    _send_at: asyncio.TimerHandle | asyncio.Handle | None = None
    _send_now: Callable[[], None] | None = None
    _closed: bool = False
    _sample: SampleHook | None = None
    #: Shadow comparison counters by (version, result), resolved once.
    _children: dict[tuple[int, str], Any] = field(default_factory=dict)
    _threshold: int = field(init=False)

    def __post_init__(self) -> None:
        self._threshold = round(self.percent * 100)

    @property
    def percent(self) -> float:
        return self.config.steps[self.step]

    @property
    def canary(self) -> bool:
        return self.config.mode == "canary"

    def picks(self, request_id: str) -> bool:
        """Whether this request goes to the candidate (canary) or is mirrored to it (shadow)."""
        threshold = self._threshold
        return threshold >= 10000 or share_of(request_id) < threshold

    def set_step(self, step: int, state: RolloutState, now: float) -> None:
        """Moves to ``step`` with a fresh window (the stable baseline carried over)."""
        self.window = self.window.next(self.config.min_requests)
        self.step = step
        self.state = state
        self.started = now
        self._threshold = round(self.percent * 100)

    def choose_output(self, candidate: LoadedVersion) -> None:
        """Picks the compared output and how it is compared (``[rollout].agreement[_output]``)."""
        wanted = self.config.agreement_output
        specs = {spec.name: spec for spec in candidate.signature.outputs}
        name = wanted if wanted in specs else next(iter(specs), "")
        if name:
            self.output = name
            self.kind = agreement_kind(self.config.agreement, specs[name].datatype, name)

    def mirror(
        self,
        table: ModelTable,
        metrics: RolloutMetrics | None,
        answered: LoadedVersion,
        decoded: DecodedRequest,
        outputs: list[Any],
        request_id: str = "",
        sample: SampleHook | None = None,
    ) -> None:
        """Queues the comparison copy of an answered request for the gathering group, or counts it
        dropped. Never blocks. ``sample`` is offered the candidate's answer to a shadow copy (the data
        plane's sampling, so the drift gate sees shadow traffic)."""
        target = self.stable if answered.version == self.candidate else self.candidate
        try:
            other = table.resolve(self.model, str(target))
        except Exception:
            self._count(metrics, target, "dropped")
            return
        stable = answered if other.version == self.candidate else other
        pending = self._pending.get(other.version)
        if (
            self._closed
            or (pending is None and self.mirrors_inflight >= self.config.shadow_max_inflight)
            or stable.batcher.queued_rows > 0
            or other.signature.inputs != answered.signature.inputs
        ):
            self._count(metrics, target, "dropped")
            return
        answer = None
        if self.output in decoded.output_names:
            answer = outputs[decoded.output_names.index(self.output)]
        if pending is None:
            if not self._pending:
                self._schedule(table, metrics)
            pending = self._pending[other.version] = []
            self.mirrors_inflight += 1
        self._sample = sample
        pending.append(Copy(decoded.feeds, decoded.rows, answer, request_id))

    def _schedule(self, table: ModelTable, metrics: RolloutMetrics | None) -> None:
        loop = asyncio.get_running_loop()
        window_s = self.config.mirror_window_ms / 1000
        self._send_now = send = functools.partial(self._flush, table, metrics)
        if window_s <= 0:
            self._send_at = loop.call_soon(send)
        else:
            self._send_at = (self.call_later or loop.call_later)(window_s, send)

    def _send_gathered(self) -> None:
        """Ends the gathering window now (its scheduled send is cancelled)."""
        if self._send_at is not None and self._send_now is not None:
            self._send_at.cancel()
            self._send_now()

    def _flush(self, table: ModelTable, metrics: RolloutMetrics | None) -> None:
        self._send_at = self._send_now = None
        pending, self._pending = self._pending, {}
        for version, copies in pending.items():
            if self._closed:
                self.mirrors_inflight -= 1
                continue
            task = asyncio.create_task(self._run(table, metrics, version, copies))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(
        self, table: ModelTable, metrics: RolloutMetrics | None, version: int, copies: list[Copy]
    ) -> None:
        to_candidate = version == self.candidate
        window = self.window
        started = time.perf_counter()
        names: tuple[str, ...] = ()
        groups: list[list[Copy]] = []
        results: list[GroupResult] = []
        answered: LoadedVersion | None = None
        try:
            with table.lease(self.model, str(version)) as target:
                names = tuple(target.output_datatypes)
                comparison = None
                if self.kind and self.output in names:
                    comparison = Comparison(
                        self.kind, self.config.max_relative_error, to_candidate, names.index(self.output)
                    )
                groups = group_copies(copies, target.max_batch_size)
                # One hop for the whole window: running, splitting and comparing happen on the target's
                # executor thread, in turn with its own batches.
                results = await target.runner.call(
                    0, run_groups, target, 0, groups, names, comparison, self._has_ended
                )
                for result in results:
                    for rows, compute_ns in result.batches:
                        target.batcher.count_batch(rows, compute_ns)
                answered = target
        except Exception as exc:  # the version went away: every copy failed
            groups = [[copy] for copy in copies]
            results = [GroupResult([exc], None, []) for _ in copies]
        finally:
            self.mirrors_inflight -= 1
        elapsed = time.perf_counter() - started
        current = window is self.window
        stable_typical = None
        if to_candidate:  # shadow copies are judged against the stable version's profile
            try:
                stable_typical = table.resolve(self.model, str(self.stable)).batcher.profiles[0].typical
            except Exception:
                stable_typical = None
        failed = 0
        for group, result in zip(groups, results, strict=True):
            outcomes = result.outcomes
            errors = [o for o in outcomes if isinstance(o, BaseException)]
            failed += len(errors)
            if to_candidate and current:
                window.record_shadow(result.runs, len(outcomes), len(errors), elapsed, stable_typical)
            if errors:
                log.debug(
                    "rollout %s: %d mirror(s) to %d failed: %s", self.model, len(errors), version, errors[0]
                )
            if result.counts is not None:
                self._record_agreement(metrics, version, result.counts, window if current else None)
            if to_candidate and answered is not None and self._sample is not None:
                for copy, outcome in zip(group, outcomes, strict=True):
                    if not isinstance(outcome, BaseException):
                        self._sample(answered, copy.request_id, copy.feeds, names, outcome)
        if failed:
            self._count(metrics, version, "error", failed)

    def _record_agreement(
        self,
        metrics: RolloutMetrics | None,
        version: int,
        counts: list[tuple[int, int]],
        window: StepWindow | None,
    ) -> None:
        """Counts agreement per copy that both versions answered (``counts``: (rows, agreeing rows))."""
        agree = 0
        for rows, agreeing in counts:
            if window is not None:
                window.record_comparison(rows, agreeing)
            agree += agreeing == rows
        self._count(metrics, version, "agree", agree)
        self._count(metrics, version, "disagree", len(counts) - agree)

    def _count(self, metrics: RolloutMetrics | None, version: int, result: str, n: int = 1) -> None:
        if metrics is not None and n:
            child = self._children.get((version, result))
            if child is None:
                child = metrics.shadow.labels(self.model, str(version), result)
                self._children[version, result] = child
            child.inc(n)

    def _has_ended(self) -> bool:
        """Read on the executor thread: a closed rollout's queued groups are skipped, so a slow
        candidate's backlog never delays retiring it."""
        return self._closed

    async def settle(self) -> None:
        """Sends the copies still gathering at once, then waits until every copy made so far has been
        answered."""
        while self._pending or self._tasks:
            self._send_gathered()
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            else:
                await asyncio.sleep(0)

    async def close(self) -> None:
        """Cancels the mirrors still running (their versions may be retiring); copies not yet sent are
        dropped uncounted."""
        self._closed = True
        self._send_gathered()  # closed: drops what was gathering
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
