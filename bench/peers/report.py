"""The peers section of BENCHMARKS.md, rendered from the run's summary (pure: no I/O, no clock).

Contracts:

* The results are the dict :func:`bench.peers.run.run_all` returns (``servers``: one result of
  :func:`bench.peers.run.measure_server` each; ``plan``; ``plots``), plus the ``meta`` the runner adds
  (command, machine, measured load and CPU busy; :func:`bench.markdown.header`). :func:`render` turns them
  into the section body; every number in it comes from the results, and a missing figure prints as "-".
* :func:`goals` gives issue 13's goals (c) and (e) that this run measures (infergate as the peers are,
  against PyTriton and the better MLServer row), and reported figures for (e) PyTriton and (f). Goal (c)
  comes from the head-to-head rounds (:mod:`bench.peers.rounds`) when the run has them: the mean of the
  per-round ratios, each round's servers measured seconds apart; else from the one-server-at-a-time
  cells.
* :func:`ratios` divides each infergate row by each peer row, cell by cell, for req/s and p99 (a p99
  ratio below 1 means infergate is faster), and the overload goodput; ``None`` when either side is
  missing or zero (:func:`bench.kit.ratio`).
* :func:`machine_line` states the load average and CPU busy measured around the steps, never prose.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.kit import ratio
from bench.markdown import fmt, goal_table, header
from bench.peers.launch import REFERENCE
from bench.peers.rounds import goal_figure, rounds_table
from bench.sections import Goal

__all__ = ["cell_text", "goals", "machine_line", "ratios", "render"]

INFERGATE_KEYS = ("infergate", "infergate-defaults")
_TITLES = {
    ("tiny", 1): "tiny (16 -> 8, one Gemm), 1 row per request",
    ("mlp", 1): "mlp (256 -> 1024 -> 1024 -> 10), 1 row per request",
}


def _cell_map(server: dict[str, Any]) -> dict[tuple[str, int, int], dict[str, Any]]:
    return {(c["model"], c["rows"], c["concurrency"]): c for c in server.get("cells", [])}


def cell_text(cell: dict[str, Any] | None) -> str:
    """``req/s · p50 / p99 ms · batch`` of one cell, or "-" when it was not measured."""
    if cell is None:
        return "-"
    errors = sum(cell.get("errors", {}).values())
    text = (
        f"**{fmt(cell['rps'], 0)}** · {fmt(cell['p50_ms'])} / {fmt(cell['p99_ms'])} · "
        f"{fmt(cell.get('mean_batch'), 1)}"
    )
    return text + (f" ({errors} errors)" if errors else "")


def _groups(summary: dict[str, Any]) -> list[tuple[str, int, list[int]]]:
    """(model, rows, concurrencies) of each closed-loop table, in the plan's order."""
    plan = summary["plan"]
    out = [(model, 1, list(plan["concurrency"])) for model in ("tiny", "mlp")]
    return [*out, ("mlp", int(plan["batch_rows"]), list(plan["batch_concurrency"]))]


