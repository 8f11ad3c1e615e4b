"""deploy/prometheus: the alert rules check and pass their promtool unit tests, every alert is tested both
firing and silent, carries summary, description and a runbook section, only names metrics the gateway and
the monitor export or that issues 16 and 17 plan (tests/planned_metrics.py), and a real Prometheus loads and
evaluates them from the example config."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.metrics import GatewayMetrics
from monitor.metrics import MonitorMetrics
from tests.planned_metrics import planned_names
from tests.prometheus import (
    ALERTS,
    ALERTS_TEST,
    RUNBOOK,
    SCRAPE_CONFIG,
    Prometheus,
    exposed_names,
    free_port,
    metric_names,
    promtool,
    scrape_config,
)

#: The alerts issue 8 asks for (plus the gateway's own scrape health), by name.
EXPECTED_ALERTS = {
    "InfergateLatencyBudgetBurnFast",  # latency SLO, multiwindow multi-burn-rate: page
    "InfergateLatencyBudgetBurnSlow",  # latency SLO, multiwindow multi-burn-rate: ticket
    "InfergateErrorRatioHigh",
    "InfergateSheddingSustained",
    "InfergateModelLoadFailed",
    "InfergateModelNotReady",
    "InfergateDriftDetected",
    "InfergateMonitorDown",
    "InfergateGatewayDown",
    "InfergateSamplesDropping",
    # Issue 16 (safe rollout) and issue 17 (model quality on ground truth).
    "InfergateRolloutRolledBack",
    "InfergateRolloutStuck",
    "InfergateQualityDegraded",
    "InfergateQualityEstimatedDrop",
    "InfergateFeedbackUnmatched",
}


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", ALERTS_TEST.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_checks_the_example_scrape_config() -> None:
    result = promtool("check", "config", str(SCRAPE_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_expectation_fails_promtool(tmp_path: Path) -> None:
    """The unit tests do compare annotations: the shedding case with its summary changed fails."""
    text = ALERTS_TEST.read_text(encoding="utf-8")
    header, cases = text.split("\ntests:\n", 1)
    case = (
        "  - name: sustained shedding"
        + cases.split("  - name: sustained shedding", 1)[1].split("\n  - name:")[0]
    )
    broken = case.replace('summary: "Model classifier sheds 3% of its requests"', 'summary: "wrong"')
    assert broken != case
    broken = f"{header}\ntests:\n{broken}"
    (tmp_path / ALERTS.name).write_text(ALERTS.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / ALERTS_TEST.name).write_text(broken, encoding="utf-8")
    result = promtool("test", "rules", ALERTS_TEST.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "InfergateSheddingSustained" in result.stdout + result.stderr


def unit_test_cases() -> dict[str, set[str]]:
    """alertname -> {"fires", "silent"} from alerts_test.yml's alert_rule_test cases.

    The file's convention (stated at its top): each case is ``- eval_time:`` then ``alertname:`` then
    ``exp_alerts: []`` (silent) or ``exp_alerts:`` followed by ``- exp_labels:`` items (fires).
    """
    cases: dict[str, set[str]] = {}
    lines = ALERTS_TEST.read_text(encoding="utf-8").splitlines()
    name: str | None = None
    for index, line in enumerate(lines):
        stripped = line.strip()
        if match := re.fullmatch(r"alertname:\s*(\w+)", stripped):
            name = match.group(1)
        elif stripped.startswith("exp_alerts:"):
            assert name is not None, f"alerts_test.yml:{index + 1}: exp_alerts without alertname"
            if stripped == "exp_alerts: []":
                cases.setdefault(name, set()).add("silent")
            else:
                assert stripped == "exp_alerts:", line
                assert lines[index + 1].strip().startswith("- exp_labels:"), lines[index + 1]
                cases.setdefault(name, set()).add("fires")
            name = None
    return cases


def test_every_alert_has_a_firing_and_a_silent_unit_test(rules: list[dict[str, Any]]) -> None:
    alerts = {rule["name"] for rule in rules if rule["type"] == "alerting"}
    assert alerts == EXPECTED_ALERTS
    cases = unit_test_cases()
    assert set(cases) == alerts, "alerts_test.yml tests an alert that alerts.yml lacks, or misses one"
    for alert in sorted(alerts):
        assert cases[alert] == {"fires", "silent"}, alert


def runbook_anchors() -> set[str]:
    """GitHub's anchors for RUNBOOK.md's headings (lower case, punctuation dropped, spaces to dashes)."""
    anchors = set()
    for line in RUNBOOK.read_text(encoding="utf-8").splitlines():
        if match := re.match(r"#{1,6}\s+(.+?)\s*$", line):
            anchors.add(re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-"))
    return anchors


def test_every_alert_is_annotated_and_has_a_runbook_section(rules: list[dict[str, Any]]) -> None:
    anchors = runbook_anchors()
    runbook = RUNBOOK.read_text(encoding="utf-8")
    for rule in (r for r in rules if r["type"] == "alerting"):
        name, annotations, labels = rule["name"], rule["annotations"], rule["labels"]
        assert annotations["summary"].strip(), name
        assert len(annotations["description"]) > 60, name
        assert labels["severity"] in {"page", "ticket"}, name
        url = annotations["runbook_url"]
        assert url.endswith(f"deploy/RUNBOOK.md#{name.lower()}"), name  # a prefix may be added
        assert name.lower() in anchors, f"RUNBOOK.md has no section for {name}"
        section = runbook.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("Meaning", "Check", "Mitigate"):
            assert f"**{part}" in section, f"RUNBOOK.md {name}: no {part} part"


def test_the_rules_name_only_metrics_that_exist(rules: list[dict[str, Any]]) -> None:
    """Every infergate_* name in the rules' expressions is a metric the gateway or the monitor exports, one
    planned by issues 16 and 17, or a recording rule."""
    registry = CollectorRegistry()
    GatewayMetrics(registry)
    MonitorMetrics(registry)
    recorded = {rule["name"] for rule in rules if rule["type"] == "recording"}
    known = exposed_names(registry) | planned_names() | recorded
    mentioned = set().union(*(metric_names(rule["query"]) for rule in rules))
    assert "infergate_request_duration_seconds_bucket" in mentioned
    assert {"infergate_rollout_events_total", "infergate_quality_degraded"} <= mentioned
    assert mentioned - known == set()


def test_the_slo_objective_is_one_documented_parameter(prometheus: Prometheus) -> None:
    assert prometheus.value("infergate:latency_slo_objective:ratio") == 0.99
    slow_ratio_rules = re.findall(
        r"record: (infergate:request_latency_slo_miss:ratio_rate\w+)", ALERTS.read_text()
    )
    assert [r.rsplit("rate", 1)[1] for r in slow_ratio_rules] == ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]


def test_prometheus_evaluates_every_rule_and_pages_for_unreachable_targets(
    prometheus: Prometheus, rules: list[dict[str, Any]]
) -> None:
    """The example config's targets are replaced by closed ports: the rules evaluate without error, and
    the scrape-health alerts go pending on the real ``up == 0``."""
    for rule in rules:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
    deadline = time.monotonic() + 20
    while True:
        pending = {a["labels"]["alertname"] for a in prometheus.api("alerts")["alerts"]}
        if {"InfergateGatewayDown", "InfergateMonitorDown"} <= pending or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert {"InfergateGatewayDown", "InfergateMonitorDown"} <= pending


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """The example prometheus.yml (1 s intervals) with its targets on ports nothing listens on."""
    closed = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    server = Prometheus(tmp_path_factory.mktemp("prometheus-rules"), scrape_config(*closed))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rules(prometheus: Prometheus) -> list[dict[str, Any]]:
    """The rules as the running Prometheus loaded them, once each has been evaluated at least once."""
    deadline = time.monotonic() + 20
    while True:
        loaded = [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
        if loaded and all(rule["health"] != "unknown" for rule in loaded):
            return loaded
        assert time.monotonic() < deadline, [r["name"] for r in loaded if r["health"] == "unknown"]
        time.sleep(0.25)
