"""The metric contract of issues 16 (safe rollout, gateway) and 17 (model quality, monitor), which the SRE
files in deploy/ name before, or while, the code that exports them is written.

The deploy tests accept these names beside what :class:`gateway.metrics.GatewayMetrics` and
:class:`monitor.metrics.MonitorMetrics` export, and ``tests/unit/test_planned_metrics.py`` checks that
an exporter that has one exports it with exactly this type and these labels. Once both issues have
landed every name here is exported and this module only pins the contract.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PLANNED", "PlannedMetric", "planned_names"]


@dataclass(frozen=True)
class PlannedMetric:
    """One metric as Prometheus exposes it: sample name (``_total`` included for counters), type, labels,
    and which process exports it."""

    name: str
    type: str
    labels: frozenset[str]
    exporter: str

    @property
    def family(self) -> str:
        """The name prometheus_client gives the family (a counter's without ``_total``)."""
        return self.name.removesuffix("_total") if self.type == "counter" else self.name


def _metric(name: str, kind: str, labels: str, exporter: str) -> PlannedMetric:
    return PlannedMetric(name, kind, frozenset(labels.split()), exporter)


PLANNED: tuple[PlannedMetric, ...] = (
    # Gateway, issue 16: the rollout of a candidate version.
    _metric("infergate_rollout_step", "gauge", "model version", "gateway"),  # step index, -1 none
    _metric("infergate_rollout_traffic_ratio", "gauge", "model version", "gateway"),  # 0..1
    _metric("infergate_rollout_gate_total", "counter", "model gate result", "gateway"),
    _metric("infergate_rollout_events_total", "counter", "model event", "gateway"),
    _metric("infergate_rollout_shadow_total", "counter", "model version result", "gateway"),
    # Monitor, issue 17: feedback joined to predictions, and quality per version.
    _metric("infergate_feedback_total", "counter", "model result", "monitor"),
    _metric("infergate_feedback_store_rows", "gauge", "", "monitor"),
    _metric("infergate_feedback_evicted_total", "counter", "reason", "monitor"),
    _metric("infergate_quality", "gauge", "model version metric", "monitor"),
    _metric("infergate_quality_estimated", "gauge", "model version metric", "monitor"),
    _metric("infergate_quality_baseline", "gauge", "model version metric", "monitor"),
    _metric("infergate_quality_label_coverage_ratio", "gauge", "model version", "monitor"),
    _metric("infergate_quality_degraded", "gauge", "model version", "monitor"),
)


def planned_names() -> set[str]:
    """The sample names of :data:`PLANNED`, as PromQL names them."""
    return {metric.name for metric in PLANNED}
