"""The sampling benchmark section's goals, from a hand-written results dict (no server runs): each ratio
comes from the runs it names, summed over both rounds where the goal says so."""

from __future__ import annotations

from typing import Any

import pytest

from bench.kit import Measured
from bench.sampling_figures import goals


def _run(label: str, rps: float, p99: float = 5.0) -> dict[str, Any]:
    report = {"throughput_rps": rps, "steps": [{"latency_ms": {"p50": 1.0, "p99": p99}}]}
    return Measured(label, report, f"infergate-load {label}", (1.0, 0.5, 0.25)).to_json()


def _results(rounds: int = 2) -> dict[str, Any]:
    """Results as saved; with ``rounds`` 4, as saved since the closed loop runs 4 rounds and the dead
    gateway 2 (the values of rounds 3 and 4 repeat rounds 1 and 2)."""
    rps = {
        "closed-off-r1": 1000.0,
        "closed-off-r2": 1000.0,
        "closed-5-r1": 990.0,
        "closed-5-r2": 960.0,
        "closed-100-r1": 900.0,
        "closed-100-r2": 880.0,
        "closed-dead": 960.0,
        "closed-off-after-kill": 1000.0,
    }
    if rounds == 4:
        for side in ("off", "5", "100"):
            for r in (3, 4):
                rps[f"closed-{side}-r{r}"] = rps[f"closed-{side}-r{r - 2}"]
        rps["closed-dead-r1"] = rps.pop("closed-dead")
        rps["closed-dead-r2"] = 900.0
        rps["closed-off-after-kill-r1"] = rps.pop("closed-off-after-kill")
        rps["closed-off-after-kill-r2"] = 980.0
    runs = {label: _run(label, value) for label, value in rps.items()}
    for side, p99 in (("open-off", 4.0), ("open-5", 4.2), ("open-100", 8.0)):
        for r in (1, 2):
            runs[f"{side}-r{r}"] = _run(f"{side}-r{r}", 500.0, p99)
    return {"runs": runs, "cpu": {"monitor_cpu_s": 0.5, "rows": 10_000}}


def test_five_percent_sampling_is_held_to_a_three_percent_throughput_cost_over_both_rounds() -> None:
    found = {g.figure: g for g in goals(_results())}
    (label,) = [k for k in found if k.startswith("throughput, sampling 5 %")]
    goal = found[label]
    assert goal.value == pytest.approx(1950 / 2000)
    assert "per round 0.99, 0.96" in label
    assert (goal.goal, goal.verdict) == ("≥ 0.97", "met")
    results = _results()
    results["runs"]["closed-5-r2"] = _run("closed-5-r2", 930.0)
    goal = next(g for g in goals(results) if g.figure.startswith("throughput, sampling 5 %"))
    assert goal.value == pytest.approx(1920 / 2000)
    assert goal.verdict == "missed"
    hundred = next(g for g in goals(results) if g.figure.startswith("throughput, sampling 100 %"))
    assert hundred.value == pytest.approx(1780 / 2000)


def test_four_closed_rounds_are_summed_and_the_dead_gateway_reads_both_of_its_rounds() -> None:
    found = {g.figure.partition(" (")[0]: g for g in goals(_results(rounds=4))}
    five = found["throughput, sampling 5 % ÷ off"]
    assert five.value == pytest.approx(3900 / 4000)
    assert "sum of 4 rounds; per round 0.99, 0.96, 0.99, 0.96" in five.figure
    hundred = found["throughput, sampling 100 % ÷ off"]
    assert hundred.value == pytest.approx(3560 / 4000)
    assert hundred.verdict == "missed"
    dead = found["throughput, 100 % with the monitor killed ÷ the sampling-off runs around it"]
    assert dead.value == pytest.approx((960 + 900) / (1000 + 980))
    assert dead.verdict == "missed"
    mean = found["throughput, 100 % with the monitor killed ÷ mean of the 6 sampling-off runs"]
    assert mean.value == pytest.approx(930 / (5000 + 980) * 6)


def test_results_saved_with_two_rounds_read_the_dead_gateway_against_the_off_run_after_it() -> None:
    found = {g.figure.partition(" (")[0]: g for g in goals(_results())}
    dead = found["throughput, 100 % with the monitor killed ÷ the sampling-off run right after it"]
    assert dead.value == pytest.approx(0.96)
    assert dead.verdict == "met"
    assert "sum of 2 rounds" in found["throughput, sampling 100 % ÷ off"].figure


def test_the_control_gateway_joins_the_off_side_and_reads_against_the_first() -> None:
    results = _results(rounds=4)
    for r, rps in zip((1, 2, 3, 4), (900.0, 1100.0, 950.0, 1050.0), strict=True):
        results["runs"][f"closed-offb-r{r}"] = _run(f"closed-offb-r{r}", rps)
    found = {g.figure.partition(" (")[0]: g for g in goals(results)}
    control = found["control: throughput of the second sampling-off gateway ÷ the first"]
    assert control.value == pytest.approx(4000 / 4000)
    assert "per round 0.90, 1.10, 0.95, 1.05" in control.figure
    assert control.verdict == "-"
    five = found["throughput, sampling 5 % ÷ off"]
    assert five.value == pytest.approx(3900 / 4000)  # the off side is the two gateways' mean
    assert "per round 1.04, 0.91, 1.02, 0.94" in five.figure
    mean = found["throughput, 100 % with the monitor killed ÷ mean of the 10 sampling-off runs"]
    assert mean.value == pytest.approx(930 / ((4000 + 4000 + 1000 + 980) / 10))


def test_the_monitor_cpu_figure_is_microseconds_per_sampled_row() -> None:
    found = {g.figure: g for g in goals(_results())}
    assert found["monitor CPU µs per sampled row"].value == pytest.approx(50.0)  # 0.5 s ÷ 10,000 rows
