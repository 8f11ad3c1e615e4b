"""Goal (e) of the hotpath benchmark section, overload, from a hand-written results dict (no server runs):
goodput against the capacity probed around the steps, the tuned gateway's stream sizing, lateness and
fast refusals from the client's latencies, and the refusal-cost table."""

from __future__ import annotations

from typing import Any

import pytest

from bench.hotpath_md import goals, render
from bench.hotpath_overload import (
    SERVERS,
    beyond_deadline,
    fast_share,
    stream_cap,
    tuned_flags,
)
from bench.hotpath_refusals import goodput_bound
from tests.unit.hotpath_results import (
    by_figure,
    find_goal,
    make_run,
    make_step,
    sample_results,
)


def test_overload_goals_per_gateway_and_scenario_and_a_step_that_never_ran() -> None:
    found = by_figure(sample_results())
    tiny = "(e) gateway, defaults, tiny, 1 row per call"
    assert find_goal(found, f"{tiny}: goodput at 2x") == (pytest.approx(600 / 700), "≥ 0.8", "met")
    assert find_goal(found, f"{tiny}: goodput at 4x") == (pytest.approx(500 / 700), "≥ 0.7", "met")
    # the worst latency past the deadline: an error answered 55 ms after its intended send, 5 ms late
    assert find_goal(found, f"{tiny}: largest latency past") == (pytest.approx(5.0), "≤ 10", "met")
    assert find_goal(found, f"{tiny}: RSS growth") == (pytest.approx(30.0), "≤ 20", "missed")
    tuned = f"(e) {SERVERS['tuned']}, tiny, 1 row per call"
    assert find_goal(found, f"{tuned}: goodput at 2x") == (pytest.approx(300 / 700), "≥ 0.8", "missed")
    assert find_goal(found, f"{tuned}: goodput at 4x") == (None, "≥ 0.7", "-")
    assert find_goal(found, f"{tuned}: RSS growth") == (None, "≤ 20", "-")
    mlp = "(e) gateway, defaults, mlp, 32 rows per call"
    assert find_goal(found, f"{mlp}: goodput at 2x") == (pytest.approx(0.2), "≥ 0.8", "missed")
    tuned_mlp = f"(e) {SERVERS['tuned']}, mlp, 32 rows per call"
    assert find_goal(found, f"{tuned_mlp}: goodput at 2x") == (pytest.approx(0.95), "≥ 0.8", "met")
    assert find_goal(found, f"{tuned_mlp}: goodput at 4x") == (pytest.approx(0.9), "≥ 0.7", "met")
    assert find_goal(found, f"{tuned_mlp}: RSS growth") == (pytest.approx(1.0), "≤ 20", "met")
    echo = [g for g in goals(sample_results()) if g.figure.startswith("(e) echo")]
    assert [g.counted for g in echo] == [False, False]
    assert echo[0].value == pytest.approx(400 / 1200)
    assert not [g for g in goals(sample_results()) if g.figure.startswith("(e) echo") and "mlp" in g.figure]


def test_a_step_where_the_client_fell_behind_says_so() -> None:
    found = {g.figure: g.measured for g in goals(sample_results())}
    (measured,) = [
        v for k, v in found.items() if k.startswith(f"(e) {SERVERS['tuned']}, mlp") and "goodput at 4x" in k
    ]
    assert "client behind: send lag p99" in measured
    assert measured.startswith("90 ÷ 100 (--max-concurrent-streams 2)")
    text = render(sample_results())
    assert f"{SERVERS['tuned']} on mlp32 at 4x (send lag p99" in text


@pytest.mark.parametrize(
    ("capacity", "streams"),
    [
        (9000.0, 64), (5119.0, 64), (3405.0, 64), (2560.0, 64), (2559.0, 32), (1919.0, 32),
        (1279.0, 16), (658.0, 16), (639.0, 8), (479.0, 8), (319.0, 4), (40.0, 1), (5.0, 1),
    ],
)  # fmt: skip
def test_streams_are_half_a_budget_of_capacity_rounded_down_to_a_power_of_two_at_most_64(
    capacity: float, streams: int
) -> None:
    assert stream_cap(capacity, 50.0) == streams
    cap = str(streams)
    assert tuned_flags(capacity, 50.0) == (
        "--max-concurrent-streams", cap, "--max-pending-calls", cap, "--max-concurrency", "0",
    )  # fmt: skip


