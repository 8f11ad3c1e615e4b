"""The hotpath benchmark section's goals and markdown, from a hand-written results dict (no server runs):
every ratio comes from the runs it names, overload figures from the client's latencies and the server's
RSS, and the section is registered right after ``load``."""

from __future__ import annotations

from typing import Any

import pytest

from bench import hotpath_md
from bench.hotpath_md import goals, render
from bench.hotpath_overload import (
    LEGACY_TUNED_FLAGS,
    SERVERS,
    beyond_deadline,
    fast_share,
    stream_cap,
    tuned_flags,
)
from bench.hotpath_refusals import goodput_bound
from bench.kit import Measured, round_label
from bench.runner import build_parser
from bench.sections import REGISTRY, load_section
from loadtests.figures import summary_figures
from loadtests.recorder import Recorder
from loadtests.status import OK

MS = 1_000_000
RESOURCE_EXHAUSTED = 8


def _step(
    rps: float,
    *,
    ok_ms: tuple[int, ...] = (1, 2),
    error_ms: tuple[int, ...] = (),
    rows: int = 1,
    goodput: float | None = None,
    batch: float | None = None,
    offered: float = 64,
    lag_ms: int = 0,
) -> dict[str, Any]:
    rec = Recorder(measure_ns=0, window_ns=100 * MS, budget_ns=50 * MS)
    for i, ms in enumerate(ok_ms):
        rec.add(i * MS, (i + lag_ms) * MS, (i + ms) * MS, OK)
    for i, ms in enumerate(error_ms):
        rec.add(i * MS, i * MS, (i + ms) * MS, RESOURCE_EXHAUSTED)
    rec.fold()
    step = summary_figures(rec.summary, measure_ns=0, rows=rows, budget_ms=50.0)
    step.update(
        throughput_rps=rps,
        rows_per_s=rps * rows,
        goodput_rps=rps if goodput is None else goodput,
        offered=offered,
        client={"cpu_cores": [0.75], "machine_cpu_busy": 0.5},
        server={"batch_size": {"mean": batch}, "shed": {"concurrency_limit": len(error_ms)}},
    )
    return step


def _run(label: str, step: dict[str, Any]) -> dict[str, Any]:
    keys = ("throughput_rps", "rows_per_s", "goodput_rps", "errors")
    report = {"steps": [step], **{k: step[k] for k in keys}, "parameters": {"duration_s": 4, "warmup_s": 1}}
    return Measured(label, report, f"infergate-load {label}", (1.0, 0.5, 0.25)).to_json()


def _overload(
    capacity: float,
    server: str,
    scenario: str,
    factors: tuple[int, ...],
    rss: list[int | None],
    probe: str = "",
) -> dict[str, Any]:
    """One server's overload entry as bench.hotpath saves it (``probe``: whose capacity it was offered)."""
    return {
        "capacity_rps": capacity,
        "capacity_from": f"{probe or server}-{scenario}-probe",
        "steps": {str(f): f"{server}-{scenario}-{f}x" for f in factors},
        "rss_kib": rss,
    }


