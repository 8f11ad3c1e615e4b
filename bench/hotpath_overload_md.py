"""Goal (e)'s subsection of the ``hotpath`` section: how it was measured, every step of every round in
one table, and whether the load client kept up (pure: renders the figures of :mod:`bench.hotpath_overload`
from the saved results)."""

from __future__ import annotations

from bench.hotpath_overload import (
    FACTORS,
    FAST_MS,
    LAG_MS,
    PROBES,
    ROUNDS,
    SCENARIOS,
    SERVERS,
    beyond_deadline,
    capacity,
    entry_of,
    fast_share,
    flags_of,
    offered_factor,
    present,
    probe_rate,
    probe_rps,
    round_capacity,
    send_lag,
    step_labels,
)
from bench.kit import Measured, ratio
from bench.markdown import fmt, percent
from bench.sections import Results

__all__ = ["client_kind", "overload_text"]


def _source_label(rounds: list[dict[str, object]] | None) -> str:
    """What the entry's ``capacity_from`` probe set: the rates of rounds saved before they followed the
    probe before each (no ``rate_rps``), the one step's capacity before rounds, else only the highest."""
    if not rounds:
        return "capacity"
    return "highest probe" if any("rate_rps" in r for r in rounds) else "rates"


def _table(results: Results, runs: dict[str, Measured]) -> list[str]:
    budget = float(results["budget_ms"])
    lines = [
        f"| scenario | server | step | offered req/s | goodput/s | ÷ capacity | OK | server OK | errors "
        f"| refusals ≤ {FAST_MS:g} ms | error p50 ms | beyond deadline ms | send lag p99 ms "
        "| client CPU (cores) | shed (server) | RSS MiB |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for scenario, server in present(results):
        o, where = entry_of(results, scenario, server), f"{scenario} | {SERVERS[server]}"
        rounds, rss = o.get("rounds"), o["rss_kib"]
        cap = o.get("capacity_rps") if rounds else capacity(o, runs)
        probes = " / ".join(fmt(v, 0) for v in probe_rps(runs, o, server, scenario))
        if rounds:
            afters = " / ".join(fmt(probe_rate(runs, r["after"]), 0) for r in rounds)
            probes += f"; after each round {afters}"
        elif o.get("after") in runs:
            probes += f"; after the steps {fmt(float(runs[o['after']].report['throughput_rps']), 0)}"
        source = o.get("capacity_from") or "-"
        if server == "tuned":
            source += f"; flags {' '.join(flags_of(o))}"
        lines.append(
            f"| {where} | {_source_label(rounds)}: {source}"
            f"{f' (probes {probes})' if probes else ''} | - | - | - | {fmt(cap, 0)} req/s "
            "| | | | | | | | | " + fmt(None if not rss or rss[0] is None else rss[0] / 1024, 1) + " |"
        )
        for i, (factor, number, label) in enumerate(step_labels(o), start=1):
            s = runs[label].step
            step_cap = round_capacity(rounds[number - 1], runs) if rounds else cap
            where_step = f"{factor}x"
            if rounds:
                offered = offered_factor(rounds[number - 1], runs, int(factor))
                where_step += f", round {number} (capacity {fmt(step_cap, 0)}; offered {fmt(offered)}x)"
            errors = ", ".join(f"{k} {v}" for k, v in sorted(s["errors"].items())) or "0"
            server_side = s.get("server") or {}
            shed = ", ".join(f"{k} {v}" for k, v in sorted((server_side.get("shed") or {}).items()))
            answered = (server_side.get("requests") or {}).get("OK")
            answered_text = "-" if answered is None else str(answered)
            cores = fmt(sum(s["client"]["cpu_cores"]))
            after = rss[i] if i < len(rss) else None
            lines.append(
                f"| {where} | {where_step} | {fmt(s['offered'], 0)} | {fmt(s['goodput_rps'], 0)} "
                f"| {fmt(ratio(s['goodput_rps'], step_cap))} | {s['ok']} | {answered_text} "
                f"| {errors} | {percent(fast_share(s))} | {fmt(s['error_latency_ms']['p50'])} "
                f"| {fmt(beyond_deadline(s, budget))} | {fmt(send_lag(s))} | {cores} "
                f"| {shed or '-'} | {fmt(None if after is None else after / 1024, 1)} |"
            )
    return [*lines, ""]


def _client_note(results: Results, runs: dict[str, Measured]) -> str:
    """Whether the load client kept to its schedule in each overload step, from its send lag."""
    behind = []
    for scenario, server in present(results):
        entry = entry_of(results, scenario, server)
        for factor, number, label in step_labels(entry):
            lag = send_lag(runs[label].step)
            if lag is not None and lag > LAG_MS:
                which = f" round {number}" if entry.get("rounds") else ""
                where = f"{SERVERS[server]} on {scenario} at {factor}x{which}"
                behind.append(f"{where} (send lag p99 {fmt(lag)} ms)")
    if not behind:
        return f"The client kept to its schedule in every overload step (send lag p99 ≤ {LAG_MS:g} ms)."
    return (
        f"The client fell behind its schedule (send lag p99 > {LAG_MS:g} ms) in: {'; '.join(behind)}. "
        "There the step measured the client as much as the server: latencies count from the intended send "
        "time, so they include the client's own delay, and answers the server gave in time (server OK) "
        "reached the client late."
    )


def _rounds_run(results: Results) -> int:
    """The most rounds a gateway entry ran (:data:`ROUNDS` when none ran in rounds)."""
    counts = [
        len(entry.get("rounds") or ())
        for servers in (results.get("overload") or {}).values()
        for key, entry in servers.items()
        if key != "echo"
    ]
    return max(counts, default=0) or ROUNDS


def client_kind(results: Results) -> str:
    """Which load client drove the overload steps (results before the native engine have no key)."""
    kinds = {
        entry.get("client", "python")
        for servers in (results.get("overload") or {}).values()
        for entry in servers.values()
    }
    if kinds == {"native"}:
        return (
            "`infergate-load --native-client` (its compiled engine, `make native-client`: one Python client "
            "core cannot offer a 1-row model 4x a gateway's capacity)"
        )
    return "`infergate-load` (Python gRPC; `make native-client` builds the engine that keeps up at 4x)"


def overload_text(results: Results, runs: dict[str, Measured], pinned: str) -> list[str]:
    """The (e) subsection: how it was measured, the table, and whether the client kept up."""
    scenarios = "; ".join(
        f"`{key}` ({label}, probe at C={probe})" for key, (label, _, _, probe) in SCENARIOS.items()
    )
    return [
        "### (e) Overload",
        "",
        f"Scenarios: {scenarios}. Per server and scenario: {PROBES} closed-loop probes in a row, then "
        f"{_rounds_run(results)} rounds (the echo server: one) of Poisson arrivals at "
        f"{' and '.join(f'{f}x' for f in FACTORS)} the req/s of the probe just before the round, with the "
        f"`timeout` parameter, the gRPC deadline and the goodput budget all "
        f"{fmt(results['budget_ms'], 0)} ms, each round followed by one more probe; a round's capacity is "
        "the mean of the probes just before and after it, and a goal reads the median over rounds of "
        "goodput ÷ that capacity. Why: the shared host's speed moves by a third within minutes, so one step "
        "divided by the highest of probes taken minutes apart measures the host's spread as much as the "
        "server. Every round is in the table with what it offered ÷ its capacity (2x and 4x when the host "
        "held its speed over the round), so a round that stalled or a host that changed speed shows. Rounds "
        "saved before their rates followed the latest probe (no `rate_rps`) ran at the highest of the first "
        "probes, which offered more than 2x and 4x of the capacity they were divided by. "
        f"{pinned}. Latencies are "
        "the client's, from each call's intended send time; send lag and client CPU show whether the client "
        f"kept up. Load client: {client_kind(results)}. Server OK: calls the gateway answered OK over the "
        "step, warm-up and drain included (its "
        "`infergate_requests_total`). Beyond deadline: the step's largest latency, OK or error, minus the "
        "budget (negative: every call ended before its deadline). UNAVAILABLE is the transport refusing a "
        "stream past `--max-concurrent-streams` (HTTP/2 REFUSED_STREAM: never processed, safe to retry); "
        "CANCELLED is gRPC core refusing a call past `--max-pending-calls`. RSS is the server's `VmRSS` "
        'before the first step and after each step. The tuned gateway (README "Overload": '
        "`--max-concurrent-streams S --max-pending-calls S --max-concurrency 0`, S the calls served in "
        "half the budget, rounded down to a power of two, at most 64; in results saved before session "
        "18, a third of it, at most 32: each row shows its flags) cannot be probed itself (its "
        "push-back refuses part of a closed loop), so per scenario a fresh gateway with the defaults is "
        "probed before its rounds (S comes from the highest of those probes) and after each "
        "round, the tuned gateway idle meanwhile. Results saved before rounds divided their one step by the "
        "highest of the probes, the one after the steps included.",
        "",
        *_table(results, runs),
        _client_note(results, runs),
        "",
    ]
