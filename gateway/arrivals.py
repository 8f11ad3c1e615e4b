"""Arrival statistics of one version's requests, for the batcher's decisions (stage: admission).

Contracts:
- :meth:`Arrivals.record` is O(1) per admitted request and uses only the batcher's clock readings.
- :meth:`Arrivals.likely` says whether another arrival is likely within a window: the mean gap between
  arrivals fits in it, and at least :data:`COMPANY_MIN` of recent arrivals found another request of the
  version pending. Until arrivals have been seen it says no (nothing to wait for).
- :attr:`Arrivals.budget` is the typical budget (deadline minus arrival) requests bring, in seconds;
  0 until one is seen. Budgets beyond an hour (no real deadline) are ignored.
"""

from __future__ import annotations

#: The batcher waits for more rows only while at least this share of recent arrivals found another
#: request of the version pending; below it, arrivals are sequential (one closed-loop client never sends
#: while its call is pending) and waiting for a companion only adds the queue delay to every call.
COMPANY_MIN = 0.1
_FOREVER = 3600.0


class Arrivals:
    """Exponentially weighted gap, overlap and budget of recent arrivals."""

    def __init__(self, *, gap_weight: float = 0.1, budget_weight: float = 0.05) -> None:
        self._gap_weight = gap_weight
        self._budget_weight = budget_weight
        self._last = 0.0
        self.gap = 0.0  # seconds between arrivals (0: unknown)
        self.company = 1.0  # share of arrivals that found another request pending
        self.budget = 0.0

    def record(self, now: float, budget: float, *, others_pending: bool) -> None:
        """One admitted request arrived at ``now`` with ``budget`` seconds to its deadline."""
        if self._last:
            gap = now - self._last
            self.gap = gap if not self.gap else self.gap + self._gap_weight * (gap - self.gap)
        self._last = now
        self.company += self._gap_weight * ((1.0 if others_pending else 0.0) - self.company)
        if budget < _FOREVER:
            self.budget = (
                budget if not self.budget else self.budget + self._budget_weight * (budget - self.budget)
            )

    def likely(self, window: float) -> bool:
        """Another arrival is likely within ``window`` seconds."""
        return bool(self.gap) and window >= self.gap and self.company >= COMPANY_MIN