def _results() -> dict[str, Any]:
    steps = {
        "echo-tiny-c64": _step(1000),
        "defaults-tiny-c64": _step(850),
        "echo-tiny-c1": _step(500, ok_ms=(1, 1, 1)),
        "defaults-tiny-c1": _step(300, ok_ms=(2, 2, 2)),
        "defaults-mlp-c64": _step(600, batch=12.0),
        "defaults-mlp-r32-c16": _step(100, rows=32, batch=48.0),
        "peers-tiny-c64": _step(800),
        "peers-mlp-c64": _step(700, batch=20.0),
        "threads2-tiny-c64": _step(700),
        "threads2-mlp-c64": _step(500),
        "echo-tiny-probe": _step(1200),
        "echo-tiny-2x": _step(400, error_ms=(60, 70)),
        "echo-tiny-4x": _step(300, ok_ms=(30,), error_ms=(80,), lag_ms=25),
        "defaults-tiny-probe": _step(700),
        "defaults-tiny-2x": _step(600, goodput=600, ok_ms=(10, 40), error_ms=(1, 2, 3, 55), offered=1400),
        "defaults-tiny-4x": _step(550, goodput=500, ok_ms=(20, 30), error_ms=(1, 1), offered=2800),
        "tuned-tiny-2x": _step(300, goodput=300, error_ms=(1,)),
        # tuned-tiny-4x never ran: its figures are None, its verdicts "-"
        "defaults-mlp32-probe": _step(100, rows=32),
        "defaults-mlp32-2x": _step(20, goodput=20, offered=200),
        "defaults-mlp32-4x": _step(10, goodput=10, offered=400),
        "tuned-mlp32-2x": _step(95, goodput=95, offered=200),
        "tuned-mlp32-4x": _step(90, goodput=90, offered=400, lag_ms=25),
    }
    return {
        "runs": {label: _run(label, step) for label, step in steps.items()},
        "ceiling": {
            "model": "mlp",
            "onnxruntime": "1.x",
            "intra_op_threads": 1,
            "seconds": 1.0,
            "batches": [{"batch": 48, "rows_per_s": 4000.0, "latency_ms": {"p50": 10.0, "p99": 11.0}}],
            "gateway_mean_batch": 48.0,
            "rows_per_request": 32,
        },
        "overload": {
            "tiny": {
                "echo": _overload(1200.0, "echo", "tiny", (2, 4), [1, 2, 3]),
                "defaults": _overload(700.0, "defaults", "tiny", (2, 4), [102400, 110592, 133120]),
                "tuned": _overload(700.0, "tuned", "tiny", (2,), [100000, None], probe="defaults"),
            },
            "mlp32": {
                "defaults": _overload(100.0, "defaults", "mlp32", (2, 4), [102400] * 3),
                "tuned": {
                    **_overload(100.0, "tuned", "mlp32", (2, 4), [102400, 102400, 103424], probe="defaults"),
                    "flags": list(tuned_flags(100.0, 50.0)),
                },
            },
        },
        "pinning": {"pinned": True, "server_cpus": [0], "client_cpus": [1], "why": ""},
        "budget_ms": 50.0,
        "configs": {
            "defaults": {"label": "defaults (no model.toml)", "toml": None},
            "peers": {"label": "as the peers", "toml": "[batching]\n"},
            "threads2": {"label": "2 threads", "toml": "[runtime]\n"},
        },
        "commands": {"echo": "infergate-load echo-server", "gateway defaults": "python -m gateway"},
    }


def _by_figure(results: dict[str, Any]) -> dict[str, tuple[float | None, str, str]]:
    return {g.figure: (g.value, g.goal, g.verdict) for g in goals(results)}


def _find(found: dict[str, tuple[float | None, str, str]], start: str) -> tuple[float | None, str, str]:
    (match,) = [v for k, v in found.items() if k.startswith(start)]
    return match


def test_ratio_goals_a_b_d_f_come_from_the_named_runs() -> None:
    found = _by_figure(_results())
    assert _find(found, "(a) tiny, C=64") == (pytest.approx(0.85), "≥ 0.8", "met")
    value, goal, verdict = _find(found, "(b) tiny, C=1")
    assert value is not None
    assert value > 1.3
    assert (goal, verdict) == ("≤ 1.3", "missed")
    assert _find(found, "(d) mlp, 32 rows") == (pytest.approx(3200 / 4000), "≥ 0.8", "met")
    assert _find(found, "(f) tiny, C=64: defaults ÷ best configuration (defaults)") == (1.0, "≥ 0.9", "met")
    assert _find(found, "(f) mlp, 1 row, C=64: defaults ÷ best configuration (peers)") == (
        pytest.approx(600 / 700),
        "≥ 0.9",
        "missed",
    )


