"""The hotpath benchmark section's goals and markdown, from a hand-written results dict (no server runs):
every ratio of (a), (b), (d) and (f) comes from the runs it names, the markdown from the results only, and
the section is registered right after ``load``. Goal (e), overload: test_bench_hotpath_overload.py."""

from __future__ import annotations

import pytest

from bench import hotpath_md
from bench.hotpath_md import goals, render
from bench.hotpath_overload import LEGACY_TUNED_FLAGS, SERVERS
from bench.kit import round_label
from bench.runner import build_parser
from bench.sections import REGISTRY, load_section
from tests.unit.hotpath_results import by_figure, find_goal, make_run, make_step, sample_results


def test_ratio_goals_a_b_d_f_come_from_the_named_runs() -> None:
    found = by_figure(sample_results())
    assert find_goal(found, "(a) tiny, C=64") == (pytest.approx(0.85), "≥ 0.8", "met")
    value, goal, verdict = find_goal(found, "(b) tiny, C=1")
    assert value is not None
    assert value > 1.3
    assert (goal, verdict) == ("≤ 1.3", "missed")
    assert find_goal(found, "(d) mlp, 32 rows") == (pytest.approx(3200 / 4000), "≥ 0.8", "met")
    assert find_goal(found, "(f) tiny, C=64: defaults ÷ best configuration (defaults)") == (
        1.0,
        "≥ 0.9",
        "met",
    )
    assert find_goal(found, "(f) mlp, 1 row, C=64: defaults ÷ best configuration (peers)") == (
        pytest.approx(600 / 700),
        "≥ 0.9",
        "missed",
    )


def test_a_and_b_pool_the_alternating_rounds_and_show_each() -> None:
    results = sample_results()
    extra = {
        "echo-tiny-c64-round2": make_step(1100),
        "defaults-tiny-c64-round2": make_step(770),
        "echo-tiny-c1-round2": make_step(500, ok_ms=(1, 1, 1)),
        "defaults-tiny-c1-round2": make_step(300, ok_ms=(1, 1, 1)),
        "echo-tiny-c1-round3": make_step(500, ok_ms=(1, 1, 1)),
        "defaults-tiny-c1-round3": make_step(300, ok_ms=(1, 1, 1)),
        "defaults-tiny-c64-round3": make_step(900),  # the echo server's third round is missing: not paired
    }
    results["runs"].update({label: make_run(label, step) for label, step in extra.items()})
    found = by_figure(results)
    assert find_goal(found, "(a) tiny, C=64")[0] == pytest.approx((850 + 770) / (1000 + 1100))
    # p50 per round: gateway 2, 1, 1 ms against echo 1, 1, 1: the medians are 1 and 1
    assert find_goal(found, "(b) tiny, C=1")[:2] == (pytest.approx(1.0), "≤ 1.3")
    text = render(results)
    assert "(2 alternating rounds; per round 0.85, 0.70)" in text
    assert "(3 alternating rounds; per round 2.00, 1.00, 1.00)" in text


def test_b_is_also_reported_pinned_when_pinned_rounds_ran() -> None:
    results = sample_results()
    assert find_goal(by_figure(results), "(b) the same with each server pinned")[0] is None  # none ran
    extra = {
        "echo-tiny-c1-pinned": make_step(500, ok_ms=(1, 1, 1)),
        "defaults-tiny-c1-pinned": make_step(300, ok_ms=(2, 2, 2)),
        "echo-tiny-c1-pinned-round2": make_step(500, ok_ms=(2, 2, 2)),
        "defaults-tiny-c1-pinned-round2": make_step(300, ok_ms=(3, 3, 3)),
    }
    results["runs"].update({label: make_run(label, step) for label, step in extra.items()})
    found = by_figure(results)
    # medians of the rounds: gateway 2.5 ms, echo 1.5 ms; a report, never a verdict
    value, goal, verdict = find_goal(found, "(b) the same with each server pinned")
    assert value == pytest.approx(2.5 / 1.5, rel=0.05)
    assert (goal, verdict) == ("(report)", "-")
    assert find_goal(found, "(b) tiny, C=1")[0] == pytest.approx(
        2.0
    )  # the goal still reads the unpinned runs


