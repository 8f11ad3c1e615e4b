"""The ``hotpath`` section's goals and markdown (pure: both read only the saved results of
:mod:`bench.hotpath`), and the constants both sides share.

Contracts:

* :func:`goals` states issue 13's goals (a), (b), (d), (e) for each overloaded gateway (its defaults, and
  ``--max-pending-calls 32``, labelled "tuned"), and (f), every value a ratio or difference of figures in
  ``results["runs"]`` / ``results["ceiling"]`` / ``results["overload"]``; a figure that was not measured
  is None (verdict "-").
* (e)'s "beyond the deadline" is the largest latency of a step, OK or not, measured by the client from
  the intended send time, minus the budget; a fast refusal is an error answered within
  :data:`FAST_MS` (read off the step's ``error_cdf``, so a share is exact to the grid's quantile).
* :func:`render` starts with :func:`bench.markdown.header` and ends with every run's row
  (:func:`bench.markdown.details`); no number in it is written by hand.
"""

from __future__ import annotations

from typing import Any

from bench.kit import Measured, measured, ratio
from bench.markdown import details, fmt, goal_table, header, percent
from bench.sections import Goal, Results

__all__ = ["BUDGET_MS", "CONFIGS", "FACTORS", "PROBE_CONCURRENCY", "TITLE", "fast_share", "goals", "render"]

TITLE = "Hot path: the gateway against the gRPC ceiling, onnxruntime and overload (issue 13)"
BUDGET_MS = 50.0
FAST_MS = 10.0
#: Send lag p99 (ms) above which the client is said to have fallen behind its schedule.
LAG_MS = 10.0
PROBE_CONCURRENCY = 64
FACTORS = (2, 4)
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
#: Overloaded servers: key -> label.
OVERLOADED = {
    "defaults": "gateway, defaults",
    "pending32": "gateway, tuned: --max-pending-calls 32",
    "echo": "echo (reference, no goal)",
}


def _runs(results: Results) -> dict[str, Measured]:
    return {k: measured(v) for k, v in results["runs"].items()}


def _rps(runs: dict[str, Measured], label: str, rows: bool = False) -> float | None:
    run = runs.get(label)
    return None if run is None else float(run.report["rows_per_s" if rows else "throughput_rps"])


def _p50(runs: dict[str, Measured], label: str) -> float | None:
    run = runs.get(label)
    return None if run is None else run.lat("p50")


def fast_share(step: dict[str, Any], limit_ms: float = FAST_MS) -> float | None:
    """Share of a step's errors answered within ``limit_ms``; None without errors or an ``error_cdf``."""
    cdf = step.get("error_cdf")
    if not cdf or not sum(step["errors"].values()):
        return None
    within = [
        q
        for q, ms in zip(cdf["quantile"], cdf["latency_ms"], strict=True)
        if ms is not None and ms <= limit_ms
    ]
    return max(within) / 100.0 if within else 0.0


def _step(runs: dict[str, Measured], label: str | None) -> dict[str, Any] | None:
    return None if label is None or label not in runs else runs[label].step


def beyond_deadline(step: dict[str, Any] | None, budget_ms: float) -> float | None:
    """The step's largest latency (OK or error, from the intended send time) minus ``budget_ms``."""
    if step is None:
        return None
    worst = [v for v in (step["latency_ms"]["max"], step["error_latency_ms"]["max"]) if v is not None]
    return max(worst) - budget_ms if worst else None


def _overload(results: Results, key: str) -> dict[str, Any]:
    return dict(
        (results.get("overload") or {}).get(key) or {"capacity_rps": None, "steps": {}, "rss_kib": []}
    )


def _rss_growth_mib(rss: list[int | None]) -> float | None:
    return None if len(rss) < 2 or rss[0] is None or rss[-1] is None else (rss[-1] - rss[0]) / 1024


def _best(runs: dict[str, Measured], results: Results, suffix: str) -> tuple[str, float | None]:
    measured_rps = [(k, _rps(runs, f"{k}-{suffix}")) for k in results["configs"]]
    found = [(k, v) for k, v in measured_rps if v is not None]
    return max(found, key=lambda kv: kv[1]) if found else ("-", None)