def test_overload_goals_per_gateway_and_scenario_and_a_step_that_never_ran() -> None:
    found = _by_figure(_results())
    tiny = "(e) gateway, defaults, tiny, 1 row per call"
    assert _find(found, f"{tiny}: goodput at 2x") == (pytest.approx(600 / 700), "≥ 0.8", "met")
    assert _find(found, f"{tiny}: goodput at 4x") == (pytest.approx(500 / 700), "≥ 0.7", "met")
    # the worst latency past the deadline: an error answered 55 ms after its intended send, 5 ms late
    assert _find(found, f"{tiny}: largest latency past") == (pytest.approx(5.0), "≤ 10", "met")
    assert _find(found, f"{tiny}: RSS growth") == (pytest.approx(30.0), "≤ 20", "missed")
    tuned = f"(e) {SERVERS['tuned']}, tiny, 1 row per call"
    assert _find(found, f"{tuned}: goodput at 2x") == (pytest.approx(300 / 700), "≥ 0.8", "missed")
    assert _find(found, f"{tuned}: goodput at 4x") == (None, "≥ 0.7", "-")
    assert _find(found, f"{tuned}: RSS growth") == (None, "≤ 20", "-")
    mlp = "(e) gateway, defaults, mlp, 32 rows per call"
    assert _find(found, f"{mlp}: goodput at 2x") == (pytest.approx(0.2), "≥ 0.8", "missed")
    tuned_mlp = f"(e) {SERVERS['tuned']}, mlp, 32 rows per call"
    assert _find(found, f"{tuned_mlp}: goodput at 2x") == (pytest.approx(0.95), "≥ 0.8", "met")
    assert _find(found, f"{tuned_mlp}: goodput at 4x") == (pytest.approx(0.9), "≥ 0.7", "met")
    assert _find(found, f"{tuned_mlp}: RSS growth") == (pytest.approx(1.0), "≤ 20", "met")
    echo = [g for g in goals(_results()) if g.figure.startswith("(e) echo")]
    assert [g.counted for g in echo] == [False, False]
    assert echo[0].value == pytest.approx(400 / 1200)
    assert not [g for g in goals(_results()) if g.figure.startswith("(e) echo") and "mlp" in g.figure]


def test_a_step_where_the_client_fell_behind_says_so() -> None:
    found = {g.figure: g.measured for g in goals(_results())}
    (measured,) = [
        v for k, v in found.items() if k.startswith(f"(e) {SERVERS['tuned']}, mlp") and "goodput at 4x" in k
    ]
    assert "client behind: send lag p99" in measured
    assert measured.startswith("90 ÷ 100 (--max-concurrent-streams 1)")
    text = render(_results())
    assert f"{SERVERS['tuned']} on mlp32 at 4x (send lag p99" in text


@pytest.mark.parametrize(
    ("capacity", "streams"),
    [(9000.0, 32), (3840.0, 32), (3405.0, 32), (2560.0, 32), (1919.0, 16), (658.0, 8), (479.0, 4), (5.0, 1)],
)
def test_streams_are_a_third_of_a_budget_of_capacity_rounded_down_to_a_power_of_two_at_most_32(
    capacity: float, streams: int
) -> None:
    assert stream_cap(capacity, 50.0) == streams
    cap = str(streams)
    assert tuned_flags(capacity, 50.0) == (
        "--max-concurrent-streams", cap, "--max-pending-calls", cap, "--max-concurrency", "0",
    )  # fmt: skip


def test_tuned_ratios_divide_by_the_highest_probe_around_their_steps() -> None:
    results = _results()
    results["runs"] |= {
        "again-mlp32-probe": _run("again-mlp32-probe", _step(80, rows=32)),
        "again-mlp32-probe-round2": _run("again-mlp32-probe-round2", _step(90, rows=32)),
        "again-mlp32-after": _run("again-mlp32-after", _step(120, rows=32)),
    }
    entry = results["overload"]["mlp32"]["tuned"]
    entry |= {"capacity_rps": 90.0, "capacity_from": "again-mlp32-probe-round2", "after": "again-mlp32-after"}
    entry["probes"] = ["again-mlp32-probe", "again-mlp32-probe-round2"]
    found = _by_figure(results)
    tuned_mlp = f"(e) {SERVERS['tuned']}, mlp, 32 rows per call"
    # the probe after the steps (120) is the highest: 95 ÷ 120, not 95 ÷ 90
    assert _find(found, f"{tuned_mlp}: goodput at 2x") == (pytest.approx(95 / 120), "≥ 0.8", "missed")
    text = render(results)
    assert "| capacity: again-mlp32-probe-round2; flags" in text
    assert "(probes 80 / 90; after the steps 120) | - | - | - | 120 req/s |" in text
    # when the probe after is lower, the rates' own capacity stays the divisor
    results["runs"]["again-mlp32-after"] = _run("again-mlp32-after", _step(60, rows=32))
    found = _by_figure(results)
    assert _find(found, f"{tuned_mlp}: goodput at 2x") == (pytest.approx(95 / 90), "≥ 0.8", "met")


