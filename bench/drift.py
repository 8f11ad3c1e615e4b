"""Section ``drift`` (``make bench-drift``, ``python -m bench.drift``): the drift engine against scipy and
numpy on identical data, and the running monitor service (the measurements: :mod:`bench.drift_parts`).

Contracts:

* ``run`` measures (a)-(e) of :mod:`bench.drift_parts` in one process on this machine; ``--quick``
  divides every size and the service's seconds by 10 (to try the section, not to publish).
* Goals: (a) and (b) at least 10x their baseline, (c) under 1 ms, (d) at least 200k rows/s, (d') the
  server's memory flat (within 16 MiB) over the run. Every number comes from ``results``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from bench.markdown import header
from bench.sections import Goal, Results, Section

__all__ = ["SECTION"]


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repeat", type=int, default=3, help="drift: runs per timing (median)")
    p.add_argument("--service-seconds", type=float, default=60.0, help="drift: seconds of the service run")
    p.add_argument("--quick", action="store_true", help="drift: sizes and seconds / 10, to try it")


def run(args: argparse.Namespace) -> Results:
    import numba
    import numpy as np

    from bench import drift_parts as parts

    scale = 10 if args.quick else 1
    steps: dict[str, Callable[[], Any]] = {
        "jit": parts.bench_jit,
        "exact_ks": lambda: parts.bench_exact_ks(100_000 // scale, 64, args.repeat),
        "ingest": lambda: parts.bench_ingest(1_000_000 // scale, 64, args.repeat),
        "evaluate": lambda: parts.bench_evaluate(64, args.repeat),
        "service": lambda: parts.bench_service(args.service_seconds / scale),
        "service_large": lambda: parts.bench_service(args.service_seconds / 2 / scale, window_rows=20_000),
    }
    results: Results = {"repeat": args.repeat, "numpy": np.__version__, "numba": numba.__version__}
    results["quick"] = bool(args.quick)
    for name, step in steps.items():
        print(f"== drift: {name}", file=sys.stderr, flush=True)
        results[name] = step()
    return results


def goals(results: Results) -> list[Goal]:
    a, b, c, d = results["exact_ks"], results["ingest"], results["evaluate"], results["service"]
    flat = d["rss_end_mib"] - d["rss_start_mib"]
    return [
        Goal.at_least(
            f"(a) exact KS, {a['features']} features x {a['rows']:,} rows: scipy time ÷ infergate time",
            f"{a['scipy_s'] * 1000:,.0f} ms ÷ {a['numba_s'] * 1000:,.0f} ms",
            a["speedup"],
            10.0,
        ),
        Goal.at_least(
            f"(b) ingest, {b['features']} features x {b['rows']:,} rows: numpy ns/value ÷ infergate ns/value",
            f"{b['numpy_ns']:.1f} ÷ {b['numba_ns']:.2f}",
            b["speedup"],
            10.0,
        ),
        Goal.at_most(
            f"(c) window evaluation, {c['features']} features (µs)",
            f"{c['evaluate_us']:.0f} µs",
            c["evaluate_us"],
            1000,
        ),
        Goal.at_least(
            "(d) service ingest over one WebSocket (rows/s)",
            f"{d['rows_per_s']:,.0f} rows/s",
            d["rows_per_s"],
            200_000,
        ),
        Goal.at_most(
            "(d') server RSS growth over that run (MiB, absolute)",
            f"{d['rss_start_mib']:.0f} -> {d['rss_end_mib']:.0f} MiB",
            abs(flat),
            16,
        ),
    ]


def render(results: Results) -> str:
    a, b, c, d, j = (results[k] for k in ("exact_ks", "ingest", "evaluate", "service", "jit"))
    big, meta = results["service_large"], results["meta"]
    cores = meta.get("usable_cores") or (meta.get("environment") or {}).get("cpu_count")
    verdicts = [g.verdict for g in goals(results)]
    flat = d["rss_end_mib"] - d["rss_start_mib"]
    lines = header(
        meta,
        "Drift engine (monitor)",
        [
            f"- numpy {results['numpy']}, numba {results['numba']}, {b['threads']} numba threads; medians "
            f"of {results['repeat']} runs"
            + (
                "; `--quick`: sizes and service seconds divided by 10, to try the section."
                if results.get("quick")
                else "."
            ),
        ],
    )
    lines += [
        "| benchmark | infergate | baseline | ratio | goal |",
        "|---|---:|---:|---:|---|",
        f"| (a) exact KS, {a['features']} features x {a['rows']:,} rows vs {a['rows']:,}-row reference "
        f"| {a['numba_s'] * 1000:,.0f} ms | scipy `ks_2samp` loop {a['scipy_s'] * 1000:,.0f} ms "
        f"| {a['speedup']:.1f}x | ≥ 10x: {verdicts[0]} |",
        f"| (a') one-off reference sort ({a['features']} x {a['rows']:,}) "
        f"| {a['reference_sort_s'] * 1000:,.0f} ms | - | - | counted apart |",
        f"| (b) ingest, {b['features']} features x {b['rows']:,} rows | {b['numba_ns']:.2f} ns/value "
        f"| numpy searchsorted+bincount {b['numpy_ns']:.1f} ns/value | {b['speedup']:.1f}x "
        f"| ≥ 10x: {verdicts[1]} |",
        f"| (c) window evaluation, {c['features']} features ({c['bins']:,} fine bins): "
        f"PSI + grid KS + bounds | {c['evaluate_us']:.0f} µs | - | - | ≤ 1 ms: {verdicts[2]} |",
        f"| (d) service ingest, frames of 64 rows x 16 features over one WebSocket, {d['seconds']:.0f} s "
        f"| {d['rows_per_s']:,.0f} rows/s | - | - | ≥ 200k rows/s: {verdicts[3]} |",
        f"| (d') server memory (RSS) over that run | {d['rss_start_mib']:.0f} -> {d['rss_end_mib']:.0f} MiB "
        f"(max {d['rss_max_mib']:.0f}) | - | - | flat (≤ 16 MiB): {verdicts[4]} ({flat:+.0f} MiB) |",
        f"| (d'') the same with `window_rows = {big['window_rows']:,}`, {big['seconds']:.0f} s "
        f"| {big['rows_per_s']:,.0f} rows/s | - | - "
        f"| RSS {big['rss_start_mib']:.0f} -> {big['rss_end_mib']:.0f} MiB |",
        f"| (e) `import monitor.stats` incl. JIT, cold numba cache | {j['cold_s']:.2f} s | `import numba` "
        f"{j['numba_import_s']:.2f} s | - | - |",
        f"| (e') the same, warm cache | {j['warm_s']:.2f} s | | | |",
        "",
        f"Checks in the same run: (a) largest |D - scipy D| {a['max_d_error']:.1e}, largest relative p-value "
        f"difference {a['max_p_rel_error']:.1e}; (b) counts identical to numpy: {b['identical']}. "
        f"(d) the client process sent {d['frames_sent']:,} frames and shares the {cores} cores with the "
        f"server. Windows of {d['window_rows']:,} rows closed about "
        f"{d['rows_per_s'] / d['window_rows']:,.0f} times a second; the evaluator thread, which shares the "
        f"GIL with the ingest loop, evaluated {d['windows_evaluated']:,.0f} of them with the exact audit "
        f"(mean {d['evaluation_ms_mean']:.1f} ms each under that load) and shed "
        f'{d["windows_dropped"]:,.0f} (counted in `infergate_monitor_windows_total{{outcome="dropped"}}`); '
        "ingestion does not wait for evaluation. "
        f"With {big['window_rows']:,}-row windows: {big['windows_evaluated']:,.0f} evaluated, "
        f"{big['windows_dropped']:,.0f} shed (mean {big['evaluation_ms_mean']:.1f} ms).",
        "",
    ]
    return "\n".join(lines)


SECTION = Section("drift", "Drift engine (monitor)", run, render, goals, _add_arguments)

if __name__ == "__main__":
    from bench.runner import main

    sys.exit(main(["drift", *sys.argv[1:]]))