def ratios(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (infergate row, peer): ``{"num", "den", "cells": {key: (rps ratio, p99 ratio)},
    "goodput": ratio}``."""
    servers = {s["key"]: s for s in summary["servers"]}
    rows = []
    for num_key in INFERGATE_KEYS:
        num = servers.get(num_key)
        if num is None:
            continue
        for den_key, den in servers.items():
            if den_key in INFERGATE_KEYS:
                continue
            a, b = _cell_map(num), _cell_map(den)
            cells = {}
            for key in sorted(set(a) | set(b)):
                x, y = a.get(key) or {}, b.get(key) or {}
                cells[key] = (ratio(x.get("rps"), y.get("rps")), ratio(x.get("p99_ms"), y.get("p99_ms")))
            goodput = ratio(
                (num.get("overload") or {}).get("goodput_rps"), (den.get("overload") or {}).get("goodput_rps")
            )
            rows.append({"num": num_key, "den": den_key, "cells": cells, "goodput": goodput})
    return rows


def machine_line(summary: dict[str, Any]) -> str:
    """The load average and CPU busy measured around each step (the runner's header gives the rest)."""
    loads = [c["load_average"] for s in summary["servers"] for c in s.get("cells", [])]
    busy = [
        c["machine_cpu_busy"]
        for s in summary["servers"]
        for c in [*s.get("cells", []), s.get("overload") or {}]
        if c.get("machine_cpu_busy") is not None
    ]
    load_text = f"{min(loads):.2f} to {max(loads):.2f}" if loads else "-"
    busy_text = f"median {statistics.median(busy):.0%}, max {max(busy):.0%}" if busy else "-"
    return (
        f"During the steps: 1-minute load average before each one {load_text}; whole-machine CPU busy "
        f"{busy_text}."
    )


def _closed_tables(summary: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for model, rows, concurrencies in _groups(summary):
        title = _TITLES.get((model, rows), f"{model}, {rows} rows per request")
        lines += [f"**{title}**", ""]
        lines.append("| server | " + " | ".join(f"C={c}" for c in concurrencies) + " |")
        lines.append("|---|" + "---:|" * len(concurrencies))
        for server in summary["servers"]:
            cells = _cell_map(server)
            texts = [cell_text(cells.get((model, rows, c))) for c in concurrencies]
            lines.append(f"| {server['label']} | " + " | ".join(texts) + " |")
        lines.append("")
    return lines


def _ratio_table(summary: dict[str, Any]) -> list[str]:
    labels = {s["key"]: s["label"] for s in summary["servers"]}
    columns = [(m, r, c) for m, r, cs in _groups(summary) for c in cs]
    head = [f"{m}{'' if r == 1 else f' x{r}'} C={c}" for m, r, c in columns]
    lines = [
        "| infergate ÷ peer | " + " | ".join(head) + " | overload goodput |",
        "|---|" + "---:|" * (len(columns) + 1),
    ]
    for row in ratios(summary):
        texts = []
        for key in columns:
            rps, p99 = row["cells"].get(key, (None, None))
            texts.append(f"{fmt(rps)} ({fmt(p99)})")
        name = f"{labels[row['num']]} ÷ {labels[row['den']]}"
        lines.append(f"| {name} | " + " | ".join(texts) + f" | {fmt(row['goodput'])} |")
    return [*lines, ""]


def _overload_table(summary: dict[str, Any]) -> list[str]:
    plan = summary["plan"]
    unpinned_key = (plan["overload_model"], 1, plan["probe_concurrency"])
    lines = [
        "| server | capacity req/s | unpinned req/s | offered req/s | goodput/s | goodput ÷ capacity "
        "| OK p99 ms | errors | refusal p50 ms | latest call ms | send lag p99 ms | mean batch | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for server in summary["servers"]:
        o = server.get("overload")
        unpinned = fmt((_cell_map(server).get(unpinned_key) or {}).get("rps"), 0)
        if not o or "offered_rps" not in o:
            lines.append(f"| {server['label']} | - | {unpinned} |" + " - |" * 11)
            continue
        errors = ", ".join(f"{k} {v}" for k, v in sorted(o["errors"].items())) or "0"
        latest = max((x for x in (o.get("max_ms"), o.get("error_max_ms")) if x is not None), default=None)
        lines.append(
            f"| {server['label']} | {fmt(o['capacity_rps'], 0)} | {unpinned} | {fmt(o['offered_rps'], 0)} "
            f"| {fmt(o['goodput_rps'], 0)} | {fmt(o['goodput_fraction'])} | {fmt(o['p99_ms'])} | {errors} "
            f"| {fmt(o.get('error_p50_ms'))} | {fmt(latest)} | {fmt(o.get('send_lag_p99_ms'))} "
            f"| {fmt(o.get('mean_batch'), 1)} | {fmt(o.get('load_average'))} |"
        )
    return [*lines, ""]


def _overload_of(results: dict[str, Any], key: str) -> dict[str, Any]:
    server = next((s for s in results["servers"] if s["key"] == key), None)
    return (server or {}).get("overload") or {}


def _late_ms(o: dict[str, Any]) -> float | None:
    """How far the longest call (OK or not) outlived the budget, in ms; None when not measured."""
    latest = max((x for x in (o.get("max_ms"), o.get("error_max_ms")) if x is not None), default=None)
    return None if latest is None or "budget_ms" not in o else latest - o["budget_ms"]


def goals(results: dict[str, Any]) -> list[Goal]:
    """Issue 13's goals (c) and (e) that this section measures, plus figures reported for reading."""
    servers = {s["key"]: _cell_map(s) for s in results["servers"]}
    ours, tri = servers.get("infergate", {}), servers.get("pytriton", {})
    mls = ("mlserver", "mlserver-pw0")
    ml = [servers[k] for k in mls if k in servers]
    dft = servers.get("infergate-defaults", {})

    def rps(cells: dict[tuple[str, int, int], dict[str, Any]], key: tuple[str, int, int]) -> float | None:
        cell = cells.get(key)
        return None if cell is None else cell["rps"]

    def p99(cells: dict[tuple[str, int, int], dict[str, Any]], key: tuple[str, int, int]) -> float | None:
        cell = cells.get(key)
        return None if cell is None else cell["p99_ms"]

    c64, c16 = ("mlp", 1, 64), ("mlp", 1, 16)
    best_ml = max((v for v in (rps(m, c64) for m in ml) if v is not None), default=None)
    o, ot = _overload_of(results, "infergate"), _overload_of(results, "pytriton")
    t64 = ("tiny", 1, 64)
    vs_tri, vs_ml = "infergate ÷ PyTriton", "infergate ÷ best MLServer"
    rounds = results.get("rounds")
    c = [
        (c64, "rps", ("pytriton",), ratio(rps(ours, c64), rps(tri, c64)), vs_tri),
        (c64, "rps", mls, ratio(rps(ours, c64), best_ml), vs_ml),
        (c64, "p99_ms", ("pytriton",), ratio(p99(ours, c64), p99(tri, c64)), vs_tri),
        (c16, "rps", ("pytriton",), ratio(rps(ours, c16), rps(tri, c16)), vs_tri),
    ]
    figures = [goal_figure(rounds, *item) for item in c]
    shipped = goal_figure(
        rounds, c64, "rps", ("pytriton",), None, "defaults ÷ PyTriton", "infergate-defaults"
    )
    ceiling = [
        goal_figure(rounds, c64, "rps", den, None, text, REFERENCE)
        for den, text in ((("pytriton",), "echo ÷ PyTriton"), (mls, "echo ÷ best MLServer"))
    ]
    return [
        Goal.at_least("(c) mlp C=64 req/s ÷ PyTriton", figures[0][1], figures[0][0], 1.25),
        Goal.at_least("(c) mlp C=64 req/s ÷ MLServer", figures[1][1], figures[1][0], 2.5),
        Goal.at_most("(c) mlp C=64 p99 ÷ PyTriton p99", figures[2][1], figures[2][0], 1.0),
        Goal.at_least("(c) mlp C=16 req/s ÷ PyTriton", figures[3][1], figures[3][0], 1.5),
        Goal.report("(c) mlp C=64 req/s, infergate with its defaults ÷ PyTriton", shipped[1], shipped[0]),
        Goal.report("(c) mlp C=64 req/s, the echo ceiling ÷ PyTriton", ceiling[0][1], ceiling[0][0]),
        Goal.report("(c) mlp C=64 req/s, the echo ceiling ÷ best MLServer", ceiling[1][1], ceiling[1][0]),
        Goal.at_least("(e) goodput at 2x overload ÷ capacity", "infergate", o.get("goodput_fraction"), 0.8),
        Goal.at_most("(e) longest call past the deadline, ms", "infergate", _late_ms(o), 10.0),
        Goal.report("(e) PyTriton goodput at 2x ÷ capacity", "PyTriton", ot.get("goodput_fraction")),
        Goal.report("(f) mlp C=64 defaults ÷ as the peers", "req/s", ratio(rps(dft, c64), rps(ours, c64))),
        Goal.report("(f) tiny C=64 defaults ÷ as the peers", "req/s", ratio(rps(dft, t64), rps(ours, t64))),
    ]


def render(results: dict[str, Any]) -> str:
    """The section body (see the module contract)."""
    plan, meta = results["plan"], results.get("meta") or {}
    pinned = next(
        (s["overload"] for s in results["servers"] if (s.get("overload") or {}).get("pinned")), None
    )
    pin_text = (
        f"server pinned to core {pinned['server_cpus']} and the client to {pinned['client_cpus']} (taskset)"
        if pinned
        else "not pinned (fewer than 2 usable cores)"
    )
    extra = [
        f"- {machine_line(results)}",
        f"- Load: `infergate-load`, {plan['processes']} client process(es), closed loop, "
        f"{plan['duration_s']:g} s measured after {plan['warmup_s']:g} s warm-up per cell, rows from the "
        "registry's reference.npz; the same ONNX files for every server. One server at a time on the "
        "machine, each started, health-checked (gRPC ServerReady and ModelReady), measured and stopped.",
        "- Same settings for all: max batch 128, 0.5 ms queue delay, onnxruntime with 1 intra-op thread and "
        "no spinning. The peers' exact versions: `bench/peers/pytriton.lock`, `bench/peers/mlserver.lock`.",
    ]
    lines = [
        *header(meta, "Peers: infergate beside PyTriton and MLServer", extra),
        *goal_table(goals(results)),
        "| server | settings | ready after s |",
        "|---|---|---:|",
    ]
    for server in results["servers"]:
        note = f" **{server['error']}**" if server.get("error") else ""
        lines.append(f"| {server['label']} | {server['config']}{note} | {fmt(server.get('ready_s'), 1)} |")
    lines += [
        "",
        "### Closed loop",
        "",
        "Each cell: **req/s** · p50 / p99 ms · mean batch in rows, from the server's own metrics (infergate "
        "`infergate_batch_size`, Triton `nv_inference_count / nv_inference_exec_count`, MLServer the "
        "`peer_batch_rows` histogram its runtime records, served on MLServer's metrics port; warm-up "
        "included).",
        "",
        *_closed_tables(results),
        "### Ratios, infergate ÷ each peer (same run)",
        "",
        "req/s ratio, and in brackets the p99 ratio (below 1: infergate's p99 is lower).",
        "",
        *_ratio_table(results),
        *rounds_table(results),
        f"### Overload: open-loop Poisson at {plan['factor']:g}x each server's capacity",
        "",
        f"Model {plan['overload_model']}; capacity is a closed-loop probe at C={plan['probe_concurrency']} "
        "under the same pinning (unpinned: the closed-loop cell at that C, for comparison); "
        f"{plan['overload_s']:g} s measured; gRPC deadline and `timeout` = "
        f"{plan['budget_ms']:g} ms; goodput = OK within {plan['budget_ms']:g} ms per second; {pin_text}. "
        "Latest call: the longest any call took, OK or not, from its intended send time.",
        "",
        *_overload_table(results),
    ]
    titles = results.get("plot_titles") or {}
    if results.get("plots"):
        lines += ["Plots (throughput and p99 against concurrency, one line per server):", ""]
        lines += [f"- [{titles.get(name, name)}](docs/bench/peers/{name})" for name in results["plots"]]
        lines.append("")
    lines.append(f"JSON: `{results['results']}/` (results.json, and one load report per server and cell).")
    return "\n".join(lines) + "\n"
