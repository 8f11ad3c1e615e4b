"""The peers benchmark's head-to-head rounds (bench/peers/rounds.py): which server runs when, the per-round
ratios, and goal (c) taken from them instead of the one-server-at-a-time cells."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any

import pytest

from bench.peers import rounds
from bench.peers.launch import REFERENCE, SERVERS, server_spec
from bench.peers.process import ServerGroup, free_ports, wait_ready
from bench.peers.report import goals, render
from bench.peers.rounds import ROUND_CELLS, cell_key, measure_rounds, per_round, round_ratios
from bench.peers.run import Plan, _registries
from tests.unit.test_bench_peers import _results


def _rounds(table: dict[str, list[tuple[float, float]]]) -> dict[str, Any]:
    """Rounds of the mlp C=64 cell: per server, (req/s, p99) of each round; C=16 at half the req/s."""
    n = len(next(iter(table.values())))
    rounds: list[dict[str, dict[str, Any]]] = [{} for _ in range(n)]
    for key, series in table.items():
        for index, (rps, p99) in enumerate(series):
            rounds[index][key] = {
                cell_key("mlp", 1, 64): {"cell": "mlp-r1-c64", "rps": rps, "p99_ms": p99},
                cell_key("mlp", 1, 16): {"cell": "mlp-r1-c16", "rps": rps / 2, "p99_ms": p99 / 2},
            }
    return {"servers": list(table), "idle_busy": 0.03, "errors": {}, "rounds": rounds}


ROUNDS = _rounds(
    {
        "infergate": [(1300.0, 40.0), (1000.0, 50.0), (1500.0, 30.0)],
        "pytriton": [(1000.0, 50.0), (1000.0, 40.0), (1000.0, 60.0)],
        "mlserver": [(400.0, 90.0), (500.0, 80.0), (200.0, 90.0)],
        "mlserver-pw0": [(600.0, 70.0), (100.0, 90.0), (300.0, 95.0)],
        "echo": [(2600.0, 30.0), (2500.0, 32.0), (2700.0, 29.0)],
    }
) | {"labels": {"echo": "ECHO"}}


def test_round_ratios_divide_round_by_round_by_the_best_of_a_group() -> None:
    assert round_ratios(ROUNDS, "infergate", ("pytriton",), "mlp-r1-c64", "rps") == pytest.approx(
        [1.3, 1.0, 1.5]
    )
    best = round_ratios(ROUNDS, "infergate", ("mlserver", "mlserver-pw0"), "mlp-r1-c64", "rps")
    assert best == pytest.approx([1300 / 600, 1000 / 500, 1500 / 300])
    missing = {**ROUNDS, "rounds": [ROUNDS["rounds"][0], {"infergate": ROUNDS["rounds"][1]["infergate"]}]}
    assert round_ratios(missing, "infergate", ("pytriton",), "mlp-r1-c64", "rps") == [
        pytest.approx(1.3),
        None,
    ]
    assert per_round(None, "infergate", "mlp-r1-c64", "rps") == []


def test_goal_c_is_the_mean_of_the_per_round_ratios_when_the_run_has_rounds() -> None:
    results = _results() | {"rounds": ROUNDS}
    by_figure = {g.figure: g for g in goals(results)}
    c64 = by_figure["(c) mlp C=64 req/s ÷ PyTriton"]
    assert c64.value == pytest.approx((1.3 + 1.0 + 1.5) / 3)
    assert "mean of 3 alternating rounds (per round 1.30, 1.00, 1.50)" in c64.measured
    assert by_figure["(c) mlp C=64 req/s ÷ MLServer"].value == pytest.approx((1300 / 600 + 2.0 + 5.0) / 3)
    assert by_figure["(c) mlp C=64 p99 ÷ PyTriton p99"].value == pytest.approx((0.8 + 1.25 + 0.5) / 3)
    assert by_figure["(c) mlp C=16 req/s ÷ PyTriton"].value == pytest.approx((1.3 + 1.0 + 1.5) / 3)
    echo = by_figure["(c) mlp C=64 req/s, the echo ceiling ÷ PyTriton"]
    assert echo.value == pytest.approx(2.6)
    assert not echo.counted
    ceiling = by_figure["(c) mlp C=64 req/s, the echo ceiling ÷ best MLServer"]
    assert ceiling.value == pytest.approx((2600 / 600 + 2500 / 500 + 2700 / 300) / 3)
    assert (
        by_figure["(c) mlp C=64 req/s, infergate with its defaults ÷ PyTriton"].value is None
    )  # not in rounds
    # without rounds, the same results give the one-server-at-a-time figure
    assert {g.figure: g for g in goals(_results())}["(c) mlp C=64 req/s ÷ PyTriton"].value == pytest.approx(
        2.0 / 1.5
    )


def test_render_lists_each_round_per_server_and_the_idle_machine() -> None:
    text = render(_results() | {"rounds": ROUNDS})
    assert "### Head-to-head rounds (goal (c))" in text
    assert "the machine was 3% busy" in text
    assert "| INFERGATE | 1,300 · 40.00 | 1,000 · 50.00 | 1,500 · 30.00 |" in text
    assert "| PYTRITON | 650 · 30.00 |" not in text  # C=16 rows are their own table
    assert "**mlp, 1 row per request, C=16**" in text
    assert "| ECHO | 2,600 · 30.00 | 2,500 · 32.00 | 2,700 · 29.00 |" in text
    assert "### Head-to-head rounds" not in render(_results())


class _Server(contextlib.AbstractContextManager["_Server"]):
    def __init__(self, key: str, stopped: list[str]) -> None:
        self.key, self.stopped = key, stopped

    def __exit__(self, *exc: object) -> None:
        self.stopped.append(self.key)


def test_rounds_alternate_the_order_start_every_server_once_and_stop_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rounds, "IDLE_SAMPLE_S", 0.01)
    stopped: list[str] = []
    calls: list[tuple[str, str]] = []

    def start(spec_for: Any, plan: Plan, logs: Path) -> tuple[Any, Any, float]:
        key = spec_for()
        if key == "broken":
            raise RuntimeError("no venv")
        return key, _Server(key, stopped), 1.0

    def cell(plan: Plan, spec: str, model: str, rows: int, c: int, results: Path) -> dict[str, Any]:
        assert results == plan.results / spec / "rounds"
        calls.append((spec, cell_key(model, rows, c)))
        if spec == "b" and len(calls) > 8:
            raise OSError("server went away")
        return {"cell": cell_key(model, rows, c), "rps": 100.0, "p99_ms": 1.0}

    plan = Plan(registry=tmp_path, results=tmp_path / "out", rounds=3)
    keys = ["a", "b", "broken"]
    got = measure_rounds(
        {k: functools.partial(str, k) for k in keys}, plan, tmp_path, start=start, cell=cell, log=print
    )
    assert got["servers"] == ["a", "b"]
    assert "no venv" in got["errors"]["broken"]
    assert got["errors"]["b"] == "round 2: OSError: server went away"
    order = [spec for spec, _ in calls[:: len(ROUND_CELLS)]]
    assert order == ["a", "b", "b", "a", "a", "b"]  # reversed in odd rounds
    assert [name for _, name in calls[: len(ROUND_CELLS)]] == [cell_key(*c) for c in ROUND_CELLS]
    assert sorted(stopped) == ["a", "b"]
    assert len(got["rounds"]) == 3
    assert "b" not in got["rounds"][2]
    assert got["idle_busy"] is None or 0.0 <= got["idle_busy"] <= 1.0


def test_the_echo_reference_starts_on_loopback_and_answers_readiness(tmp_path: Path) -> None:
    registries = _registries(tmp_path / "work")
    spec = server_spec(
        REFERENCE, free_ports(3), registries=registries, venvs=tmp_path, work=tmp_path / "work"
    )
    assert spec.kind == "echo"
    assert spec.target.startswith("127.0.0.1:")
    assert REFERENCE not in SERVERS  # never part of the one-server-at-a-time sweep
    group = ServerGroup(spec.key, spec.command, tmp_path / "echo.log")
    with group:
        group.start()
        assert wait_ready(group, spec.target, ["tiny", "mlp"], timeout_s=60) >= 0.0
