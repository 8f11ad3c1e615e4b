"""Lock-free Prometheus families for the request path: counters and histograms written on the event loop.

prometheus-client's own metrics take a lock per update (two per histogram observation): about 0.5-1 µs
each, and five such updates ran for every answered request. These families keep plain Python numbers
instead, and their ``collect`` (on the scrape thread) copies them.

Contracts:

* A child (``labels(...)``) is updated from one thread only, the gateway's event loop, as the version
  statistics are (:mod:`gateway.stats`); a scrape may run on any thread at any time. A scrape reads each
  child's numbers once: a histogram's ``_count`` is the sum of the bucket counts it copied, so count and
  ``+Inf`` always agree; ``_sum`` may miss observations made during the copy.
* Exposition matches prometheus-client's ``Counter`` and ``Histogram`` of the same name, labels and
  buckets: ``{name}_total`` (and ``_created``) for a counter, ``_bucket{le}``, ``_count``, ``_sum`` (and
  ``_created``) for a histogram; an observation equal to a bucket bound counts in that bucket.
* Label values are passed positionally, in ``labelnames`` order; children are never removed.
* ``_created`` is wall-clock time (seconds since the epoch), as the exposition format defines it; it is
  never used for durations.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["LoopCounter", "LoopHistogram"]

ChildT = TypeVar("ChildT")


class CounterChild:
    """One label set of a :class:`LoopCounter`."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HistogramChild:
    """One label set of a :class:`LoopHistogram`: a count per bucket (the last one is ``+Inf``)."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.sum += amount


def _edge(bound: float) -> str:
    """A bucket's ``le`` value, spelled as prometheus-client spells it."""
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


class _Family(Collector, Generic[ChildT]):
    """Name, help, label names and the children by label values; subclasses make a child and collect."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], ChildT] = {}
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> ChildT:
        """The child for these label values (positional, in ``labelnames`` order), made on first use."""
        key = tuple(str(value) for value in values)
        child = self._children.get(key)
        if child is None:
            if len(key) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {key}")
            child = self._children.setdefault(key, self._new_child())
        return child

    def describe(self) -> list[Metric]:
        return list(self.collect())

    def _new_child(self) -> ChildT:
        raise NotImplementedError


class LoopCounter(_Family[CounterChild]):
    """A counter family, exported as prometheus-client's ``Counter(name, ...)`` would be."""

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in list(self._children.items()):
            family.add_metric(list(key), child.value, created=child.created)
        yield family


class LoopHistogram(_Family[HistogramChild]):
    """A histogram family, exported as prometheus-client's ``Histogram(name, ..., buckets=...)`` would be
    (``buckets`` are the finite upper bounds, ascending; ``+Inf`` is added)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry | None = None,
    ) -> None:
        bounds = tuple(float(b) for b in buckets)
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"{name}: buckets must be strictly ascending")
        self._bounds = bounds
        super().__init__(name, documentation, labelnames, registry)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self._bounds)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        edges = [_edge(bound) for bound in self._bounds] + ["+Inf"]
        for key, child in list(self._children.items()):
            counts = list(child.counts)
            total = child.sum
            cumulative = 0
            buckets = []
            for edge, count in zip(edges, counts, strict=True):
                cumulative += count
                buckets.append((edge, cumulative))
            family.add_metric(list(key), buckets, total)
            family.samples.append(
                family.samples[-1]._replace(name=f"{self.name}_created", value=child.created)
            )
        yield family
