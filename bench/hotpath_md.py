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

import statistics
from typing import Any

from bench.hotpath_overload import overload_goals
from bench.hotpath_overload_md import overload_text
from bench.hotpath_refusals import refusal_text
from bench.kit import Measured, measured, ratio, round_label, round_runs
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


def _paired(
    runs: dict[str, Measured], gateway: str, echo: str, figure: str
) -> tuple[list[float], list[float]]:
    """``figure`` ("rps" or "p50") of the gateway's and the echo server's rounds, over the rounds both ran."""
    mine, theirs = round_runs(runs, gateway), round_runs(runs, echo)
    n = min(len(mine), len(theirs))

    def value(run: Measured) -> float:
        return float(run.report["throughput_rps"]) if figure == "rps" else float(run.lat("p50") or 0.0)

    return [value(r) for r in mine[:n]], [value(r) for r in theirs[:n]]


def _d_rounds(
    runs: dict[str, Measured], ceiling: dict[str, Any], suffix: str = ""
) -> tuple[list[float], list[float], list[int]]:
    """Goal (d)'s rounds, over those with both figures: the gateway's rows/s, the in-process rows/s measured
    right after it, and the batch size that ceiling ran (results without ``rounds``: one round);
    ``suffix`` "-python": the Python client's steps of the same rounds instead."""
    rounds = ceiling.get("rounds") or [{"batches": ceiling.get("batches", [])}]
    base = f"defaults-mlp-r{int(ceiling['rows_per_request'])}-c16{suffix}"
    mine, theirs, batches = [], [], []
    for index, entry in enumerate(rounds):
        gateway = _rps(runs, round_label(base, index), rows=True)
        batch = entry["batches"][0] if entry.get("batches") else {}
        if gateway is not None and batch.get("rows_per_s"):
            mine.append(gateway)
            theirs.append(float(batch["rows_per_s"]))
            batches.append(int(batch["batch"]))
    return mine, theirs, batches


def _d_client(ceiling: dict[str, Any]) -> str:
    """Which load client drove goal (d)'s gateway steps (results before the native one have no key)."""
    return ", native load client" if ceiling.get("client") == "native" else ""


def _per_round(mine: list[float], theirs: list[float], kind: str = "alternating") -> str:
    per = ", ".join(fmt(ratio(a, b)) for a, b in zip(mine, theirs, strict=True))
    return f"{len(mine)} {kind} rounds; per round {per}"


def _config_runs(runs: dict[str, Measured], key: str, suffix: str) -> list[Measured]:
    """Configuration ``key``'s (f) rounds of ``suffix`` (results from before (f) had rounds: its one run)."""
    return round_runs(runs, f"f-{key}-{suffix}") or round_runs(runs, f"{key}-{suffix}")[:1]


def _config_rps(runs: dict[str, Measured], key: str, suffix: str) -> list[float]:
    return [float(r.report["throughput_rps"]) for r in _config_runs(runs, key, suffix)]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _best(runs: dict[str, Measured], results: Results, suffix: str) -> tuple[str, list[float]]:
    """The configuration with the highest mean req/s over its (f) rounds, and its rounds."""
    found = [(k, v) for k in results["configs"] if (v := _config_rps(runs, k, suffix))]
    return max(found, key=lambda kv: _mean(kv[1]) or 0.0) if found else ("-", [])


