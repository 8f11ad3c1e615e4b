"""A rollout in progress inside one gateway process: the traffic split and the mirrored comparisons.

:class:`LiveRollout` is what the data plane consults per request (O(1), no I/O):

- Canary: :meth:`LiveRollout.picks` is True for a request whose id hashes below the step's share
  (``crc32(id) mod 10000 < percent * 100``), so one id always reaches the same version while the step
  lasts, and every id on the candidate stays there as the share grows. Requests without an id got one
  from the data plane (a counter), which spreads them evenly.
- Shadow: the same hash picks the requests mirrored to the candidate.
- Mirrors (shadow copies to the candidate, and canary pairs: copies of candidate-answered requests to the
  stable version, for the agreement gate) are tasks started after the answer was built, never awaited by
  the request. At most ``[rollout].shadow_max_inflight`` run at once; a copy is dropped (and counted)
  beyond that, whenever the stable version has requests waiting in its queue (the stable path comes
  first), or when the two versions' inputs differ.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from gateway.agreement import agreeing_rows, agreement_kind
from gateway.models import ModelTable
from gateway.rollout_metrics import RolloutMetrics
from gateway.rollout_window import StepWindow
from gateway.validate import DecodedRequest
from gateway.version import LoadedVersion
from registry.rollout import RolloutState
from registry.rollout_config import RolloutConfig

__all__ = ["LiveRollout", "share_of"]

log = logging.getLogger(__name__)


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
    mirrors_inflight: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
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
        return share_of(request_id) < self._threshold

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
    ) -> None:
        """Starts the comparison copy of an answered request, or counts it dropped. Never blocks."""
        target = self.stable if answered.version == self.candidate else self.candidate
        try:
            other = table.resolve(self.model, str(target))
        except Exception:
            self._count(metrics, target, "dropped")
            return
        stable = answered if other.version == self.candidate else other
        if (
            self.mirrors_inflight >= self.config.shadow_max_inflight
            or stable.batcher.queued_rows > 0
            or other.signature.inputs != answered.signature.inputs
        ):
            self._count(metrics, target, "dropped")
            return
        answer = None
        if self.output in decoded.output_names:
            answer = outputs[decoded.output_names.index(self.output)]
        self.mirrors_inflight += 1
        task = asyncio.create_task(self._run(table, metrics, other, decoded, answer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self,
        table: ModelTable,
        metrics: RolloutMetrics | None,
        other: LoadedVersion,
        decoded: DecodedRequest,
        answer: Any,
    ) -> None:
        to_candidate = other.version == self.candidate
        window = self.window
        started = time.perf_counter()
        try:
            with table.lease(self.model, str(other.version)) as target:
                names = (self.output,) if self.output in target.output_datatypes else decoded.output_names[:1]
                copy = DecodedRequest(decoded.feeds, decoded.rows, names)
                loop = asyncio.get_running_loop()
                batching = target.config.batching
                deadline = loop.time() + batching.latency_budget_ms / 1e3
                result = await target.batcher.submit(copy, deadline, batching.priority_levels)
        except Exception as exc:
            if to_candidate and window is self.window:
                window.candidate.record(False, time.perf_counter() - started)
            self._count(metrics, other.version, "error")
            log.debug("rollout %s: mirror to %d failed: %s", self.model, other.version, exc)
            return
        finally:
            self.mirrors_inflight -= 1
        if to_candidate and window is self.window:
            window.candidate.record(True, time.perf_counter() - started)
        if answer is None or not self.kind or self.output not in names:
            return
        mine = result.outputs[0]
        cand, stable = (mine, answer) if to_candidate else (answer, mine)
        rows, agreeing = agreeing_rows(self.kind, cand, stable, self.config.max_relative_error)
        if window is self.window:
            window.record_comparison(rows, agreeing)
        self._count(metrics, other.version, "agree" if agreeing == rows else "disagree")

    def _count(self, metrics: RolloutMetrics | None, version: int, result: str) -> None:
        if metrics is not None:
            metrics.shadow.labels(self.model, str(version), result).inc()

    async def close(self) -> None:
        """Cancels the mirrors still running (their versions may be retiring)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
