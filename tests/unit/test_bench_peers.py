"""The peers benchmark's own logic, without the peers' venvs: each server's batch figure from its metrics,
ratios, goals and the rendered section, the servers' settings, and the process group that never leaves a
process behind."""

from __future__ import annotations

import json
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from bench.peers.launch import SERVERS, TUNED_TOML, server_spec
from bench.peers.metrics import mean_batch, parse
from bench.peers.process import ServerGroup, StartError, free_ports, group_pids, wait_ready
from bench.peers.report import cell_text, goals, ratios, render
from bench.peers.run import Plan, cells
from bench.sections import load_section
from registry.config import parse_model_config

TRITON_BEFORE = """\
# HELP nv_inference_count Number of inferences performed
# TYPE nv_inference_count counter
nv_inference_count{model="mlp",version="1"} 100
nv_inference_count{model="tiny",version="1"} 7
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{model="mlp",version="1"} 50
nv_inference_exec_count{model="tiny",version="1"} 7
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="mlp",version="1"} 100
"""
TRITON_AFTER = TRITON_BEFORE.replace("} 100", "} 3293").replace("} 50", "} 990")


def test_triton_mean_batch_is_inferences_per_execution() -> None:
    before, after = parse(TRITON_BEFORE), parse(TRITON_AFTER)
    assert mean_batch("triton", before, after, "mlp") == pytest.approx(3193 / 940)
    assert mean_batch("triton", before, after, "tiny") is None  # no execution in between


def test_triton_falls_back_to_requests_times_rows() -> None:
    drop = "nv_inference_count{"
    before = parse("\n".join(x for x in TRITON_BEFORE.splitlines() if drop not in x) + "\n")
    after = parse("\n".join(x for x in TRITON_AFTER.splitlines() if drop not in x) + "\n")
    assert mean_batch("triton", before, after, "mlp", rows_per_request=32) == pytest.approx(3193 * 32 / 940)


def test_mlserver_histogram_that_appears_on_first_use_counts_from_zero() -> None:
    after = parse(
        "# TYPE peer_batch_rows histogram\n"
        'peer_batch_rows_bucket{le="+Inf",model_name="mlp"} 40.0\n'
        'peer_batch_rows_count{model_name="mlp"} 40.0\n'
        'peer_batch_rows_sum{model_name="mlp"} 100.0\n'
    )
    assert mean_batch("mlserver", parse(""), after, "mlp") == pytest.approx(2.5)
    assert mean_batch("mlserver", parse(""), after, "tiny") is None


def test_infergate_batch_histogram_and_missing_scrapes() -> None:
    text = (
        "# TYPE infergate_batch_size histogram\n"
        'infergate_batch_size_bucket{le="+Inf",model="tiny",version="1"} {n}\n'
        'infergate_batch_size_count{model="tiny",version="1"} {n}\n'
        'infergate_batch_size_sum{model="tiny",version="1"} {s}\n'
    )
    before = parse(text.replace("{n}", "10").replace("{s}", "10"))
    after = parse(text.replace("{n}", "30").replace("{s}", "70"))
    assert mean_batch("infergate", before, after, "tiny") == pytest.approx(3.0)
    assert mean_batch("infergate", None, after, "tiny") is None
    assert mean_batch("unknown-kind", before, after, "tiny") is None


def _cell(model: str, rows: int, c: int, rps: float, p99: float, batch: float | None = 2.0) -> dict[str, Any]:
    return {
        "model": model, "rows": rows, "concurrency": c, "rps": rps, "p50_ms": p99 / 2, "p99_ms": p99,
        "mean_batch": batch, "errors": {}, "load_average": 1.5, "machine_cpu_busy": 0.9,
    }  # fmt: skip


def _server(key: str, scale: float, overload: dict[str, Any] | None = None) -> dict[str, Any]:
    grid = [("tiny", 1, c) for c in (1, 16, 64)] + [("mlp", 1, c) for c in (1, 16, 64)]
    grid += [("mlp", 32, c) for c in (1, 16)]
    return {
        "key": key, "label": key.upper(), "config": f"{key} settings", "ready_s": 2.0, "error": None,
        "cells": [_cell(m, r, c, 100.0 * scale * c**0.5, 10.0 / scale) for m, r, c in grid],
        "overload": overload,
    }  # fmt: skip