def test_fast_refusals_and_lateness_read_the_client_figures() -> None:
    fast = _step(10, error_ms=(1, 2, 3, 55))
    share = fast_share(fast)
    assert share is not None
    assert 0.74 <= share <= 0.76
    assert fast_share(_step(10)) is None  # no errors: no share
    assert fast_share(_step(10, error_ms=(20,))) == 0.0
    assert beyond_deadline(_step(10, ok_ms=(70,)), 50.0) == pytest.approx(20.0)
    assert beyond_deadline(_step(10, ok_ms=(5,)), 50.0) == pytest.approx(-45.0)  # all within it
    assert beyond_deadline(None, 50.0) is None


def test_a_and_b_pool_the_alternating_rounds_and_show_each() -> None:
    results = _results()
    extra = {
        "echo-tiny-c64-round2": _step(1100),
        "defaults-tiny-c64-round2": _step(770),
        "echo-tiny-c1-round2": _step(500, ok_ms=(1, 1, 1)),
        "defaults-tiny-c1-round2": _step(300, ok_ms=(1, 1, 1)),
        "echo-tiny-c1-round3": _step(500, ok_ms=(1, 1, 1)),
        "defaults-tiny-c1-round3": _step(300, ok_ms=(1, 1, 1)),
        "defaults-tiny-c64-round3": _step(900),  # the echo server's third round is missing: not paired
    }
    results["runs"].update({label: _run(label, step) for label, step in extra.items()})
    found = _by_figure(results)
    assert _find(found, "(a) tiny, C=64")[0] == pytest.approx((850 + 770) / (1000 + 1100))
    # p50 per round: gateway 2, 1, 1 ms against echo 1, 1, 1: the medians are 1 and 1
    assert _find(found, "(b) tiny, C=1")[:2] == (pytest.approx(1.0), "≤ 1.3")
    text = render(results)
    assert "(2 alternating rounds; per round 0.85, 0.70)" in text
    assert "(3 alternating rounds; per round 2.00, 1.00, 1.00)" in text


def test_b_is_also_reported_pinned_when_pinned_rounds_ran() -> None:
    results = _results()
    assert _find(_by_figure(results), "(b) the same with each server pinned")[0] is None  # none ran
    extra = {
        "echo-tiny-c1-pinned": _step(500, ok_ms=(1, 1, 1)),
        "defaults-tiny-c1-pinned": _step(300, ok_ms=(2, 2, 2)),
        "echo-tiny-c1-pinned-round2": _step(500, ok_ms=(2, 2, 2)),
        "defaults-tiny-c1-pinned-round2": _step(300, ok_ms=(3, 3, 3)),
    }
    results["runs"].update({label: _run(label, step) for label, step in extra.items()})
    found = _by_figure(results)
    # medians of the rounds: gateway 2.5 ms, echo 1.5 ms; a report, never a verdict
    value, goal, verdict = _find(found, "(b) the same with each server pinned")
    assert value == pytest.approx(2.5 / 1.5, rel=0.05)
    assert (goal, verdict) == ("(report)", "-")
    assert _find(found, "(b) tiny, C=1")[0] == pytest.approx(2.0)  # the goal still reads the unpinned runs