def test_tuned_ratios_divide_by_the_highest_probe_around_their_steps() -> None:
    results = sample_results()
    results["runs"] |= {
        "again-mlp32-probe": make_run("again-mlp32-probe", make_step(80, rows=32)),
        "again-mlp32-probe-round2": make_run("again-mlp32-probe-round2", make_step(90, rows=32)),
        "again-mlp32-after": make_run("again-mlp32-after", make_step(120, rows=32)),
    }
    entry = results["overload"]["mlp32"]["tuned"]
    entry |= {"capacity_rps": 90.0, "capacity_from": "again-mlp32-probe-round2", "after": "again-mlp32-after"}
    entry["probes"] = ["again-mlp32-probe", "again-mlp32-probe-round2"]
    found = by_figure(results)
    tuned_mlp = f"(e) {SERVERS['tuned']}, mlp, 32 rows per call"
    # the probe after the steps (120) is the highest: 95 ÷ 120, not 95 ÷ 90
    assert find_goal(found, f"{tuned_mlp}: goodput at 2x") == (pytest.approx(95 / 120), "≥ 0.8", "missed")
    text = render(results)
    assert "| capacity: again-mlp32-probe-round2; flags" in text
    assert "(probes 80 / 90; after the steps 120) | - | - | - | 120 req/s |" in text
    # when the probe after is lower, the rates' own capacity stays the divisor
    results["runs"]["again-mlp32-after"] = make_run("again-mlp32-after", make_step(60, rows=32))
    found = by_figure(results)
    assert find_goal(found, f"{tuned_mlp}: goodput at 2x") == (pytest.approx(95 / 90), "≥ 0.8", "met")


def test_fast_refusals_and_lateness_read_the_client_figures() -> None:
    fast = make_step(10, error_ms=(1, 2, 3, 55))
    share = fast_share(fast)
    assert share is not None
    assert 0.74 <= share <= 0.76
    assert fast_share(make_step(10)) is None  # no errors: no share
    assert fast_share(make_step(10, error_ms=(20,))) == 0.0
    assert beyond_deadline(make_step(10, ok_ms=(70,)), 50.0) == pytest.approx(20.0)
    assert beyond_deadline(make_step(10, ok_ms=(5,)), 50.0) == pytest.approx(-45.0)  # all within it
    assert beyond_deadline(None, 50.0) is None


def test_overload_text_names_the_load_client_that_drove_it() -> None:
    from bench.hotpath_overload_md import client_kind

    native = {"overload": {"tiny": {"defaults": {"client": "native"}, "echo": {"client": "native"}}}}
    assert "--native-client" in client_kind(native)
    older = {"overload": {"tiny": {"defaults": {"capacity_rps": 1.0}}}}  # results from before the engine
    assert "Python gRPC" in client_kind(older)
    assert "Python gRPC" in client_kind({"overload": None})


def test_goodput_bound_is_the_core_budget_left_after_refusals() -> None:
    assert goodput_bound(2, 0.0) == 1.0  # free refusals: the whole core serves
    assert goodput_bound(4, 0.1) == pytest.approx((1 - 0.4) / 0.9)
    assert goodput_bound(4, 0.3) == 0.0  # refusing 4x would take more than the core
    assert goodput_bound(2, None) is None
    assert goodput_bound(2, 1.0) is None  # a refusal costing a served call's share says nothing


def test_refusal_table_puts_the_bound_beside_the_measured_goodput() -> None:
    results = sample_results()
    assert "What a refusal costs" not in render(results)  # results from before this step render without it
    pending = {"label": "refusals-pending-2x", "rate": 1400.0, "calls": 7000, "cpu_s": 0.7}
    pending["us_per_call"] = 100.0
    results["refusals"] = {"capacity_rps": 700.0, "pending": {"2": pending}, "streams": {}}
    text = render(results)
    # r = 100 µs x 700/s = 0.07; bound (1 - 0.14) / 0.93 = 0.92; measured at 2x: defaults 600 ÷ 700 = 0.86,
    # tuned 300 ÷ 700 = 0.43, each from its own overload entry
    assert (
        "| gRPC core's pending-call limit (CANCELLED) | 2x | 1,400 | 7000 | 0.70 | 100.0 | 0.14 | 0.070 "
        "| 0.92 | 0.86 | 0.43 |"
    ) in text
    assert "c = 700 req/s" in text


def test_the_capacity_line_lists_every_probe_beside_the_highest() -> None:
    results = sample_results()
    results["runs"]["defaults-tiny-probe-round2"] = make_run("defaults-tiny-probe-round2", make_step(650))
    text = render(results)
    assert (
        "| tiny | gateway, defaults | capacity: defaults-tiny-probe (probes 700 / 650) | - | - | - "
        "| 700 req/s" in text
    )


