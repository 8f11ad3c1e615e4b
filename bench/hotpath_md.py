"""The ``hotpath`` section's goals and markdown (pure: both read only the saved results of
:mod:`bench.hotpath`), and the constants both sides share.

Contracts:

* :func:`goals` states issue 13's goals (a), (b), (d), (e) (:mod:`bench.hotpath_overload`: each
  overloaded gateway in each overload scenario) and (f), every value a ratio or difference of figures in
  ``results["runs"]`` / ``results["ceiling"]`` / ``results["overload"]``; a figure that was not measured
  is None (verdict "-").
* :func:`render` starts with :func:`bench.markdown.header` and ends with every run's row
  (:func:`bench.markdown.details`); no number in it is written by hand.
"""

from __future__ import annotations

from bench.hotpath_overload import overload_goals, overload_text
from bench.kit import Measured, measured, ratio
from bench.markdown import details, fmt, goal_table, header
from bench.sections import Goal, Results

__all__ = ["CONFIGS", "TITLE", "goals", "render"]

TITLE = "Hot path: the gateway against the gRPC ceiling, onnxruntime and overload (issue 13)"
_PEERS = "[batching]\nmax_batch_size = 128\nmax_queue_delay_ms = 0.5\n\n[runtime]\nintra_op_threads = {t}\n\n"
_PEERS += "[sampling]\nrate = 0.0\n"
#: Gateway configurations of goal (f): key -> (label, model.toml text; None = no model.toml).
CONFIGS: dict[str, tuple[str, str | None]] = {
    "defaults": ("defaults (no model.toml)", None),
    "peers": ("as the peers: max batch 128, delay 0.5 ms, 1 thread", _PEERS.format(t=1)),
    "threads2": ("as the peers, 2 onnxruntime threads", _PEERS.format(t=2)),
    "delay2": (
        "as the peers, delay 2 ms",
        _PEERS.format(t=1).replace("max_queue_delay_ms = 0.5", "max_queue_delay_ms = 2.0"),
    ),
}


def _runs(results: Results) -> dict[str, Measured]:
    return {k: measured(v) for k, v in results["runs"].items()}


def _rps(runs: dict[str, Measured], label: str, rows: bool = False) -> float | None:
    run = runs.get(label)
    return None if run is None else float(run.report["rows_per_s" if rows else "throughput_rps"])


def _p50(runs: dict[str, Measured], label: str) -> float | None:
    run = runs.get(label)
    return None if run is None else run.lat("p50")


def _best(runs: dict[str, Measured], results: Results, suffix: str) -> tuple[str, float | None]:
    measured_rps = [(k, _rps(runs, f"{k}-{suffix}")) for k in results["configs"]]
    found = [(k, v) for k, v in measured_rps if v is not None]
    return max(found, key=lambda kv: kv[1]) if found else ("-", None)


def goals(results: Results) -> list[Goal]:
    runs, ceiling = _runs(results), results["ceiling"]
    gw, echo = _rps(runs, "defaults-tiny-c64"), _rps(runs, "echo-tiny-c64")
    p50, echo_p50 = _p50(runs, "defaults-tiny-c1"), _p50(runs, "echo-tiny-c1")
    rows = int(ceiling["rows_per_request"])
    gw_rows = _rps(runs, f"defaults-mlp-r{rows}-c16", rows=True)
    batch = ceiling["batches"][0] if ceiling.get("batches") else {}
    ort = batch.get("rows_per_s")
    out = [
        Goal.at_least(
            "(a) tiny, C=64: gateway ÷ echo (req/s)", f"{fmt(gw, 0)} ÷ {fmt(echo, 0)}", ratio(gw, echo), 0.8
        ),
        Goal.at_most(
            "(b) tiny, C=1: gateway p50 ÷ echo p50 (ms)",
            f"{fmt(p50)} ÷ {fmt(echo_p50)}",
            ratio(p50, echo_p50),
            1.3,
        ),
        Goal.at_least(
            f"(d) mlp, {rows} rows, C=16: gateway rows/s ÷ in-process onnxruntime at the gateway's mean "
            f"batch ({batch.get('batch', '-')} rows, {ceiling.get('intra_op_threads')} thread(s))",
            f"{fmt(gw_rows, 0)} ÷ {fmt(ort, 0)}",
            ratio(gw_rows, ort),
            0.8,
        ),
    ]
    out += overload_goals(results, runs)
    for suffix, what in (("tiny-c64", "tiny, C=64"), ("mlp-c64", "mlp, 1 row, C=64")):
        best_key, best = _best(runs, results, suffix)
        mine = _rps(runs, f"defaults-{suffix}")
        out.append(
            Goal.at_least(
                f"(f) {what}: defaults ÷ best configuration ({best_key}) (req/s)",
                f"{fmt(mine, 0)} ÷ {fmt(best, 0)}",
                ratio(mine, best),
                0.9,
            )
        )
    return out


