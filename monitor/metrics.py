"""Monitor metrics (DESIGN.md §5), on a CollectorRegistry the caller injects, never the global one.

This module owns the Prometheus view of the drift engine: per-feature gauges of the latest window of
each (model, version), the version's drift state and training/serving skew, rows taken in, and the
health counters of the service (rejected input, versions that cannot be monitored, windows evaluated or
shed, evaluation time, alert delivery).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitor.feedback_metrics import FeedbackMetrics

__all__ = ["MonitorMetrics"]

_FEATURE = ("model", "version", "feature")


class MonitorMetrics:
    """Every metric of the monitor, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        #: Feedback and quality metrics (monitor/feedback_metrics.py).
        self.feedback = FeedbackMetrics(registry)
        self.psi = Gauge(
            "infergate_drift_psi", "PSI of the latest window vs the reference", _FEATURE, registry=registry
        )
        self.ks = Gauge(
            "infergate_drift_ks_statistic",
            "KS statistic of the latest window vs the reference (exact when audited, else the grid value)",
            _FEATURE,
            registry=registry,
        )
        self.ks_pvalue = Gauge(
            "infergate_drift_ks_pvalue",
            "KS p-value of the latest window (audited windows only)",
            _FEATURE,
            registry=registry,
        )
        self.feature_drift = Gauge(
            "infergate_drift_feature_detected",
            "1 when the feature drifted in the latest window",
            _FEATURE,
            registry=registry,
        )
        self.detected = Gauge(
            "infergate_drift_detected",
            "1 while the model version is in drift (K consecutive drifting windows)",
            ("model", "version"),
            registry=registry,
        )
        self.skew = Gauge(
            "infergate_skew_detected",
            "1 when the version's first windows differ from its training profile (training/serving skew), "
            "0 when they do not; absent until the check is decided",
            ("model", "version"),
            registry=registry,
        )
        self.rows = Counter(
            "infergate_monitor_rows",
            "Sampled rows taken into windows",
            ("model", "version"),
            registry=registry,
        )
        self.unmonitored_rows = Counter(
            "infergate_monitor_unmonitored_rows",
            "Valid rows of versions that cannot be monitored (no_reference, invalid_reference)",
            ("model", "version", "reason"),
            registry=registry,
        )
        self.rejected = Counter(
            "infergate_monitor_rejected",
            "Rejected request bodies and WebSocket frames, by reason",
            ("reason",),
            registry=registry,
        )
        self.rejected_rows = Counter(
            "infergate_monitor_rejected_rows",
            "Rows in rejected bodies and frames (as far as they could be counted), by reason",
            ("reason",),
            registry=registry,
        )
        self.windows = Counter(
            "infergate_monitor_windows",
            "Closed windows: evaluated, or dropped because the evaluator was behind",
            ("model", "version", "outcome"),
            registry=registry,
        )
        self.evaluation = Histogram(
            "infergate_monitor_evaluation_duration_seconds",
            "Time to evaluate one closed window (PSI, KS, audit, p-values)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        self.alerts = Counter(
            "infergate_monitor_alerts",
            "Drift events sent to the alert webhook, by outcome",
            ("outcome",),
            registry=registry,
        )