def _results() -> dict[str, Any]:
    overload = {
        "capacity_rps": 1000.0, "offered_rps": 2000.0, "goodput_rps": 850.0, "goodput_fraction": 0.85,
        "p99_ms": 40.0, "max_ms": 49.0, "error_max_ms": 58.0, "error_p50_ms": 1.0, "errors": {"X": 3},
        "budget_ms": 50.0, "pinned": True, "server_cpus": [0], "client_cpus": [1], "load_average": 1.0,
        "machine_cpu_busy": 0.5,
    }  # fmt: skip
    broken: dict[str, Any] = {
        "key": "mlserver-pw0",
        "label": "MLSERVER-PW0",
        "config": "pw0",
        "cells": [],
        "overload": None,
    }
    return {
        "plan": vars(Plan(registry=Path("r"), results=Path("out"))) | {"registry": "r", "results": "out"},
        "results": "bench-out/results/peers",
        "servers": [
            _server("infergate", 2.0, overload),
            _server("infergate-defaults", 1.0),
            _server("pytriton", 1.5, {**overload, "goodput_rps": 10.0, "goodput_fraction": 0.01}),
            _server("mlserver", 0.5),
            {**broken, "error": "did not start: venv missing"},
        ],
        "plots": ["mlp-rows1.png"],
        "plot_titles": {"mlp-rows1.png": "mlp, 1 row per request"},
        "meta": {"command": "python -m bench peers", "environment": {"cpu_count": 2, "git_commit": "abc"}},
    }


def test_ratios_divide_each_infergate_row_by_each_peer_cell_by_cell() -> None:
    rows = {(r["num"], r["den"]): r for r in ratios(_results())}
    assert set(rows) == {
        (n, d) for n in ("infergate", "infergate-defaults") for d in ("pytriton", "mlserver", "mlserver-pw0")
    }
    rps, p99 = rows[("infergate", "pytriton")]["cells"][("mlp", 1, 64)]
    assert rps == pytest.approx(2.0 / 1.5)
    assert p99 == pytest.approx(1.5 / 2.0)
    assert rows[("infergate", "pytriton")]["goodput"] == pytest.approx(85.0)
    assert rows[("infergate", "mlserver-pw0")]["cells"][("tiny", 1, 1)] == (None, None)  # never started
    assert rows[("infergate-defaults", "mlserver")]["goodput"] is None  # no overload measured


def test_goals_use_the_tuned_row_pytriton_and_the_best_mlserver() -> None:
    by_figure = {g.figure: g for g in goals(_results())}
    c64 = by_figure["(c) mlp C=64 req/s ÷ PyTriton"]
    assert c64.value == pytest.approx(2.0 / 1.5)
    assert c64.verdict == "met"
    assert by_figure["(c) mlp C=64 req/s ÷ MLServer"].value == pytest.approx(4.0)
    assert by_figure["(c) mlp C=16 req/s ÷ PyTriton"].verdict == "missed"
    assert by_figure["(c) mlp C=64 p99 ÷ PyTriton p99"].verdict == "met"
    assert by_figure["(e) goodput at 2x overload ÷ capacity"].verdict == "met"
    late = by_figure["(e) longest call past the deadline, ms"]
    assert late.value == pytest.approx(8.0)
    assert late.verdict == "met"
    assert not by_figure["(e) PyTriton goodput at 2x ÷ capacity"].counted


def test_goals_without_measurements_are_not_measured() -> None:
    results = _results()
    results["servers"] = [s for s in results["servers"] if s["key"] != "pytriton"]
    by_figure = {g.figure: g for g in goals(results)}
    assert by_figure["(c) mlp C=64 req/s ÷ PyTriton"].value is None
    assert by_figure["(c) mlp C=64 req/s ÷ PyTriton"].verdict == "-"


