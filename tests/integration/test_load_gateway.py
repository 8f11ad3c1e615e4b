"""The load harness against the real gateway: short closed- and open-loop runs give exact counts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.models import build_bench_registry
from gateway.config import GatewayConfig
from loadtests.__main__ import main
from loadtests.config import LoadConfig
from loadtests.run import run_load
from tests.servers import ServerThread

DESIGN_KEYS = {
    "requests",
    "ok",
    "errors",
    "duration_s",
    "throughput_rps",
    "rows_per_s",
    "goodput_rps",
    "latency_ms",
}
LATENCY_KEYS = {"p50", "p90", "p99", "p999", "max"}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bench_registry(tmp_path_factory.mktemp("load") / "registry", models=("tiny",))


@pytest.fixture(scope="module")
def gateway(registry: Path) -> Iterator[ServerThread]:
    server = ServerThread(GatewayConfig(registry, port=0, metrics_port=0))
    yield server
    server.stop()


def _config(gateway: ServerThread, registry: Path, **kw: Any) -> LoadConfig:
    base: dict[str, Any] = dict(
        target=gateway.target, model="tiny", levels=(2,), duration_s=1.0, warmup_s=0.2, progress=False,
        input_source="reference", registry=registry,
        metrics_url=f"http://127.0.0.1:{gateway.server.metrics_port}/metrics",
    )  # fmt: skip
    base.update(kw)
    return LoadConfig(**base)


def _check(report: dict[str, Any], requests: int, rows: int = 1) -> None:
    assert set(report) >= DESIGN_KEYS
    assert set(report["latency_ms"]) >= LATENCY_KEYS
    assert report["errors"] == {}
    assert report["requests"] == report["ok"] == requests
    assert report["rows_per_s"] == pytest.approx(report["throughput_rps"] * rows)
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p99"] <= report["latency_ms"]["max"]
    assert report["environment"]["cpu_count"] >= 1


def test_closed_loop_request_bound(gateway: ServerThread, registry: Path) -> None:
    report = run_load(_config(gateway, registry, levels=(3,), requests=150, duration_s=60.0, rows=4))
    _check(report, 150, rows=4)
    server = report["server"]
    assert server["requests"]["OK"] >= 150 + report["warmup_requests"]
    batches = server["batch_size"]
    assert batches["mean"] * batches["count"] == pytest.approx(
        4 * server["requests"]["OK"]
    )  # rows, batched or not


def test_open_loop_fixed_rate_exact_count(gateway: ServerThread, registry: Path) -> None:
    report = run_load(
        _config(gateway, registry, mode="open", levels=(150.0,), processes=2, timeout_us=5_000_000)
    )
    _check(report, 150)  # 150 req/s for exactly 1 s of intended send times, split over 2 processes
    assert report["goodput"]["within_budget"] == 150


def test_stream_sweep(gateway: ServerThread, registry: Path) -> None:
    closed = run_load(_config(gateway, registry, stream=True, levels=(1, 4), requests=60, duration_s=30.0))
    _check(closed, 120)
    assert [s["requests"] for s in closed["steps"]] == [60, 60]
    opened = run_load(_config(gateway, registry, stream=True, mode="open", levels=(100.0,), poisson=True))
    assert opened["errors"] == {}
    assert opened["requests"] == opened["ok"] > 0


def test_cli_writes_json_and_plots(
    gateway: ServerThread, registry: Path, tmp_path: Path, capsys: Any
) -> None:
    out = tmp_path / "report.json"
    code = main(
        ["--target", gateway.target, "--model", "tiny", "--mode", "open", "--rate", "50,100",
         "--duration", "0.5", "--warmup", "0.1", "--json", str(out), "--plot", str(tmp_path / "plots"),
         "--label", "t-", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert report["requests"] == report["ok"] == 75
    assert len(report["steps"]) == 2
    assert report["input_source"] == "random"
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert pngs == ["t-latency_cdf.png", "t-latency_over_time.png", "t-throughput_vs_load.png"]
    assert "infergate-load: tiny" in capsys.readouterr().out


def test_unknown_model_fails_cleanly(gateway: ServerThread, capsys: Any) -> None:
    assert main(["--target", gateway.target, "--model", "nope", "--duration", "0.2", "--no-progress"]) == 1
    assert "nope" in capsys.readouterr().err
