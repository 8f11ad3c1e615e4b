"""The benchmark suite's own logic: the section writer, the summary of goals, ratios and verdicts, the
measured header, the loopback guard, a render from saved results, and bench/ staying out of the wheel."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from setuptools.discovery import PackageFinder

from bench import workers
from bench.kit import Measured, measure, ratio, require_loopback
from bench.load_md import render as render_load
from bench.markdown import TITLE, goal_table, header, merge_summary, replace_section, summary, summary_rows
from bench.runner import main as bench_main
from bench.sections import REGISTRY, Goal, load_section, verdict
from bench.swap import load_times
from loadtests.figures import summary_figures
from loadtests.recorder import Recorder
from loadtests.status import OK

ROOT = Path(__file__).resolve().parents[2]
MS = 1_000_000


def test_replace_section_keeps_everything_else_and_appends_when_missing() -> None:
    text = (
        "# B\n\n<!-- drift:start -->\nx  \n<!-- drift:end -->\n\n"
        "<!-- swap:start -->\nold\n<!-- swap:end -->\ntail\n"
    )
    out = replace_section(text, "swap", "new\n")
    assert out == text.replace("old", "new")
    added = replace_section(out, "workers", "w")
    assert added.startswith(out.rstrip("\n"))
    assert added.endswith("\n\n<!-- workers:start -->\nw\n<!-- workers:end -->\n")
    assert replace_section(added, "workers", "w2").count("<!-- workers:start -->") == 1


def test_summary_goes_before_the_first_section_and_is_then_replaced_in_place() -> None:
    text = TITLE + "\n<!-- drift:start -->\nd\n<!-- drift:end -->\n"
    once = replace_section(text, "summary", "S1")
    assert once.index("<!-- summary:start -->") < once.index("<!-- drift:start -->")
    assert once.startswith(TITLE)
    twice = replace_section(once, "summary", "S2")
    assert twice == once.replace("S1", "S2")


def test_ratio_and_verdict() -> None:
    assert ratio(3.0, 2.0) == pytest.approx(1.5)
    assert ratio(None, 2.0) is None
    assert ratio(1.0, 0.0) is None
    assert verdict(0.8, 0.8, True) == "met"
    assert verdict(0.79, 0.8, True) == "missed"
    assert verdict(1.3, 1.3, False) == "met"
    assert verdict(None, 1.0, False) == "-"


def test_goal_rows_and_which_reach_the_summary() -> None:
    goals = [
        Goal.at_least("a ÷ b", "3 ÷ 2", 1.5, 0.8),
        Goal.at_most("p99 (ms)", "60", 60.0, 50),
        Goal.at_least("not measured", "-", None, 1.0),
        Goal.report("stream gain", "2 ÷ 1", 2.0),
    ]
    assert [(g.goal, g.verdict, g.counted) for g in goals] == [
        ("≥ 0.8", "met", True),
        ("≤ 50", "missed", True),
        ("≥ 1", "-", True),
        ("(report)", "-", False),
    ]
    assert goal_table(goals)[2] == "| a ÷ b | 3 ÷ 2 | 1.50 | ≥ 0.8 | met |"
    rows = summary_rows("batching", goals)
    assert rows == [
        "| batching | a ÷ b | 1.50 | ≥ 0.8 | met |",
        "| batching | p99 (ms) | 60.00 | ≤ 50 | missed |",
        "| batching | not measured | - | ≥ 1 | not measured |",
    ]
    body = summary(rows, REGISTRY)
    assert "1 met, 1 missed, 1 not measured." in body


def test_merge_summary_replaces_fresh_sections_and_keeps_the_others() -> None:
    previous = summary(
        ["| swap | old swap goal | 1.00 | ≤ 2 | met |", "| drift | kept | 20.00 | ≥ 10 | met |"], REGISTRY
    )
    fresh = {"swap": ["| swap | new swap goal | 3.00 | ≤ 2 | missed |"]}
    rows = merge_summary(previous, fresh)
    assert rows == ["| swap | new swap goal | 3.00 | ≤ 2 | missed |", "| drift | kept | 20.00 | ≥ 10 | met |"]
    ordered = summary([rows[1], rows[0]], REGISTRY)
    assert ordered.index("| swap |") < ordered.index("| drift |")  # registry order, not arrival order


def _meta(cores: int = 3) -> dict[str, Any]:
    return {
        "command": "python -m bench workers --render-only",
        "elapsed_s": 12.0,
        "environment": {
            "started_at": "2026-12-05T09:00:00+00:00",
            "cpu_count": cores,
            "cpu_model": "Test CPU 9000",
            "load_average": [1.5, 1.0, 0.5],
            "platform": "Linux-test",
            "python": "3.11.7",
            "versions": {"grpcio": "1", "onnxruntime": "2", "numpy": "3"},
            "git_commit": "abc123",
            "git_dirty": False,
        },
        "load_average_end": [2.5, 1.25, 0.75],
        "cpu_busy": 0.75,
        "idle_busy": 0.25,
        "idle_probe_s": 3.0,
        "memory": "8 GiB",
        "usable_cores": cores,
    }


def test_header_writes_only_what_was_measured() -> None:
    text = "\n".join(header(_meta(), "Title"))
    assert "`python -m bench workers --render-only` on 2026-12-05T09:00:00+00:00 UTC" in text
    assert "Test CPU 9000, 3 logical cores (3 usable), 8 GiB RAM" in text
    assert "CPU busy before anything started: 25% (over 3 s)" in text
    assert "CPU busy over the whole section: 75%" in text
    assert "load average 1.50, 1.00, 0.50 at its start and 2.50, 1.25, 0.75 at its end" in text
    assert "shared and noisy" not in text


def _report(rps: float, rows: int = 1, busy: float = 0.5) -> dict[str, Any]:
    rec = Recorder(measure_ns=0, window_ns=100 * MS, budget_ns=None)
    for i in range(10):
        rec.add(i * MS, i * MS, (i + 2) * MS, OK)
    rec.fold()
    step = summary_figures(rec.summary, measure_ns=0, rows=rows, budget_ms=None)
    step.update(
        throughput_rps=rps,
        rows_per_s=rps * rows,
        goodput_rps=rps,
        offered=8,
        client={"cpu_cores": [0.5, 0.25], "machine_cpu_busy": busy},
        server=None,
    )
    figures = {k: step[k] for k in ("throughput_rps", "rows_per_s", "goodput_rps", "errors")}
    return {"steps": [step], **figures, "parameters": {"duration_s": 1.0, "warmup_s": 0.0}}


def _workers_results() -> dict[str, Any]:
    runs = {}
    for model, rows, w1, w2 in (("mlp", 32, 100.0, 150.0), ("tiny", 1, 1000.0, 900.0)):
        for w, rps in ((1, w1), (2, w2)):
            label = f"{model}-w{w}-r1"
            runs[label] = Measured(label, _report(rps, rows), f"infergate-load {label}", (1.0, 1.0, 1.0))
    return {
        "runs": {k: m.to_json() for k, m in runs.items()},
        "spread": {"1": [10.0], "2": [6.0, 4.0]},
        "commands": {"1": "python -m gateway --workers 1", "2": "python -m gateway --workers 2"},
        "rounds": 1,
        "processes": 5,
        "meta": _meta(),
    }


def test_workers_goals_and_render_come_from_the_results() -> None:
    results = _workers_results()
    goals = workers.goals(results)
    assert [(round(g.value or 0, 3), g.verdict) for g in goals] == [(1.5, "met"), (0.9, "missed")]
    assert goals[0].measured == "4,800 ÷ 3,200"  # rows/s: 32 rows per request
    text = workers.render(results)
    assert "On 3 cores shared with 5 client processes" in text
    assert "1 each with 2 workers, 3 with 1" in text
    assert "| mlp-w2-r1 | 150 | 4,800 |" in text


def test_runner_renders_saved_results_into_benchmarks(tmp_path: Path) -> None:
    results = tmp_path / "results"
    (results / "workers").mkdir(parents=True)
    (results / "workers" / "results.json").write_text(json.dumps(_workers_results()))
    out = tmp_path / "BENCHMARKS.md"
    old_summary = summary(
        ["| workers | stale | 9.00 | ≥ 1 | met |", "| swap | kept | 1.00 | ≤ 2 | met |"], REGISTRY
    )
    before = f"{TITLE}\n<!-- summary:start -->\n{old_summary}\n<!-- summary:end -->\n\nmiddle\n"
    out.write_text(before + "\n<!-- workers:start -->\nold\n<!-- workers:end -->\ntail\n")
    args = ["workers", "--render-only", "--results", str(results), "--out", str(out)]
    assert bench_main(args) == 0
    text = out.read_text()
    assert "\nmiddle\n" in text
    assert text.endswith("<!-- workers:end -->\ntail\n")
    assert "old\n" not in text
    assert "## Multi-worker gateway (issue 10)" in text
    assert "| swap | kept |" in text
    assert "stale" not in text
    assert "| workers | mlp (32 row(s)/request, c=8)" in text
    assert "2 met, 1 missed" in text  # swap's kept goal plus workers' two
    assert bench_main(args) == 0
    assert out.read_text() == text


def test_load_section_renders_with_no_scenarios_and_links_plots_under_docs() -> None:
    text = render_load({"scenarios": [], "ceilings": [], "servers": {}, "meta": _meta()})
    assert "### Ratios" in text
    scenario = {"name": "echo-closed", "title": "t", "server": "echo", "command": "c", "report": _report(5.0)}
    scenario["report"].update(mode="closed", warnings=[])
    text = render_load({"scenarios": [scenario], "ceilings": [], "servers": {}, "meta": _meta()})
    assert "(docs/bench/load/echo-closed-latency_cdf.png)" in text


def test_every_registered_section_loads() -> None:
    for name in REGISTRY:
        assert load_section(name).name == name
    with pytest.raises(KeyError, match="unknown section 'nope'"):
        load_section("nope")


@pytest.mark.parametrize(
    "target", ["127.0.0.2:8001", "[::1]:5", "localhost:8001", "http://127.0.0.1:9/metrics"]
)
def test_loopback_targets_pass(target: str) -> None:
    assert require_loopback(target) == target


@pytest.mark.parametrize("target", ["10.0.0.1:8001", "example.com:80", "http://192.0.2.1:8002/metrics"])
def test_the_suite_refuses_targets_off_this_machine(target: str) -> None:
    with pytest.raises(ValueError, match=r"refuses to send load to .* only loopback targets"):
        require_loopback(target)


def test_measure_refuses_before_connecting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"refuses to send load to '192\.0\.2\.1'"):
        measure("x", tmp_path, target="192.0.2.1:8001", model="tiny", levels=(1,), input_source="random")
    assert list(tmp_path.iterdir()) == []


def test_bench_is_type_checked_but_not_installed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    find = config["tool"]["setuptools"]["packages"]["find"]
    packages = PackageFinder.find(str(ROOT), include=find["include"], exclude=find.get("exclude", ()))
    tops = {name.split(".")[0] for name in packages}
    assert {"gateway", "monitor", "registry", "protos", "loadtests"} <= tops
    assert "bench" not in tops
    assert "bench" in config["tool"]["mypy"]["packages"]


def test_the_load_generator_never_imports_the_suite() -> None:
    for path in (ROOT / "loadtests").glob("*.py"):
        for line in path.read_text().splitlines():
            assert not line.lstrip().startswith(("from bench", "import bench")), (path, line)


def test_load_times_reads_json_and_text_log_lines() -> None:
    log = (
        '{"ts":"2026-01-01T00:00:01.500+00:00","level":"INFO","msg":"loaded mlp:2 on cpu in 0.08 s"}\n'
        "not json: loaded tiny:1 on cpu in 0.03 s\n"
        '{"msg":"closed mlp:1"}\n'
    )
    times = load_times(log)
    assert [(m, p, s) for m, p, s, _ in times] == [("mlp:2", "cpu", 0.08), ("tiny:1", "cpu", 0.03)]
    assert times[0][3] == pytest.approx(1767225601.5)
    assert times[1][3] is None
