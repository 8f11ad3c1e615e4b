"""The hotpath benchmark section's results as bench.hotpath saves them, written by hand for the section's
goal and markdown tests (tests/unit/test_bench_hotpath*.py): load runs from recorded latencies, overload
entries, and the goals found by figure name."""

from __future__ import annotations

from typing import Any

from bench.hotpath_md import goals
from bench.hotpath_overload import tuned_flags
from bench.kit import Measured
from loadtests.figures import summary_figures
from loadtests.recorder import Recorder
from loadtests.status import OK

MS = 1_000_000
RESOURCE_EXHAUSTED = 8


def make_step(
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


def make_run(label: str, step: dict[str, Any]) -> dict[str, Any]:
    keys = ("throughput_rps", "rows_per_s", "goodput_rps", "errors")
    report = {"steps": [step], **{k: step[k] for k in keys}, "parameters": {"duration_s": 4, "warmup_s": 1}}
    return Measured(label, report, f"infergate-load {label}", (1.0, 0.5, 0.25)).to_json()


def overload_entry(
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


def sample_results() -> dict[str, Any]:
    steps = {
        "echo-tiny-c64": make_step(1000),
        "defaults-tiny-c64": make_step(850),
        "echo-tiny-c1": make_step(500, ok_ms=(1, 1, 1)),
        "defaults-tiny-c1": make_step(300, ok_ms=(2, 2, 2)),
        "defaults-mlp-c64": make_step(600, batch=12.0),
        "defaults-mlp-r32-c16": make_step(100, rows=32, batch=48.0),
        "peers-tiny-c64": make_step(800),
        "peers-mlp-c64": make_step(700, batch=20.0),
        "threads2-tiny-c64": make_step(700),
        "threads2-mlp-c64": make_step(500),
        "echo-tiny-probe": make_step(1200),
        "echo-tiny-2x": make_step(400, error_ms=(60, 70)),
        "echo-tiny-4x": make_step(300, ok_ms=(30,), error_ms=(80,), lag_ms=25),
        "defaults-tiny-probe": make_step(700),
        "defaults-tiny-2x": make_step(600, goodput=600, ok_ms=(10, 40), error_ms=(1, 2, 3, 55), offered=1400),
        "defaults-tiny-4x": make_step(550, goodput=500, ok_ms=(20, 30), error_ms=(1, 1), offered=2800),
        "tuned-tiny-2x": make_step(300, goodput=300, error_ms=(1,)),
        # tuned-tiny-4x never ran: its figures are None, its verdicts "-"
        "defaults-mlp32-probe": make_step(100, rows=32),
        "defaults-mlp32-2x": make_step(20, goodput=20, offered=200),
        "defaults-mlp32-4x": make_step(10, goodput=10, offered=400),
        "tuned-mlp32-2x": make_step(95, goodput=95, offered=200),
        "tuned-mlp32-4x": make_step(90, goodput=90, offered=400, lag_ms=25),
    }
    return {
        "runs": {label: make_run(label, step) for label, step in steps.items()},
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
                "echo": overload_entry(1200.0, "echo", "tiny", (2, 4), [1, 2, 3]),
                "defaults": overload_entry(700.0, "defaults", "tiny", (2, 4), [102400, 110592, 133120]),
                "tuned": overload_entry(700.0, "tuned", "tiny", (2,), [100000, None], probe="defaults"),
            },
            "mlp32": {
                "defaults": overload_entry(100.0, "defaults", "mlp32", (2, 4), [102400] * 3),
                "tuned": {
                    **overload_entry(
                        100.0, "tuned", "mlp32", (2, 4), [102400, 102400, 103424], probe="defaults"
                    ),
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


def by_figure(results: dict[str, Any]) -> dict[str, tuple[float | None, str, str]]:
    return {g.figure: (g.value, g.goal, g.verdict) for g in goals(results)}


def find_goal(found: dict[str, tuple[float | None, str, str]], start: str) -> tuple[float | None, str, str]:
    (match,) = [v for k, v in found.items() if k.startswith(start)]
    return match