def test_render_shows_every_server_cell_ratio_failure_and_plot() -> None:
    text = render(_results())
    assert "<!--" not in text  # the writer adds the markers
    assert "## Peers: infergate beside PyTriton and MLServer" in text
    assert "Measured by `python -m bench peers`" in text
    for label in ("INFERGATE", "INFERGATE-DEFAULTS", "PYTRITON", "MLSERVER", "MLSERVER-PW0"):
        assert f"| {label} |" in text
    assert "did not start: venv missing" in text
    assert "| INFERGATE ÷ PYTRITON | " in text
    assert "[mlp, 1 row per request](docs/bench/peers/mlp-rows1.png)" in text
    assert "1-minute load average before each one 1.50 to 1.50" in text
    assert "| MLSERVER-PW0 | - | - | - |" in text
    assert "| INFERGATE | 1,000 | 1,600 | 2,000 | 850 | 0.85 | 40.00 | X 3 | 1.00 | 58.00 |" in text


def test_cell_text_formats_and_marks_errors() -> None:
    assert cell_text(None) == "-"
    cell = _cell("mlp", 1, 16, 1234.4, 9.0, batch=None) | {"errors": {"DEADLINE_EXCEEDED": 3}}
    assert cell_text(cell) == "**1,234** · 4.50 / 9.00 · - (3 errors)"


def test_cells_cover_single_row_and_multi_row_requests() -> None:
    plan = Plan(registry=Path("r"), results=Path("o"), concurrency=(1, 64), batch_concurrency=(16,))
    assert cells(plan) == [("tiny", 1, 1), ("tiny", 1, 64), ("mlp", 1, 1), ("mlp", 1, 64), ("mlp", 32, 16)]


def test_servers_share_the_peers_settings_and_bind_loopback(tmp_path: Path) -> None:
    tuned = parse_model_config(tomllib.loads(TUNED_TOML))
    assert (tuned.batching.max_batch_size, tuned.batching.max_queue_delay_ms) == (128, 0.5)
    assert (tuned.runtime.intra_op_threads, tuned.sampling.rate) == (1, 0.0)
    registries = {"tuned": tmp_path / "tuned", "defaults": tmp_path / "defaults"}
    specs = {
        key: server_spec(key, [1001, 1002, 1003], registries=registries, venvs=tmp_path, work=tmp_path)
        for key in SERVERS
        if key != "pytriton"  # needs the peer interpreter for its LIBDIR
    }
    for spec in specs.values():
        assert spec.target == "127.0.0.1:1001"
        assert spec.metrics_url == "http://127.0.0.1:1002/metrics"
    assert "--no-sampling" in specs["infergate"].command
    assert str(registries["defaults"].resolve()) in specs["infergate-defaults"].command
    settings = {k: json.loads(specs[k].files["settings.json"]) for k in ("mlserver", "mlserver-pw0")}
    assert "parallel_workers" not in settings["mlserver"]  # MLServer's default
    assert settings["mlserver-pw0"]["parallel_workers"] == 0
    assert settings["mlserver"]["host"] == "127.0.0.1"
    model = json.loads(specs["mlserver"].files["mlp/model-settings.json"])
    assert (model["max_batch_size"], model["max_batch_time"]) == (128, 0.0005)
    assert model["inputs"][0]["shape"] == [-1, 256]


def test_peers_section_is_registered_and_runs_only_when_named() -> None:
    section = load_section("peers")
    assert not section.default


def test_server_group_stops_every_process_it_spawned(tmp_path: Path) -> None:
    script = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    )
    group = ServerGroup("sleeper", [sys.executable, "-c", script], tmp_path / "log")
    with group:
        group.start()
        assert group.proc is not None
        pgid = group.proc.pid
        while len(group_pids(pgid)) < 2:  # the grandchild joins the group; bounded by pytest-timeout
            assert group.running
            time.sleep(0.01)
    assert group_pids(pgid) == []
    assert not group.running


def test_wait_ready_fails_fast_when_the_server_exits(tmp_path: Path) -> None:
    group = ServerGroup("quitter", [sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "log")
    (port,) = free_ports(1)
    with group:
        group.start()
        assert group.proc is not None
        group.proc.wait(30)
        with pytest.raises(StartError, match="quitter exited before it was ready"):
            wait_ready(group, f"127.0.0.1:{port}", ["tiny"], timeout_s=60)