def _config_table(results: Results, runs: dict[str, Measured]) -> list[str]:
    lines = [
        "| configuration | tiny C=64 req/s | mlp C=64 req/s | mlp mean batch (rows) |",
        "|---|---:|---:|---:|",
    ]
    for key, config in results["configs"].items():
        mlp = runs.get(f"{key}-mlp-c64")
        batch = None if mlp is None else ((mlp.step.get("server") or {}).get("batch_size") or {}).get("mean")
        lines.append(
            f"| {config['label']} | {fmt(_rps(runs, f'{key}-tiny-c64'), 0)} "
            f"| {fmt(_rps(runs, f'{key}-mlp-c64'), 0)} | {fmt(batch)} |"
        )
    return [*lines, ""]


def render(results: Results) -> str:
    runs, plan, ceiling = _runs(results), results["pinning"], results["ceiling"]
    servers = [f"- {name}: `{cmd}`" for name, cmd in results["commands"].items()]
    lines = header(results["meta"], TITLE, servers) if "meta" in results else [f"## {TITLE}", ""]
    lines += goal_table(goals(results))
    pinned = (
        f"the server's threads pinned to CPU {plan['server_cpus']} and the load client to CPU "
        f"{plan['client_cpus']} (`taskset`)"
        if plan["pinned"]
        else f"{plan['why']}: server and client share CPU {plan['server_cpus']}"
    )
    lines += [
        "Not measured here: (c), infergate against PyTriton and MLServer, is the `peers` section's; (g), "
        "sampling at 5 % and 100 % against sampling off, is the `sampling` section's (issue 7).",
        "",
        "### (f) Configurations",
        "",
        "Each configuration is one gateway (`--no-sampling`) on its own registry of the same `tiny` and "
        "`mlp`; single-row requests, closed loop at C=64.",
        "",
        *_config_table(results, runs),
        "### (d) The in-process ceiling",
        "",
        f"The gateway's mean batch over the {ceiling['rows_per_request']}-row step was "
        f"{fmt(ceiling.get('gateway_mean_batch'))} rows (`infergate_batch_size` sum ÷ count delta); "
        f"onnxruntime {ceiling.get('onnxruntime')} in process (`loadtests/ortceiling.py`: "
        f"{ceiling.get('intra_op_threads')} intra-op thread(s), the gateway's own default on this machine, "
        f"one inter-op thread, sequential, all graph optimizations) ran that batch "
        + ", ".join(
            f"{r['batch']} rows: {fmt(r['rows_per_s'], 0)} rows/s (p50 {fmt(r['latency_ms']['p50'], 3)} ms)"
            for r in ceiling.get("batches", [])
        )
        + f" over {fmt(ceiling.get('seconds'))} s.",
        "",
        *overload_text(results, runs, pinned),
        "### Runs",
        "",
        *details(runs.values()),
    ]
    return "\n".join(lines)
