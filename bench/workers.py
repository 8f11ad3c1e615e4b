"""Section ``workers`` (``make bench-workers``): issue 10, ``--workers 2`` ÷ ``--workers 1`` throughput.

Contracts:

* Fresh registry under ``--work`` with ``tiny`` and ``mlp``; two gateways side by side
  (``--no-sampling --poll-interval 0``): ``--workers 1`` and ``--workers 2`` (SO_REUSEPORT; each worker
  prints its own ready line, and the benchmark waits for all of them).
* Closed loop from ``--processes`` (4) client processes, so there are that many connections for the
  kernel to spread: ``mlp`` with 32-row requests at concurrency 8 (compute-bound, rows/s) and ``tiny``
  with 1 row at concurrency 64 (transport-bound, req/s). ``--rounds`` alternate the two gateways, so
  drift on the noisy machine hits both; the ratio is of the sums over rounds.
* The spread: OK requests per worker (each worker's own /metrics) over the whole run.
"""

from __future__ import annotations

import argparse
import re
import selectors
import time
from contextlib import ExitStack

from bench.kit import Gateway, Measured, counter, fresh_registry, measure, measured, ratio, start_gateway
from bench.markdown import details, fmt, goal_table, header
from bench.sections import Goal, Results, Section
from bench.servers import GATEWAY_READY

__all__ = ["SECTION"]

TOML = "[batching]\nmax_batch_size = 64\n"
#: Models: (name, rows per request, concurrency, throughput key).
LOADS = (("mlp", 32, 8, "rows_per_s"), ("tiny", 1, 64, "throughput_rps"))


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--processes", type=int, default=4, help="workers: client processes (default 4)")
    p.add_argument("--rounds", type=int, default=2, help="workers: rounds alternating the gateways")


def _more_ready(gw: Gateway, count: int, timeout_s: float = 60.0) -> list[str]:
    """Waits for ``count`` more ready lines (the other workers); returns every worker's metrics URL."""
    urls = [gw.metrics_url]
    proc = gw.process.proc
    assert proc is not None
    assert proc.stdout is not None
    ready = re.compile(GATEWAY_READY)
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while len(urls) < count + 1 and time.monotonic() < deadline:
            if not selector.select(timeout=1.0):
                continue
            match = ready.search(proc.stdout.readline().decode(errors="replace"))
            if match:
                urls.append(f"http://127.0.0.1:{match.group(2)}/metrics")
    if len(urls) < count + 1:
        raise RuntimeError(f"only {len(urls)} of {count + 1} workers became ready (see {gw.log_path})")
    return urls


def goals(results: Results) -> list[Goal]:
    runs = {k: measured(v) for k, v in results["runs"].items()}
    rounds = int(results["rounds"])
    out = []
    for model, batch, conc, key in LOADS:
        unit = "rows/s" if key == "rows_per_s" else "req/s"
        totals = {
            w: sum(float(runs[f"{model}-w{w}-r{r + 1}"].report[key]) for r in range(rounds)) for w in (1, 2)
        }
        per_round = ", ".join(
            fmt(ratio(runs[f"{model}-w2-r{r + 1}"].report[key], runs[f"{model}-w1-r{r + 1}"].report[key]))
            for r in range(rounds)
        )
        value = ratio(totals[2], totals[1])
        figure = (
            f"{model} ({batch} row(s)/request, c={conc}): --workers 2 ÷ --workers 1 "
            f"({unit}, summed over {rounds} rounds; per round {per_round})"
        )
        out.append(Goal.at_least(figure, f"{fmt(totals[2], 0)} ÷ {fmt(totals[1], 0)}", value, 1.0))
    return out


def _threads(cores: int | None, workers: int) -> str:
    return "-" if not cores else str(max(1, cores // workers))


def render(results: Results) -> str:
    runs = {k: measured(v) for k, v in results["runs"].items()}
    meta, spread, cmds = results["meta"], results["spread"], results["commands"]
    cores = meta.get("usable_cores") or (meta.get("environment") or {}).get("cpu_count")
    processes = int(results["processes"])
    client = [sum(run.step["client"]["cpu_cores"]) for run in runs.values()]
    lines = header(
        meta,
        "Multi-worker gateway (issue 10)",
        [
            *(f"- `--workers {w}`: `{cmd}`" for w, cmd in cmds.items()),
            "- OK requests per worker over the whole run (each worker's /metrics): "
            + "; ".join(f"--workers {w}: {', '.join(fmt(x, 0) for x in xs)}" for w, xs in spread.items())
            + ".",
            f"- Measured: `--workers 1` and `--workers 2` on {cores} usable cores; no other worker count.",
        ],
    )
    lines += goal_table(goals(results))
    lines += [
        "Reading: each worker is a whole gateway with its own GIL, event loop and onnxruntime session "
        f"(intra_op_threads = cores // workers: {_threads(cores, 2)} each with 2 workers, "
        f"{_threads(cores, 1)} with 1). On {cores} cores shared with {processes} client processes (which "
        f"used {fmt(min(client, default=None))} to {fmt(max(client, default=None))} cores per run), a second "
        "worker helps only where one process was GIL-bound while a core sat idle; the kernel spreads "
        f"connections, not requests, so {processes} connections can split unevenly (spread above). The "
        "per-round ratios show how much of the difference is the machine's noise.",
        "",
        "### Runs",
        "",
        *details(list(runs.values())),
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> Results:
    registry = fresh_registry(args.work, args.results, [("tiny", "tiny", TOML), ("mlp", "mlp", TOML)])
    runs: dict[str, Measured] = {}
    with ExitStack() as stack:
        gws: dict[int, Gateway] = {}
        urls: dict[int, list[str]] = {}
        for workers in (1, 2):
            flags = ("--no-sampling", "--poll-interval", "0", "--workers", str(workers))
            gws[workers] = start_gateway(stack, registry, args.work / f"w{workers}.log", *flags)
            urls[workers] = _more_ready(gws[workers], workers - 1)
        for r in range(args.rounds):
            for model, batch, conc, _ in LOADS:
                for workers in (1, 2):
                    label = f"{model}-w{workers}-r{r + 1}"
                    runs[label] = measure(
                        label,
                        args.results,
                        target=gws[workers].target,
                        registry=registry,
                        model=model,
                        rows=batch,
                        levels=(conc,),
                        processes=args.processes,
                        duration_s=args.duration,
                        warmup_s=args.warmup,
                    )
        spread = {
            w: [counter(u, "infergate_requests_total", code="OK") for u in us] for w, us in urls.items()
        }
        cmds = {w: g.command for w, g in gws.items()}
    return {
        "runs": {k: m.to_json() for k, m in runs.items()},
        "spread": {str(w): xs for w, xs in spread.items()},
        "commands": {str(w): c for w, c in cmds.items()},
        "rounds": args.rounds,
        "processes": args.processes,
    }


SECTION = Section("workers", "Multi-worker gateway (issue 10)", run, render, goals, _add_arguments)