def test_render_shows_every_part_from_the_results_only() -> None:
    text = render(sample_results())
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
    sized = "--max-concurrent-streams 2 --max-pending-calls 2 --max-concurrency 0"
    assert f"| mlp32 | {tuned} | capacity: defaults-mlp32-probe; flags {sized} | - | - | - | 100 req/s |" in (
        text
    )
    assert f"| mlp32 | {tuned} | 4x | 400 | 90 | 0.90 |" in text
    assert (
        "fell behind its schedule (send lag p99 > 10 ms) in: echo (reference, no goal) on tiny at 4x" in text
    )
    unpinned = sample_results()
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
    results = sample_results()
    results["runs"]["defaults-mlp-r32-c16-round2"] = make_run(
        "defaults-mlp-r32-c16-round2", make_step(60, rows=32, batch=40.0)
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
    found = by_figure(results)
    # round 1: 3,200 ÷ 4,000 = 0.8; round 2: 1,920 ÷ 3,200 = 0.6; the mean of the paired ratios
    assert find_goal(found, "(d) mlp, 32 rows") == (pytest.approx(0.7), "≥ 0.8", "missed")
    (d_goal,) = [g for g in goals(results) if g.figure.startswith("(d)")]
    assert "2 paired rounds; per round 0.80, 0.60" in d_goal.measured
    assert "48/40 rows" in d_goal.figure
    assert "mean batch 40.00, 40 rows: 3,200 rows/s" in render(results)


def test_goal_d_names_a_native_client_and_reports_the_python_clients_rounds_beside_it() -> None:
    results = sample_results()
    assert not [k for k in by_figure(results) if k.startswith("(d) the same with the Python")]  # none ran
    assert "native load client" not in render(results)
    results["ceiling"]["client"] = "native"
    label = "defaults-mlp-r32-c16-python"
    results["runs"][label] = make_run(label, make_step(50, rows=32, batch=64.0))
    found = by_figure(results)
    # the goal still reads the native step (3,200 ÷ 4,000); Python's 1,600 rows/s against the same ceiling
    assert find_goal(found, "(d) mlp, 32 rows, C=16, native load client") == (
        pytest.approx(0.8),
        "≥ 0.8",
        "met",
    )
    value, goal, verdict = find_goal(found, "(d) the same with the Python load client")
    assert value == pytest.approx(0.4)
    assert (goal, verdict) == ("(report)", "-")
    assert "driven by `infergate-load --native-client`" in render(results)


def test_goal_f_is_the_mean_of_per_round_ratios_against_the_best_mean_configuration() -> None:
    results = sample_results()
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
            results["runs"][label] = make_run(label, make_step(rps, batch=float(index + 1)))
    found = by_figure(results)
    # tiny: peers has the best mean (950); per round 900/1000, 800/900
    assert find_goal(found, "(f) tiny, C=64: defaults ÷ best configuration (peers)") == (
        pytest.approx((0.9 + 800 / 900) / 2),
        "≥ 0.9",
        "missed",
    )
    # mlp: threads2's mean (650) beats peers (550) and defaults (630); per round 600/700, 660/600
    assert find_goal(found, "(f) mlp, 1 row, C=64: defaults ÷ best configuration (threads2)") == (
        pytest.approx((600 / 700 + 660 / 600) / 2),
        "≥ 0.9",
        "met",
    )
    text = render(results)
    assert "| defaults (no model.toml) | 850 | 630 | 1.50 |" in text  # means of the rounds
    assert "850 ÷ 950 (2 alternating rounds; per round 0.90, 0.89)" in text
