"""The PrometheusRule the manifests ship (deploy/k8s/base/prometheusrule.yaml, in every overlay) is
deploy/prometheus/alerts.yml, as scripts/render-prometheusrule.py renders it: every alert and record rule,
in order, with a runbook on each alert, a spec promtool accepts, and a render script that refuses what it
cannot wrap. Rendered with ``kubectl kustomize`` (tests/kube.py; no cluster); promtool is the real one."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kube import K8S, ROOT, TARGETS, Manifest, kubectl, load, one, render
from tests.prometheus import promtool

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
RENDER = ROOT / "scripts" / "render-prometheusrule.py"


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Manifest]]:
    return render(TARGETS)


def _rule_names(kind: str) -> list[str]:
    """Alert or record names of alerts.yml, read as text (no YAML parser)."""
    return re.findall(rf"^\s*-?\s*{kind}:\s*(\S+)\s*$", ALERTS.read_text(), flags=re.MULTILINE)


@pytest.mark.parametrize("overlay", TARGETS)
def test_prometheusrule_carries_every_rule_of_alerts_yml(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    groups = one(rendered[overlay], "PrometheusRule")["spec"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    alerts = [rule["alert"] for rule in rules if "alert" in rule]
    records = [rule["record"] for rule in rules if "record" in rule]
    assert alerts == _rule_names("alert")
    assert len(alerts) > 0
    assert records == _rule_names("record")
    assert all(rule["expr"].strip() for rule in rules)
    assert all(rule["annotations"]["runbook_url"] for rule in rules if "alert" in rule)


def test_prometheusrule_is_the_current_rendering_of_alerts_yml() -> None:
    done = subprocess.run(
        [sys.executable, str(RENDER), "--check"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_prometheusrule_spec_is_a_valid_rule_file(tmp_path: Path) -> None:
    kubectl()
    (rule,) = load(K8S / "base" / "prometheusrule.yaml")
    rules = tmp_path / "rules.yml"
    rules.write_text(json.dumps(rule["spec"]))  # JSON is YAML
    done = promtool("check", "rules", str(rules), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_render_script_refuses_what_it_cannot_wrap_and_reports_staleness(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(RENDER), *args], capture_output=True, text=True, timeout=60, check=False
        )

    good, out = tmp_path / "good.yml", tmp_path / "rule.yaml"
    good.write_text(
        "# c\ngroups:\n  - name: g\n    rules:\n      - alert: A\n        expr: |\n          up\n\n"
    )
    assert run("--alerts", str(good), "--out", str(out), "--check").returncode == 1  # absent = stale
    assert run("--alerts", str(good), "--out", str(out)).returncode == 0
    assert out.read_text().endswith(
        "spec:\n  groups:\n    - name: g\n      rules:\n        - alert: A\n"
        "          expr: |\n            up\n"
    )
    assert run("--alerts", str(good), "--out", str(out), "--check").returncode == 0
    for bad, reason in [
        ("groups: []\nextra: 1\n", "only a top-level 'groups:'"),
        ("groups:\n\t- name: g\n", "tab"),
        ("rules: []\n", "only a top-level 'groups:'"),
        ("# nothing\n", "no top-level 'groups:'"),
        ("groups:\n---\ngroups:\n", "only a top-level 'groups:'"),
    ]:
        path = tmp_path / "bad.yml"
        path.write_text(bad)
        done = run("--alerts", str(path), "--out", str(tmp_path / "unused.yaml"))
        assert (done.returncode, reason in done.stderr) == (2, True), (bad, done.stderr)
    assert not (tmp_path / "unused.yaml").exists()