def test_render_shows_every_part_from_the_results_only() -> None:
    text = render(_results())
    assert text.startswith(f"## {hotpath_md.TITLE}")
    assert (
        "| (a) tiny, C=64: gateway ÷ echo (req/s, mean of the rounds) | 850 ÷ 1,000 (1 alternating rounds; "
        "per round 0.85) | 0.85 | ≥ 0.8 | met |"
    ) in text
    assert "(g), sampling at 5 % and 100 % against sampling off, is the `sampling` section's" in text
    assert "| defaults (no model.toml) | 850 | 600 | 12.00 |" in text
    assert "| threads2-mlp-c64 | 500 |" in text  # the runs table
    assert "pinned to CPU [0] and the load client to CPU [1]" in text
    assert (
        "| tiny | gateway, defaults | 2x | 1,400 | 600 | 0.86 | 2 | - | RESOURCE_EXHAUSTED 4 | 75% |" in text
    )
    assert "| concurrency_limit 4 | 108.0 |" in text
    assert "48 rows: 4,000 rows/s" in text
    tuned = SERVERS["tuned"]
    # the tiny entry recorded no flags (saved before streams were sized): the flags it ran with are shown
    legacy = " ".join(LEGACY_TUNED_FLAGS)
    assert f"| tiny | {tuned} | capacity: defaults-tiny-probe; flags {legacy} | - | - | - | 700 req/s |" in (
        text
    )
    sized = "--max-concurrent-streams 1 --max-pending-calls 1 --max-concurrency 0"
    assert f"| mlp32 | {tuned} | capacity: defaults-mlp32-probe; flags {sized} | - | - | - | 100 req/s |" in (
        text
    )
    assert f"| mlp32 | {tuned} | 4x | 400 | 90 | 0.90 |" in text
    assert (
        "fell behind its schedule (send lag p99 > 10 ms) in: echo (reference, no goal) on tiny at 4x" in text
    )
    unpinned = _results()
    unpinned["pinning"] = {"pinned": False, "server_cpus": [0], "client_cpus": [0], "why": "not pinned: x"}
    assert "not pinned: x: server and client share CPU [0]" in render(unpinned)


def test_hotpath_and_auth_are_registered_in_place_with_their_options() -> None:
    names = list(REGISTRY)
    assert names.index("hotpath") == names.index("load") + 1
    assert names.index("auth") == names.index("workers") + 1
    sections = [load_section(n) for n in ("hotpath", "auth")]
    assert [s.name for s in sections] == ["hotpath", "auth"]
    args = build_parser(sections).parse_args(["hotpath", "--hotpath-rows", "16", "--auth-concurrency", "4"])
    assert (args.hotpath_rows, args.auth_concurrency, args.hotpath_processes) == (16, 4, 1)


def test_goal_d_pairs_each_gateway_round_with_the_ceiling_measured_right_after_it() -> None:
    results = _results()
    results["runs"]["defaults-mlp-r32-c16-round2"] = _run(
        "defaults-mlp-r32-c16-round2", _step(60, rows=32, batch=40.0)
    )
    ceiling = results["ceiling"]
    ceiling["rounds"] = [
        {"label": "defaults-mlp-r32-c16", "gateway_mean_batch": 48.0, "batches": ceiling.pop("batches")},
        {
            "label": "defaults-mlp-r32-c16-round2",
            "gateway_mean_batch": 40.0,
            "batches": [{"batch": 40, "rows_per_s": 3200.0, "latency_ms": {"p50": 12.0, "p99": 13.0}}],
        },
    ]
    found = _by_figure(results)
    # round 1: 3,200 ÷ 4,000 = 0.8; round 2: 1,920 ÷ 3,200 = 0.6; the mean of the paired ratios
    assert _find(found, "(d) mlp, 32 rows") == (pytest.approx(0.7), "≥ 0.8", "missed")
    (d_goal,) = [g for g in goals(results) if g.figure.startswith("(d)")]
    assert "2 paired rounds; per round 0.80, 0.60" in d_goal.measured
    assert "48/40 rows" in d_goal.figure
    assert "mean batch 40.00, 40 rows: 3,200 rows/s" in render(results)