def goals(results: Results) -> list[Goal]:
    runs, ceiling = _runs(results), results["ceiling"]
    # (a): summed requests of every round (equal durations); (b): the median round's p50 of each server.
    gw_rps, echo_rps = _paired(runs, "defaults-tiny-c64", "echo-tiny-c64", "rps")
    gw = sum(gw_rps) / len(gw_rps) if gw_rps else None
    echo = sum(echo_rps) / len(echo_rps) if echo_rps else None
    gw_p50s, echo_p50s = _paired(runs, "defaults-tiny-c1", "echo-tiny-c1", "p50")
    p50 = statistics.median(gw_p50s) if gw_p50s else None
    echo_p50 = statistics.median(echo_p50s) if echo_p50s else None
    pinned_gw, pinned_echo = _paired(runs, "defaults-tiny-c1-pinned", "echo-tiny-c1-pinned", "p50")
    rows = int(ceiling["rows_per_request"])
    gw_rows, ort_rows, batches = _d_rounds(runs, ceiling)
    per_d = [a / b for a, b in zip(gw_rows, ort_rows, strict=True) if b]
    d_value = sum(per_d) / len(per_d) if per_d else None
    gw_d = sum(gw_rows) / len(gw_rows) if gw_rows else None
    ort_d = sum(ort_rows) / len(ort_rows) if ort_rows else None
    out = [
        Goal.at_least(
            "(a) tiny, C=64: gateway ÷ echo (req/s, mean of the rounds)",
            f"{fmt(gw, 0)} ÷ {fmt(echo, 0)} ({_per_round(gw_rps, echo_rps)})",
            ratio(gw, echo),
            0.8,
        ),
        Goal.at_most(
            "(b) tiny, C=1: gateway p50 ÷ echo p50 (ms, median of the rounds)",
            f"{fmt(p50)} ÷ {fmt(echo_p50)} ({_per_round(gw_p50s, echo_p50s)})",
            ratio(p50, echo_p50),
            1.3,
        ),
        Goal.report(
            "(b) the same with each server pinned to one core and the client to the others "
            "(median of the rounds)",
            f"{fmt(_median(pinned_gw))} ÷ {fmt(_median(pinned_echo))} ({_per_round(pinned_gw, pinned_echo)})",
            ratio(_median(pinned_gw), _median(pinned_echo)),
        ),
        Goal.at_least(
            f"(d) mlp, {rows} rows, C=16{_d_client(ceiling)}: gateway rows/s ÷ in-process onnxruntime at "
            "the gateway's mean "
            f"batch ({'/'.join(str(b) for b in batches) or '-'} rows, {ceiling.get('intra_op_threads')} "
            "thread(s)), mean of the rounds",
            f"{fmt(gw_d, 0)} ÷ {fmt(ort_d, 0)} ({_per_round(gw_rows, ort_rows, 'paired')})",
            d_value,
            0.8,
        ),
    ]
    py_rows, py_ort, _ = _d_rounds(runs, ceiling, "-python")
    if py_rows:
        per_py = [a / b for a, b in zip(py_rows, py_ort, strict=True) if b]
        out.append(
            Goal.report(
                "(d) the same with the Python load client, right after each ceiling (mean of the rounds)",
                f"{fmt(_mean(py_rows), 0)} ÷ {fmt(_mean(py_ort), 0)} "
                f"({_per_round(py_rows, py_ort, 'paired')})",
                _mean(per_py),
            )
        )
    out += overload_goals(results, runs)
    for suffix, what in (("tiny-c64", "tiny, C=64"), ("mlp-c64", "mlp, 1 row, C=64")):
        best_key, best = _best(runs, results, suffix)
        mine = _config_rps(runs, "defaults", suffix)
        n = min(len(mine), len(best))
        per = [a / b for a, b in zip(mine[:n], best[:n], strict=True) if b]
        out.append(
            Goal.at_least(
                f"(f) {what}: defaults ÷ best configuration ({best_key}) (req/s, mean of the rounds)",
                f"{fmt(_mean(mine), 0)} ÷ {fmt(_mean(best), 0)} ({_per_round(mine[:n], best[:n])})",
                _mean(per),
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
        mlp = _config_runs(runs, key, "mlp-c64")
        means = [((r.step.get("server") or {}).get("batch_size") or {}).get("mean") for r in mlp]
        batch = _mean([float(m) for m in means if m is not None])
        lines.append(
            f"| {config['label']} | {fmt(_mean(_config_rps(runs, key, 'tiny-c64')), 0)} "
            f"| {fmt(_mean(_config_rps(runs, key, 'mlp-c64')), 0)} | {fmt(batch)} |"
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
        "`mlp`; single-row requests, closed loop at C=64; all are up at once and measured in alternating "
        "rounds (the order reversed every other round); each cell is the mean of the rounds.",
        "",
        *_config_table(results, runs),
        "### (d) The in-process ceiling",
        "",
        f"Each round: the gateway's {ceiling['rows_per_request']}-row step"
        + (
            " (driven by `infergate-load --native-client`: the ceiling runs no client, and a Python "
            "client takes about 0.3 of the 2 cores from the gateway; the Python client's step follows each "
            "ceiling, reported beside the goal)"
            if ceiling.get("client") == "native"
            else ""
        )
        + ", its mean batch "
        "(`infergate_batch_size` sum ÷ count delta), then onnxruntime "
        f"{ceiling.get('onnxruntime')} in process right after it (`loadtests/ortceiling.py`: "
        f"{ceiling.get('intra_op_threads')} intra-op thread(s), the gateway's own default on this machine, "
        f"one inter-op thread, sequential, all graph optimizations) at that batch for "
        f"{fmt(ceiling.get('seconds'))} s: "
        + "; ".join(
            f"mean batch {fmt(entry.get('gateway_mean_batch'))}, "
            + ", ".join(
                f"{r['batch']} rows: {fmt(r['rows_per_s'], 0)} rows/s "
                f"(p50 {fmt(r['latency_ms']['p50'], 3)} ms)"
                for r in entry.get("batches", [])
            )
            for entry in (ceiling.get("rounds") or [ceiling])
        )
        + ".",
        "",
        *overload_text(results, runs, pinned),
        *refusal_text(results, runs),
        "### Runs",
        "",
        *details(runs.values()),
    ]
    return "\n".join(lines)
