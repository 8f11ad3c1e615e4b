"""The metric contract of tests/planned_metrics.py (issues 16 and 17) holds wherever it is implemented: a
planned metric that the gateway or the monitor exports has the planned type and labels, and comes from the
planned process. The deploy tests name these metrics, so a drift between code and contract fails here."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from gateway.metrics import GatewayMetrics
from monitor.metrics import MonitorMetrics
from tests.planned_metrics import PLANNED, planned_names
from tests.prometheus import exposed_names


def families(exporter: str) -> dict[str, tuple[str, frozenset[str]]]:
    """Family name -> (type, label names) of every metric ``exporter`` ("gateway" or "monitor") registers."""
    registry = CollectorRegistry()
    if exporter == "gateway":
        GatewayMetrics(registry, process=False)
    else:
        MonitorMetrics(registry)
    found: dict[str, tuple[str, frozenset[str]]] = {}
    for collector in list(registry._collector_to_names):  # prometheus_client keeps no public label list
        name, kind = getattr(collector, "_name", None), getattr(collector, "_type", None)
        labels = getattr(collector, "_labelnames", None)
        if isinstance(name, str) and isinstance(kind, str) and labels is not None:
            found[name] = (kind, frozenset(labels))
    return found


def test_planned_metrics_that_exist_have_the_planned_type_and_labels() -> None:
    exported = {exporter: families(exporter) for exporter in ("gateway", "monitor")}
    for metric in PLANNED:
        here = exported[metric.exporter].get(metric.family)
        if here is not None:
            assert here == (metric.type, metric.labels), metric.name
        other = "monitor" if metric.exporter == "gateway" else "gateway"
        assert metric.family not in exported[other], f"{metric.name} belongs to the {metric.exporter}"


def test_the_contract_names_new_metrics_only_in_the_project_namespace() -> None:
    names = planned_names()
    assert len(names) == len(PLANNED)
    assert all(name.startswith("infergate_") for name in names)
    assert all(m.name.endswith("_total") == (m.type == "counter") for m in PLANNED)
    registry = CollectorRegistry()
    GatewayMetrics(registry, process=False)
    MonitorMetrics(registry)
    # A planned name may already be exported (then the test above pins it); it never clashes with a
    # different existing family's samples, e.g. a histogram's _count.
    exported = exposed_names(registry)
    for metric in PLANNED:
        clash = {metric.name + suffix for suffix in ("_bucket", "_count", "_sum", "_created")} & exported
        assert clash == set(), metric.name
