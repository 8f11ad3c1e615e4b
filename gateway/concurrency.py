"""Admission at the data plane's door: an adaptive limit on inferences in flight, driven by how much of
their latency budgets the admitted calls use.

Under overload a queue stands somewhere. Left alone it stands in front of the batcher, every request
waits until its budget is gone and goodput collapses. This limit keeps the number of inferences in flight
in this process near what the server completes within budget, and refuses the rest at once
(RESOURCE_EXHAUSTED, before validation or a queue slot costs anything), so the requests it admits still
make their deadlines. It is an AIMD limit on a latency signal, in the spirit of Netflix's
concurrency-limits and Envoy's adaptive concurrency filter, but judged against each call's own budget
rather than a learned baseline: queueing that the budget allows (a batching server under a closed loop of
64 clients *should* queue) is not punished, while queueing that eats the budget is.

- Every ``window`` completions, the share of calls that used more than ``budget_share`` of their budget
  (or missed their deadline) is compared with ``late_tolerance``.
- Above it: multiplicative decrease, ``limit *= backoff``. At or below it, while the limit was reached in
  the window: additive increase, ``limit += sqrt(limit)``. Always within ``[min_limit, max_limit]``.

Contracts: :meth:`try_acquire`, :meth:`release` and :meth:`forget` are O(1), never block and are called
on the event loop thread only. Nothing here reads a clock: the caller measures each call's latency and
budget, so tests drive the limit deterministically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LimitConfig:
    """Bounds and dynamics of the adaptive limit."""

    initial: int = 512
    min_limit: int = 8
    max_limit: int = 512
    budget_share: float = 0.5
    late_tolerance: float = 0.05
    backoff: float = 0.9
    window: int = 32

    def __post_init__(self) -> None:
        if not 1 <= self.min_limit <= self.initial <= self.max_limit:
            raise ValueError("limits must satisfy 1 <= min_limit <= initial <= max_limit")
        if not 0 < self.budget_share <= 1 or not 0 <= self.late_tolerance < 1:
            raise ValueError("budget_share must be in (0, 1] and late_tolerance in [0, 1)")
        if not 0 < self.backoff < 1:
            raise ValueError("backoff must be in (0, 1)")
        if self.window < 1:
            raise ValueError("window must be >= 1")


class ConcurrencyLimit:
    """Counts inferences in flight and refuses past an adaptive limit."""

    def __init__(self, config: LimitConfig | None = None) -> None:
        self.config = config or LimitConfig()
        self.inflight = 0
        self._limit = float(self.config.initial)
        self._allowed = self.config.initial
        self._late = 0
        self._count = 0
        self._saturated = False
        self.refused = 0

    @property
    def limit(self) -> int:
        """The current limit, in calls."""
        return self._allowed

    def try_acquire(self) -> bool:
        """Takes a slot, or returns False (the caller refuses the call) when the limit is reached."""
        if self.inflight >= self._allowed:
            self.refused += 1
            self._saturated = True
            return False
        self.inflight += 1
        if self.inflight >= self._allowed:
            self._saturated = True
        return True

    def release(self, latency_s: float, budget_s: float) -> None:
        """Gives a slot back: the call held it ``latency_s`` seconds of a ``budget_s`` budget (a call that
        missed its deadline passes ``latency_s >= budget_s``)."""
        self.inflight -= 1
        self._count += 1
        if latency_s > self.config.budget_share * budget_s:
            self._late += 1
        if self._count >= self.config.window:
            self._update(self._late / self._count)
            self._late = 0
            self._count = 0

    def forget(self) -> None:
        """Gives a slot back without judging it (the call was refused before it had a budget, for example
        as invalid input): the limit's dynamics see nothing."""
        self.inflight -= 1

    def _update(self, late_share: float) -> None:
        config = self.config
        if late_share > config.late_tolerance:
            self._limit *= config.backoff
        elif self._saturated:
            self._limit += math.sqrt(self._limit)
        self._saturated = False
        self._limit = max(float(config.min_limit), min(float(config.max_limit), self._limit))
        self._allowed = int(self._limit)