def _overload_goals(results: Results, runs: dict[str, Measured], key: str) -> list[Goal]:
    o, name, budget = _overload(results, key), OVERLOADED[key], float(results["budget_ms"])
    cap, out = o["capacity_rps"], []
    for factor, target in zip(FACTORS, (0.8, 0.7), strict=True):
        step = _step(runs, o["steps"].get(str(factor)))
        good = None if step is None else float(step["goodput_rps"])
        out.append(
            Goal.at_least(
                f"(e) {name}: goodput at {factor}x ÷ capacity (OK within {budget:g} ms per s)",
                f"{fmt(good, 0)} ÷ {fmt(cap, 0)}",
                ratio(good, cap),
                target,
            )
        )
    worst = [beyond_deadline(_step(runs, lbl), budget) for lbl in o["steps"].values()]
    value = max((w for w in worst if w is not None), default=None)
    out.append(
        Goal.at_most(
            f"(e) {name}: largest latency past the {budget:g} ms deadline, 2x / 4x (ms, from intended send)",
            " / ".join(fmt(w) for w in worst) or "-",
            value,
            10,
        )
    )
    rss = o["rss_kib"]
    out.append(
        Goal.at_most(
            f"(e) {name}: RSS growth over the overload steps (MiB)",
            " → ".join(fmt(None if r is None else r / 1024, 1) for r in rss) or "-",
            _rss_growth_mib(rss),
            20,
        )
    )
    return out


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
    for key in ("defaults", "pending32"):
        out += _overload_goals(results, runs, key)
    for factor in FACTORS:
        o = _overload(results, "echo")
        step = _step(runs, o["steps"].get(str(factor)))
        good = None if step is None else float(step["goodput_rps"])
        out.append(
            Goal.report(
                f"(e) {OVERLOADED['echo']}: goodput at {factor}x ÷ capacity",
                f"{fmt(good, 0)} ÷ {fmt(o['capacity_rps'], 0)}",
                ratio(good, o["capacity_rps"]),
            )
        )
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


def _overload_table(results: Results, runs: dict[str, Measured]) -> list[str]:
    budget = float(results["budget_ms"])
    lines = [
        f"| server | step | offered req/s | goodput/s | ÷ capacity | OK | errors | refusals ≤ {FAST_MS:g} ms "
        "| error p50 ms | beyond deadline ms | send lag p99 ms | client CPU (cores) | shed (server) "
        "| RSS MiB |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for key, name in OVERLOADED.items():
        o = _overload(results, key)
        cap, rss = o["capacity_rps"], o["rss_kib"]
        lines.append(
            f"| {name} | capacity: {o.get('capacity_from') or '-'} | - | - | - | {fmt(cap, 0)} req/s "
            "| | | | | | | | " + fmt(None if not rss or rss[0] is None else rss[0] / 1024, 1) + " |"
        )
        for i, (factor, label) in enumerate(o["steps"].items(), start=1):
            s = runs[label].step
            errors = ", ".join(f"{k} {v}" for k, v in sorted(s["errors"].items())) or "0"
            shed = ", ".join(
                f"{k} {v}" for k, v in sorted(((s.get("server") or {}).get("shed") or {}).items())
            )
            after = rss[i] if i < len(rss) else None
            lines.append(
                f"| {name} | {factor}x | {fmt(s['offered'], 0)} | {fmt(s['goodput_rps'], 0)} "
                f"| {fmt(ratio(s['goodput_rps'], cap))} | {s['ok']} | {errors} | {percent(fast_share(s))} "
                f"| {fmt(s['error_latency_ms']['p50'])} | {fmt(beyond_deadline(s, budget))} "
                f"| {fmt((s.get('send_lag_ms') or {}).get('p99'))} | {fmt(sum(s['client']['cpu_cores']))} "
                f"| {shed or '-'} | {fmt(None if after is None else after / 1024, 1)} |"
            )
    return [*lines, ""]


def _client_note(results: Results, runs: dict[str, Measured]) -> str:
    """Whether the load client kept to its schedule in each overload step, from its send lag."""
    behind = []
    for key, name in OVERLOADED.items():
        for factor, label in _overload(results, key)["steps"].items():
            lag = (runs[label].step.get("send_lag_ms") or {}).get("p99")
            if lag is not None and lag > LAG_MS:
                behind.append(f"{name} at {factor}x (send lag p99 {fmt(lag)} ms)")
    if not behind:
        return f"The client kept to its schedule in every overload step (send lag p99 ≤ {LAG_MS:g} ms)."
    return (
        f"The client fell behind its schedule (send lag p99 > {LAG_MS:g} ms) in: {'; '.join(behind)}. "
        "Latencies count from the intended send time, so there they include the client's own delay."
    )


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
        "### (e) Overload",
        "",
        f"Per server: a closed-loop probe (tiny, C={PROBE_CONCURRENCY}) measures its capacity, then Poisson "
        f"arrivals at {' and '.join(f'{f}x' for f in FACTORS)} that capacity with the `timeout` parameter, "
        f"the gRPC deadline and the goodput budget all {fmt(results['budget_ms'], 0)} ms; {pinned}. "
        "Latencies are the client's, from each call's intended send time; send lag and client CPU show "
        "whether the client kept up. Beyond deadline: the step's largest latency, OK or error, minus the "
        "budget (negative: every call ended before its deadline). RSS is the server's `VmRSS` before the 2x "
        "step and after each step.",
        "",
        *_overload_table(results, runs),
        _client_note(results, runs),
        "",
        "### Runs",
        "",
        *details(runs.values()),
    ]
    return "\n".join(lines)
