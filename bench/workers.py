"""``make bench-workers``: issue 10's figures, ``--workers 2`` ÷ ``--workers 1`` throughput, one run.

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
import sys
import time
from contextlib import ExitStack

from bench.kit import (
    Gateway,
    Measured,
    base_parser,
    details,
    fmt,
    fresh_registry,
    goals,
    header,
    measure,
    ratio,
    start_gateway,
    verdict,
    write_section,
)
from bench.sampling import counter
from bench.servers import GATEWAY_READY

__all__ = ["main"]

TOML = "[batching]\nmax_batch_size = 64\n"
#: Models: (name, rows per request, concurrency, throughput key).
LOADS = (("mlp", 32, 8, "rows_per_s"), ("tiny", 1, 64, "throughput_rps"))


def _parse(argv: list[str]) -> argparse.Namespace:
    p = base_parser("workers", __doc__)
    p.add_argument("--processes", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    return p.parse_args(argv)


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


def render(
    runs: dict[str, Measured],
    spread: dict[int, list[float]],
    elapsed: float,
    cmds: dict[int, str],
    rounds: int,
) -> str:
    rows: list[tuple[str, str, float | None, str, str]] = []
    for model, batch, conc, key in LOADS:
        unit = "rows/s" if key == "rows_per_s" else "req/s"
        totals = {
            w: sum(float(runs[f"{model}-w{w}-r{r + 1}"].report[key]) for r in range(rounds)) for w in (1, 2)
        }
        value = ratio(totals[2], totals[1])
        per_round = ", ".join(
            fmt(ratio(runs[f"{model}-w2-r{r + 1}"].report[key], runs[f"{model}-w1-r{r + 1}"].report[key]))
            for r in range(rounds)
        )
        rows.append(
            (
                f"{model} ({batch} row(s)/request, c={conc}): --workers 2 ÷ --workers 1 "
                f"({unit}, summed over {rounds} rounds; per round {per_round})",
                f"{fmt(totals[2], 0)} ÷ {fmt(totals[1], 0)}",
                value,
                "> 1 (report)",
                verdict(value, 1.0, True),
            )
        )
    lines = header(
        "Multi-worker gateway (issue 10)",
        "make bench-workers",
        elapsed,
        [
            *(f"- `--workers {w}`: `{cmd}`" for w, cmd in cmds.items()),
            "- OK requests per worker over the whole run (each worker's /metrics): "
            + "; ".join(f"--workers {w}: {', '.join(fmt(x, 0) for x in xs)}" for w, xs in spread.items())
            + ".",
            "- Not measured: 4, 8 and 16 workers on a 16-core host (none was used for this run).",
        ],
    )
    lines += goals(rows)
    lines += [
        "Reading: each worker is a whole gateway with its own GIL, event loop and onnxruntime session "
        "(intra_op_threads = cores // workers, so 1 each with 2 workers, 2 with 1). On 2 cores shared with 4 "
        "client processes, a second worker helps only where one process was GIL-bound while a core sat "
        "idle; the kernel spreads connections, not requests, so 4 connections split unevenly (spread "
        "above). The per-round ratios show how much of the difference is the machine's noise.",
        "",
        "### Runs",
        "",
        *details(list(runs.values())),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse(list(sys.argv[1:] if argv is None else argv))
    started = time.monotonic()
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
    text = render(runs, spread, time.monotonic() - started, cmds, args.rounds)
    print(text)
    if args.out is not None:
        write_section(args.out, "workers", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