def test_goal_d_names_a_native_client_and_reports_the_python_clients_rounds_beside_it() -> None:
    results = _results()
    assert not [k for k in _by_figure(results) if k.startswith("(d) the same with the Python")]  # none ran
    assert "native load client" not in render(results)
    results["ceiling"]["client"] = "native"
    label = "defaults-mlp-r32-c16-python"
    results["runs"][label] = _run(label, _step(50, rows=32, batch=64.0))
    found = _by_figure(results)
    # the goal still reads the native step (3,200 ÷ 4,000); Python's 1,600 rows/s against the same ceiling
    assert _find(found, "(d) mlp, 32 rows, C=16, native load client") == (pytest.approx(0.8), "≥ 0.8", "met")
    value, goal, verdict = _find(found, "(d) the same with the Python load client")
    assert value == pytest.approx(0.4)
    assert (goal, verdict) == ("(report)", "-")
    assert "driven by `infergate-load --native-client`" in render(results)


def test_overload_text_names_the_load_client_that_drove_it() -> None:
    from bench.hotpath_overload import _client_kind

    native = {"overload": {"tiny": {"defaults": {"client": "native"}, "echo": {"client": "native"}}}}
    assert "--native-client" in _client_kind(native)
    older = {"overload": {"tiny": {"defaults": {"capacity_rps": 1.0}}}}  # results from before the engine
    assert "Python gRPC" in _client_kind(older)
    assert "Python gRPC" in _client_kind({"overload": None})


def test_goodput_bound_is_the_core_budget_left_after_refusals() -> None:
    assert goodput_bound(2, 0.0) == 1.0  # free refusals: the whole core serves
    assert goodput_bound(4, 0.1) == pytest.approx((1 - 0.4) / 0.9)
    assert goodput_bound(4, 0.3) == 0.0  # refusing 4x would take more than the core
    assert goodput_bound(2, None) is None
    assert goodput_bound(2, 1.0) is None  # a refusal costing a served call's share says nothing


def test_refusal_table_puts_the_bound_beside_the_measured_goodput() -> None:
    results = _results()
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


def test_goal_f_is_the_mean_of_per_round_ratios_against_the_best_mean_configuration() -> None:
    results = _results()
    rounds = {
        ("defaults", "tiny"): (900, 800),
        ("peers", "tiny"): (1000, 900),
        ("threads2", "tiny"): (600, 600),
        ("defaults", "mlp"): (600, 660),
        ("peers", "mlp"): (500, 600),
        ("threads2", "mlp"): (700, 600),
    }
    for (key, model), values in rounds.items():
        for index, rps in enumerate(values):
            label = round_label(f"f-{key}-{model}-c64", index)
            results["runs"][label] = _run(label, _step(rps, batch=float(index + 1)))
    found = _by_figure(results)
    # tiny: peers has the best mean (950); per round 900/1000, 800/900
    assert _find(found, "(f) tiny, C=64: defaults ÷ best configuration (peers)") == (
        pytest.approx((0.9 + 800 / 900) / 2),
        "≥ 0.9",
        "missed",
    )
    # mlp: threads2's mean (650) beats peers (550) and defaults (630); per round 600/700, 660/600
    assert _find(found, "(f) mlp, 1 row, C=64: defaults ÷ best configuration (threads2)") == (
        pytest.approx((600 / 700 + 660 / 600) / 2),
        "≥ 0.9",
        "met",
    )
    text = render(results)
    assert "| defaults (no model.toml) | 850 | 630 | 1.50 |" in text  # means of the rounds
    assert "850 ÷ 950 (2 alternating rounds; per round 0.90, 0.89)" in text


def test_the_capacity_line_lists_every_probe_beside_the_highest() -> None:
    results = _results()
    results["runs"]["defaults-tiny-probe-round2"] = _run("defaults-tiny-probe-round2", _step(650))
    text = render(results)
    assert (
        "| tiny | gateway, defaults | capacity: defaults-tiny-probe (probes 700 / 650) | - | - | - "
        "| 700 req/s" in text
    )
