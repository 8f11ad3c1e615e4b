"""deploy/grafana/infergate.json: importable as is (datasource input and variable, model and version
variables), laid out without overlaps, covering the panels issue 8 asks for and the Rollouts and Model
quality rows of issues 16 and 17, naming only metrics that exist or are planned (tests/planned_metrics.py),
and every PromQL expression in it parses and evaluates on a real Prometheus."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.metrics import GatewayMetrics
from monitor.metrics import MonitorMetrics
from tests.planned_metrics import PLANNED, planned_names
from tests.prometheus import (
    Prometheus,
    dashboard,
    exposed_names,
    free_port,
    metric_names,
    panels,
    render,
    row_panels,
    scrape_config,
    targets,
    variable_queries,
)

DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}

#: metric -> what the brief needs it for; each must be queried by at least one panel.
REQUIRED_METRICS = {
    "infergate_requests_total": "request rate and error ratio by code",
    "infergate_request_duration_seconds_bucket": "end-to-end latency quantiles",
    "infergate_queue_duration_seconds_bucket": "queue latency quantiles",
    "infergate_compute_duration_seconds_bucket": "compute latency quantiles",
    "infergate_batch_size_bucket": "batch size distribution",
    "infergate_queue_depth": "queue depth",
    "infergate_shed_total": "shed requests by reason",
    "infergate_model_ready": "loaded versions",
    "infergate_model_loads_total": "load failures",
    "infergate_predicted_batch_latency_seconds": "latency profile",
    "infergate_drift_psi": "drift PSI per feature",
    "infergate_drift_ks_statistic": "drift KS per feature",
    "infergate_drift_ks_pvalue": "drift KS p-value per feature",
    "infergate_drift_detected": "drift state per version",
    "infergate_samples_total": "sampling sent and dropped",
    "infergate_monitor_rows_total": "monitor rows",
}

#: The rows issues 16 and 17 ask for: each panel in them names only planned metrics (and, for context,
#: exported ones), and together they query every planned metric of their exporter.
PLANNED_ROWS = {"Rollouts": "gateway", "Model quality": "monitor"}


@pytest.fixture(scope="module")
def board() -> dict[str, Any]:
    return dashboard()


def test_importable_with_a_prometheus_datasource_input_and_variable(board: dict[str, Any]) -> None:
    assert board["schemaVersion"] >= 36
    assert board["uid"] == "infergate-overview"
    assert board["id"] is None  # Grafana assigns one on import
    (ds_input,) = board["__inputs"]
    assert (ds_input["name"], ds_input["type"], ds_input["pluginId"]) == (
        "DS_PROMETHEUS",
        "datasource",
        "prometheus",
    )
    variables = {v["name"]: v for v in board["templating"]["list"]}
    # The variable has the input's name, so ${DS_PROMETHEUS} resolves both after the import dialog
    # substituted it and when the file is provisioned as is (then Grafana's default Prometheus is used).
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    for name in ("model", "version"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == DATASOURCE
        assert variables[name]["query"]["query"].startswith("label_values(")
        assert variables[name]["includeAll"]
        assert variables[name]["multi"]
        # "All" must not match model="" (unknown-model requests) or version="".
        assert variables[name]["allValue"] == ".+"
    assert "$model" in variables["version"]["query"]["query"]


def test_every_panel_queries_the_datasource_variable(board: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids))
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["description"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert panel["targets"], panel["title"]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_panels_fit_the_grid_without_overlapping(board: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(board):
        pos = panel["gridPos"]
        assert min(pos["w"], pos["h"], pos["x"] + 1) > 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_covers_the_required_panels(board: dict[str, Any]) -> None:
    text = "\n".join(expr for _, expr in targets(board))
    missing = {name: why for name, why in REQUIRED_METRICS.items() if name not in metric_names(text)}
    assert missing == {}
    exprs = [expr for _, expr in targets(board)]
    for metric in ("request", "queue", "compute"):
        for q in ("0.5", "0.95", "0.99"):
            wanted = (f"histogram_quantile({q}, ", f"infergate_{metric}_duration_seconds_bucket")
            assert any(all(part in expr for part in wanted) for expr in exprs), (metric, q)
    for grouping in ("sum by (code)", "sum by (reason)", "sum by (model, outcome)"):
        assert any(grouping in expr for expr in exprs), grouping


def test_the_rollout_and_quality_rows_cover_the_planned_metrics(board: dict[str, Any]) -> None:
    rows = row_panels(board)
    planned = planned_names()
    for title, exporter in PLANNED_ROWS.items():
        assert rows.get(title), f"no {title!r} row, or it is empty"
        mentioned: set[str] = set()
        for panel in rows[title]:
            names = set().union(*(metric_names(t["expr"]) for t in panel["targets"]))
            assert names, panel["title"]
            assert names <= planned, (panel["title"], names - planned)
            mentioned |= names
        wanted = {m.name for m in PLANNED if m.exporter == exporter}
        assert wanted - mentioned == set(), title


def test_names_only_metrics_the_gateway_and_monitor_export(board: dict[str, Any]) -> None:
    registry = CollectorRegistry()
    GatewayMetrics(registry)
    MonitorMetrics(registry)
    known = exposed_names(registry) | planned_names()
    mentioned = set()
    for _, expr in targets(board):
        mentioned |= metric_names(expr)
    for _, selector in variable_queries(board):
        mentioned |= metric_names(selector)
    assert mentioned - known == set()


def test_every_expression_parses_and_evaluates(board: dict[str, Any], prometheus: Prometheus) -> None:
    """Against a real (empty) Prometheus: a parse or evaluation error fails; empty results are fine here
    (tests/integration/test_deploy_prometheus.py evaluates them on live data)."""
    exprs = list(targets(board))
    assert len(exprs) >= 20
    for variables in ({"model": ".+", "version": ".+"}, {"model": "classifier", "version": "2"}):
        for title, expr in exprs:
            rendered = render(expr, **variables)
            prometheus.query(rendered)  # raises PrometheusError with the message
            prometheus.query_range(rendered, seconds=300, step="15s")
            assert title
        for name, selector in variable_queries(board):
            assert prometheus.query(render(selector, **variables)) == [], name


def test_a_bad_expression_is_reported(prometheus: Prometheus) -> None:
    """The evaluation above would catch a typo: the API's error is raised, not swallowed."""
    with pytest.raises(AssertionError, match="bad_data"):
        prometheus.query(
            render(
                'sum by (code) (rate(infergate_requests_total{model=~"$model"}[$__rate_interval])', model="x"
            )
        )


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    closed = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    server = Prometheus(tmp_path_factory.mktemp("prometheus-dashboard"), scrape_config(*closed))
    yield server
    server.stop()
