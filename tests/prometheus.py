"""A real Prometheus for the deploy tests (tests/*/test_deploy_*.py): promtool, a server on 127.0.0.1 with a
temp TSDB, its HTTP API, and the Grafana dashboard's PromQL with the template variables filled in.

The binaries come from Debian's ``prometheus`` package, which ``make test`` installs when run as root
(``scripts/ensure-prometheus.sh``). Without them every test that needs them is skipped with a reason that
says so; none passes silently.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
SCRAPE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "infergate.json"
RUNBOOK = DEPLOY / "RUNBOOK.md"

#: Addresses in the example scrape config (DESIGN.md §6 default ports), replaced by the tests' own.
GATEWAY_TARGET = "127.0.0.1:8002"
MONITOR_TARGET = "127.0.0.1:8090"

#: What Grafana puts in for its built-in interval variables when the tests evaluate dashboard PromQL.
GRAFANA_INTERVALS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}


def tool(name: str) -> str:
    """The path of ``promtool`` or ``prometheus``, or skip the calling test saying why."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(
            f"{name} is not installed: `make test` installs Debian's prometheus package when run as root "
            "(scripts/ensure-prometheus.sh); as another user run `sudo apt-get install prometheus`"
        )
    return path


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """GET on loopback; returns the status and body for error statuses too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), bytes(exc.read())


def scrape_config(gateway: str, monitor: str, scrape_interval: str = "1s") -> str:
    """deploy/prometheus/prometheus.yml with the targets and intervals replaced (each must be there once)."""
    text = SCRAPE_CONFIG.read_text(encoding="utf-8")
    for old, new in (
        (f'"{GATEWAY_TARGET}"', f'"{gateway}"'),
        (f'"{MONITOR_TARGET}"', f'"{monitor}"'),
        ("scrape_interval: 15s", f"scrape_interval: {scrape_interval}"),
        ("evaluation_interval: 15s", f"evaluation_interval: {scrape_interval}"),
    ):
        assert text.count(old) == 1, f"{SCRAPE_CONFIG} should contain {old} exactly once"
        text = text.replace(old, new)
    return text


class PrometheusError(AssertionError):
    """The Prometheus API answered with an error (bad PromQL, a failed evaluation)."""


class Prometheus:
    """A ``prometheus`` server on 127.0.0.1:<free port>, config and TSDB under ``workdir``.

    ``config`` is the prometheus.yml text; ``alerts.yml`` is copied beside it so ``rule_files`` entries
    resolve. Call :meth:`stop` (idempotent) when done.
    """

    def __init__(self, workdir: Path, config: str) -> None:
        binary = tool("prometheus")
        workdir.mkdir(parents=True, exist_ok=True)
        shutil.copy(ALERTS, workdir / ALERTS.name)
        self.config_file = workdir / "prometheus.yml"
        self.config_file.write_text(config, encoding="utf-8")
        self.log_file = workdir / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None
        for _attempt in range(3):  # the free port can be taken between probing and binding
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            with self.log_file.open("wb") as log:
                self._process = subprocess.Popen(
                    [
                        binary,
                        f"--config.file={self.config_file}",
                        f"--storage.tsdb.path={workdir / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{self.port}",
                        "--web.enable-lifecycle",
                        "--log.level=warn",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_ready(30.0):
                return
            self.stop()
            if "address already in use" not in self.log():
                break
        raise AssertionError(f"prometheus did not become ready:\n{self.log()[-4000:]}")

    def _wait_ready(self, within_s: float) -> bool:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                return False
            try:
                status, _ = http_get(f"{self.url}/-/ready", timeout=2)
            except OSError:
                status = 0
            if status == 200:
                return True
            time.sleep(0.1)
        return False

    def log(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)

    def api(self, path: str, **params: str) -> Any:
        """``data`` of a successful API answer; raises :class:`PrometheusError` with the error otherwise."""
        query = urllib.parse.urlencode(params)
        status, body = http_get(f"{self.url}/api/v1/{path}?{query}")
        try:
            payload = json.loads(body)
        except ValueError:
            raise PrometheusError(f"{path} {params}: HTTP {status}: {body[:500]!r}") from None
        if status != 200 or payload.get("status") != "success":
            raise PrometheusError(
                f"{params.get('query', path)}: {payload.get('errorType')}: {payload.get('error')}"
            )
        if payload.get("warnings"):
            raise PrometheusError(f"{params.get('query', path)}: warnings {payload['warnings']}")
        return payload["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query, now; the result as a list of ``{"metric": {...}, "value": [t, "v"]}``."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, seconds: float = 60.0, step: str = "1s") -> list[dict[str, Any]]:
        now = time.time()
        data = self.api("query_range", query=expr, start=str(now - seconds), end=str(now), step=step)
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, or None when it is empty."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr}: expected at most one series, got {result}"
        return float(result[0]["value"][1]) if result else None

    def wait_value(self, expr: str, expected: float, within_s: float = 20.0) -> float | None:
        """Polls ``expr`` until it equals ``expected`` or the time is up; returns the last value."""
        deadline = time.monotonic() + within_s
        while True:
            got = self.value(expr)
            if got == expected or time.monotonic() > deadline:
                return got
            time.sleep(0.25)


# --------------------------------------------------------------------------------- the Grafana dashboard


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' collapsed children included."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def row_panels(board: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Row title -> the panels under it (those that follow it in the layout, or its collapsed children)."""
    rows: dict[str, list[dict[str, Any]]] = {}
    current: list[dict[str, Any]] | None = None
    for panel in board["panels"]:
        if panel["type"] == "row":
            current = rows.setdefault(panel["title"], list(panel.get("panels", [])))
        elif current is not None:
            current.append(panel)
    return rows


def targets(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def variable_queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(variable name, series selector) of each ``label_values(selector, label)`` template variable."""
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", text)
        assert match, f"variable {variable['name']}: expected label_values(selector, label), got {text!r}"
        yield variable["name"], match.group(1)


def render(expr: str, **variables: str) -> str:
    """Substitutes ``$name`` / ``${name}`` (dashboard variables and Grafana's interval variables)."""
    values = {**GRAFANA_INTERVALS, **variables}

    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"no value for ${name} in {expr!r}"
        return values[name]

    out = re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, expr)
    assert "$" not in out, out
    return out


# ------------------------------------------------------------------------------ what the code exposes


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """Sample names a registry's families expose (``_total``, ``_bucket`` ... included), children or not."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("_count", "_sum", "_created"),
        "gauge": ("",),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def metric_names(text: str) -> set[str]:
    """The infergate metric (and recording rule) names mentioned in PromQL or YAML text."""
    return set(re.findall(r"\binfergate(?::[a-z0-9_]+)+|\binfergate_[a-z0-9_]+", text))