def _with_rounds(
    results: dict[str, Any], goodput_2x: tuple[float, ...], probes_after: tuple[float, ...]
) -> dict[str, Any]:
    """The tuned tiny entry as rounds: probe 700 before, 2x steps of ``goodput_2x``, a probe after each
    round of ``probes_after``; 4x steps at 500/s, the last round's answered 70 ms after its intended send."""
    entry = results["overload"]["tiny"]["tuned"]
    entry |= {"probes": ["again-tiny-probe"], "capacity_rps": 700.0, "rounds": []}
    results["runs"]["again-tiny-probe"] = make_run("again-tiny-probe", make_step(700))
    before = "again-tiny-probe"
    for index, (good, probe) in enumerate(zip(goodput_2x, probes_after, strict=True)):
        suffix = "" if index == 0 else f"-round{index + 1}"
        late = (70,) if index == len(goodput_2x) - 1 else (1,)
        steps = {"2": f"tuned-tiny-2x{suffix}", "4": f"tuned-tiny-4x{suffix}"}
        results["runs"][steps["2"]] = make_run(steps["2"], make_step(good, goodput=good, offered=1400))
        results["runs"][steps["4"]] = make_run(steps["4"], make_step(500, goodput=500, ok_ms=late))
        after = f"again-tiny-after{suffix}"
        results["runs"][after] = make_run(after, make_step(probe))
        entry["rounds"].append({"steps": steps, "before": before, "after": after})
        before = after
    entry.pop("steps")  # as bench.hotpath saves it: rounds only
    entry["rss_kib"] = [100000] * (1 + 2 * len(goodput_2x))
    return results


def test_rounds_are_judged_by_the_median_of_goodput_over_the_probes_around_each() -> None:
    # round capacities: (700 + 500) / 2 = 600, (500 + 900) / 2 = 700, (900 + 700) / 2 = 800
    results = _with_rounds(sample_results(), (540.0, 140.0, 720.0), (500.0, 900.0, 700.0))
    found = by_figure(results)
    tuned = f"(e) {SERVERS['tuned']}, tiny, 1 row per call"
    # 2x: 540/600 = 0.9, 140/700 = 0.2 (a stalled round), 720/800 = 0.9: the median is 0.9
    assert find_goal(found, f"{tuned}: goodput at 2x") == (pytest.approx(0.9), "≥ 0.8", "met")
    # 4x: 500/600, 500/700, 500/800: the median 0.714
    assert find_goal(found, f"{tuned}: goodput at 4x") == (pytest.approx(500 / 700), "≥ 0.7", "met")
    # every round's steps count for lateness: the last round's 4x answered 20 ms past the deadline
    assert find_goal(found, f"{tuned}: largest latency past") == (pytest.approx(20.0), "≤ 10", "missed")
    measured = {g.figure: g.measured for g in goals(results)}
    (text,) = [v for k, v in measured.items() if k.startswith(f"{tuned}: goodput at 2x")]
    assert text.startswith("rounds 0.90 / 0.20 / 0.90 (goodput ÷ the probes around each), median")
    table = render(results)
    # what each step offered ÷ its round's capacity: 1,400 ÷ 700 in round 2, ÷ 600 in round 1 (the host
    # slower over round 1 than its rate assumed)
    assert "| 2x, round 2 (capacity 700; offered 2.00x) | 1,400 | 140 | 0.20 |" in table
    assert "| 2x, round 1 (capacity 600; offered 2.33x) | 1,400 | 540 | 0.90 |" in table
    assert "(probes 700; after each round 500 / 900 / 700) | - | - | - | 700 req/s |" in table
    assert "then 3 rounds (the echo server: one)" in table  # the rounds these results ran, not ROUNDS
    assert "| tiny | gateway, tuned for overload | rates: defaults-tiny-probe; flags" in table
    for round_ in results["overload"]["tiny"]["tuned"]["rounds"]:  # as saved since rates follow the probes
        round_["rate_rps"] = 700.0
    text = render(results)
    assert "| tiny | gateway, tuned for overload | highest probe: defaults-tiny-probe; flags" in text


def test_a_round_that_never_ran_leaves_the_median_to_those_that_did() -> None:
    results = _with_rounds(sample_results(), (540.0, 720.0), (500.0, 900.0))
    entry = results["overload"]["tiny"]["tuned"]
    del results["runs"][entry["rounds"][1]["steps"]["2"]]
    entry["rounds"][1]["steps"].pop("2")
    found = by_figure(results)
    tuned = f"(e) {SERVERS['tuned']}, tiny, 1 row per call"
    assert find_goal(found, f"{tuned}: goodput at 2x") == (pytest.approx(0.9), "≥ 0.8", "met")
    # without any round measured, nothing is judged
    for round_ in entry["rounds"]:
        round_["steps"] = {}
    assert find_goal(by_figure(results), f"{tuned}: goodput at 2x") == (None, "≥ 0.8", "-")
