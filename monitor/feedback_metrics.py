"""Feedback and quality metrics (docs/monitor.md, "Metrics"), on the monitor's injected registry.

This module owns the Prometheus view of the feedback path: labels in by result, the prediction store's
size and evictions, and per version the realized quality of the last closed window, the CBPE estimate,
the baseline it is judged against, label coverage and the degraded state. Names are a contract with
the Grafana rows and alert rules in ``deploy/``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["FeedbackMetrics"]

_VERSION = ("model", "version")
_METRIC = ("model", "version", "metric")


class FeedbackMetrics:
    """Every feedback metric, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.total = Counter(
            "infergate_feedback",
            "Feedback items by result: matched (joined or accepted), unmatched, unsampled, late, duplicate, "
            "invalid",
            ("model", "result"),
            registry=registry,
        )
        self.store_rows = Gauge(
            "infergate_feedback_store_rows", "Prediction rows held for joining", registry=registry
        )
        self.evicted = Counter(
            "infergate_feedback_evicted",
            "Stored predictions evicted before a label came, by reason (rows, bytes, ttl)",
            ("reason",),
            registry=registry,
        )
        self.quality = Gauge(
            "infergate_quality", "Realized quality of the last closed window", _METRIC, registry=registry
        )
        self.estimated = Gauge(
            "infergate_quality_estimated",
            "Quality estimated before labels (CBPE) for the open window",
            _METRIC,
            registry=registry,
        )
        self.baseline = Gauge(
            "infergate_quality_baseline",
            "The value each quality metric is judged against",
            _METRIC,
            registry=registry,
        )
        self.coverage = Gauge(
            "infergate_quality_label_coverage_ratio",
            "Labelled sampled rows / sampled predictions of the last closed window",
            _VERSION,
            registry=registry,
        )
        self.degraded = Gauge(
            "infergate_quality_degraded",
            "1 while the version's quality is degraded",
            _VERSION,
            registry=registry,
        )
        self._evicted_seen: dict[str, int] = {}

    def observe_evictions(self, totals: dict[str, int]) -> None:
        """Advance the eviction counter to ``totals`` (cumulative, per reason, over every store)."""
        for reason, count in totals.items():
            seen = self._evicted_seen.get(reason, 0)
            if count > seen:
                self.evicted.labels(reason).inc(count - seen)
                self._evicted_seen[reason] = count
