"""Rollout metric families (docs/registry.md "Safe rollout"), on the gateway's injected CollectorRegistry.

Names are a contract with deploy/grafana and deploy/prometheus:
- ``infergate_rollout_step{model,version}``: index of the candidate's current step (0-based), -1 when none.
- ``infergate_rollout_traffic_ratio{model,version}``: share of the model's requests the candidate answers
  (canary) or receives mirrored (shadow), 0..1 (the step's percent / 100; 0 when none runs).
- ``infergate_rollout_gate_total{model,gate,result}``: gate verdicts at each step's end or failure.
- ``infergate_rollout_events_total{model,event}``: started, step, promoted, rolled_back, aborted.
- ``infergate_rollout_shadow_total{model,version,result}``: mirrored comparisons (agree, disagree), and
  mirrors dropped (cap or load) or failed (error). ``version`` is the version the copy went to.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["RolloutMetrics"]


class RolloutMetrics:
    """The rollout families, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.step = Gauge(
            "infergate_rollout_step",
            "Index of the candidate's current rollout step (0-based); -1 when no rollout runs.",
            ["model", "version"],
            registry=registry,
        )
        self.traffic_ratio = Gauge(
            "infergate_rollout_traffic_ratio",
            "Share of the model's requests the candidate answers (canary) or receives mirrored (shadow).",
            ["model", "version"],
            registry=registry,
        )
        self.gate = Counter(
            "infergate_rollout_gate",
            "Rollout gate verdicts (error_ratio, p99_ratio, agreement, drift) by result (pass, fail).",
            ["model", "gate", "result"],
            registry=registry,
        )
        self.events = Counter(
            "infergate_rollout_events",
            "Rollout transitions: started, step, promoted, rolled_back, aborted.",
            ["model", "event"],
            registry=registry,
        )
        self.shadow = Counter(
            "infergate_rollout_shadow",
            "Mirrored rollout requests by result: agree, disagree, dropped (cap or load), error.",
            ["model", "version", "result"],
            registry=registry,
        )

    def show_step(self, model: str, version: int, step: int, ratio: float) -> None:
        """Sets the step and traffic gauges of ``version`` (-1 and 0 when its rollout ended)."""
        self.step.labels(model, str(version)).set(step)
        self.traffic_ratio.labels(model, str(version)).set(ratio)
