"""The ``load`` section's markdown: ceilings, each scenario's table, the ratios and the plot links.

Contracts:

* Pure: reads only the section's results (:mod:`bench.load`) and the runner's ``meta``; every number
  comes from them, and every scenario is shown with the exact command that reproduces it.
* Plots are linked under ``docs/bench/load/`` (relative to BENCHMARKS.md), where the runner copies them.
"""

from __future__ import annotations

from typing import Any

from bench.kit import ratio
from bench.markdown import fmt, goal_table, header
from bench.sections import Goal, Results

__all__ = ["PLOTS", "goals", "render"]

#: Where BENCHMARKS.md links this section's plots (the runner copies them there).
PLOTS = "docs/bench/load"


def _f(value: float | None, digits: int = 1) -> str:
    return fmt(value, digits)


def _scenario(result: dict[str, Any]) -> list[str]:
    report = result["report"]
    unit = "concurrency" if report["mode"] == "closed" else "req/s offered"
    lines = [
        f"#### {result['name']}: {result['title']}",
        "",
        f"`{result['command']}`",
        "",
        f"| {unit} | req/s | rows/s | goodput/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors "
        "| client cores | machine CPU busy | server batch mean |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for step in report["steps"]:
        lat = step["latency_ms"]
        errors = ", ".join(f"{k} {v}" for k, v in sorted(step["errors"].items())) or "0"
        busy = step["client"]["machine_cpu_busy"]
        batch = (step.get("server") or {}).get("batch_size") or {}
        lines.append(
            f"| {step['offered']:g} | {_f(step['throughput_rps'])} | {_f(step['rows_per_s'], 0)} "
            f"| {_f(step['goodput_rps'])} | {_f(lat['p50'], 2)} | {_f(lat['p90'], 2)} | {_f(lat['p99'], 2)} "
            f"| {_f(lat['p999'], 2)} | {_f(lat['max'], 2)} | {errors} "
            f"| {', '.join(f'{c:.2f}' for c in step['client']['cpu_cores'])} "
            f"| {'-' if busy is None else f'{busy:.0%}'} | {_f(batch.get('mean'), 2)} |"
        )
    if report["warnings"]:
        lines += ["", "Warnings: " + "; ".join(report["warnings"])]
    return [*lines, ""]


def _ceilings(ceilings: list[dict[str, Any]]) -> list[str]:
    if not ceilings:
        return []
    sizes = [row["batch"] for row in ceilings[0]["batches"]]
    c = ceilings[0]
    lines = [
        "### Ceiling 1: onnxruntime in process (rows/s)",
        "",
        "`infergate-load ceiling --registry REGISTRY --model MODEL "
        f"--seconds {c.get('seconds', '?')}`: "
        f"the gateway runner's session options (intra_op_threads={c['intra_op_threads']}, 0 = onnxruntime's "
        f"default; {c['instances']} instance; sequential; all optimizations), no gRPC.",
        "",
        "| model | " + " | ".join(f"batch {b}" for b in sizes) + " | p50 ms at batch 1 |",
        "|---|" + "---:|" * (len(sizes) + 1),
    ]
    for ceiling in ceilings:
        rows = {row["batch"]: row for row in ceiling["batches"]}
        cells = [_f(rows[b]["rows_per_s"], 0) if b in rows else "-" for b in sizes]
        p50 = rows[sizes[0]]["latency_ms"]["p50"] if sizes[0] in rows else None
        lines.append(f"| {ceiling['model']} | " + " | ".join(cells) + f" | {_f(p50, 3)} |")
    return [*lines, ""]


def goals(results: Results) -> list[Goal]:
    """The section's ratios (figures for reading; the load section sets no targets)."""
    by = {r["name"]: r["report"] for r in results["scenarios"]}
    ort = {c["model"]: {row["batch"]: row for row in c["batches"]} for c in results["ceilings"]}

    def peak(name: str, key: str = "throughput_rps") -> float | None:
        return max((s[key] for s in by[name]["steps"]), default=None) if name in by else None

    def first(name: str, key: str) -> float | None:
        return by[name]["steps"][0]["latency_ms"][key] if name in by else None

    def ort_rows(model: str, batch: int) -> float | None:
        value = ort.get(model, {}).get(batch, {}).get("rows_per_s")
        return None if value is None else float(value)

    def rows_vs(name: str, model: str, batch: int) -> tuple[str, float | None]:
        mine, theirs = peak(name, "rows_per_s"), ort_rows(model, batch)
        return f"{_f(mine, 0)} ÷ {_f(theirs, 0)}", ratio(mine, theirs)

    gw, echo = peak("gateway-closed-tiny"), peak("echo-closed")
    p50_gw, p50_echo = first("gateway-closed-tiny", "p50"), first("echo-closed", "p50")
    overhead = None if p50_gw is None or p50_echo is None else p50_gw - p50_echo
    out = [
        Goal.report(
            "gateway tiny peak req/s ÷ echo peak req/s (closed loop)",
            f"{_f(gw)} ÷ {_f(echo)}",
            ratio(gw, echo),
        ),
        Goal.report(
            "gateway tiny p50 - echo p50 at concurrency 1 (ms)",
            f"{_f(p50_gw, 3)} - {_f(p50_echo, 3)}",
            overhead,
        ),
        Goal.report(
            "gateway tiny peak rows/s ÷ onnxruntime tiny rows/s at batch 1",
            *rows_vs("gateway-closed-tiny", "tiny", 1),
        ),
        Goal.report(
            "gateway mlp peak rows/s (1 row/request) ÷ onnxruntime mlp rows/s at batch 1",
            *rows_vs("gateway-closed-mlp", "mlp", 1),
        ),
        Goal.report(
            "gateway mlp peak rows/s (32 rows/request) ÷ onnxruntime mlp rows/s at batch 32",
            *rows_vs("gateway-closed-mlp-rows32", "mlp", 32),
        ),
        Goal.report(
            "gateway mlp peak rows/s (1 row/request) ÷ onnxruntime mlp rows/s at batch 64 (batching's reach)",
            *rows_vs("gateway-closed-mlp", "mlp", 64),
        ),
    ]
    base, base_mlp = peak("baseline-closed-tiny"), peak("baseline-closed-mlp", "rows_per_s")
    if base is not None:
        mlp = peak("gateway-closed-mlp", "rows_per_s")
        out += [
            Goal.report(
                "gateway tiny peak req/s ÷ baseline gateway tiny peak req/s",
                f"{_f(gw)} ÷ {_f(base)}",
                ratio(gw, base),
            ),
            Goal.report(
                "gateway mlp peak rows/s ÷ baseline gateway mlp peak rows/s (1 row/request)",
                f"{_f(mlp, 0)} ÷ {_f(base_mlp, 0)}",
                ratio(mlp, base_mlp),
            ),
        ]
    return out


def _revision(revision: str | None, env: dict[str, Any]) -> str:
    if revision and revision != "working tree":
        return f"git {revision}"
    dirty = " plus uncommitted changes" if env.get("git_dirty") else ""
    return f"working tree: git {env.get('git_commit')}{dirty}"


def render(results: Results) -> str:
    """The load section's markdown body."""
    scenarios, meta = results["scenarios"], results["meta"]
    env = meta.get("environment") or {}
    params = scenarios[0]["report"]["parameters"] if scenarios else {}
    lines = header(
        meta,
        "Load harness: ceilings and the gateway's figures",
        [
            f"- Client: {params.get('processes', '?')} process(es) per scenario, sync gRPC channel, "
            "pre-serialized requests; latency from the intended send time; each step is "
            f"{params.get('warmup_s', '?')} s of warm-up (excluded) then {params.get('duration_s', '?')} s "
            "measured. Each scenario's table gives the cores its client used and the machine's CPU busy "
            "share.",
            "- Models: `tiny` (16→8, one Gemm) and `mlp` (256→1024→1024→10) built with onnx.helper, FP32, "
            "and the demo `classifier` and `regressor`; inputs from each model's `reference.npz`.",
            *[f"- {name} server: `{command}" for name, command in results.get("servers", {}).items()],
        ],
    )
    lines += _ceilings(results["ceilings"])
    revisions = results.get("revisions", {})
    sections = (
        ("echo", "### Ceiling 2: bare grpc.aio echo server (Python gRPC, no model)"),
        ("gateway", f"### Gateway ({_revision(revisions.get('gateway'), env)})"),
        ("baseline", f"### Baseline gateway (git {revisions.get('baseline')})"),
    )
    for server, heading in sections:
        chosen = [r for r in scenarios if r["server"] == server]
        if chosen:
            lines += [heading, ""]
            for result in chosen:
                lines += _scenario(result)
    lines += ["### Ratios", "", *goal_table(goals(results))]
    lines += ["### Plots", ""]
    for result in scenarios:
        name = result["name"]
        lines.append(
            f"- {name}: [latency CDF]({PLOTS}/{name}-latency_cdf.png), "
            f"[throughput and p99 vs offered load]({PLOTS}/{name}-throughput_vs_load.png), "
            f"[latency over time]({PLOTS}/{name}-latency_over_time.png)"
        )
    lines += [
        "",
        "How to read these: docs/loadtests.md. Server-side figures (batch size) are deltas of the gateway's "
        "/metrics over each step, warm-up included.",
    ]
    return "\n".join(lines) + "\n"
