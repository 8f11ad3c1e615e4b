"""``infergate-load`` load-run command line (DESIGN.md §8 flags, plus extensions) -> :class:`LoadConfig`.

Contracts:

* The §8 flags keep their names and meaning: ``--target --model [--version] --mode closed|open
  [--concurrency N] [--rate R] [--poisson] [--duration S] [--requests N] [--rows N] [--timeout-us N]
  [--processes P] [--stream] [--metrics-url URL] [--json OUT] [--plot DIR]``.
* Extension: ``--concurrency`` and ``--rate`` take a comma-separated list for a sweep (one step per value,
  one report). Other extensions are documented in ``--help`` and docs/loadtests.md.
* :func:`parse_load_args` exits with status 2 (argparse) on a usage error, including any
  :class:`LoadConfig` validation error.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from loadtests import secure
from loadtests.config import DEFAULT_DURATION_S, INPUT_SOURCES, REQUESTS_ONLY_CAP_S, LoadConfig

__all__ = ["build_parser", "parse_load_args"]


def _levels(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number or a comma-separated list, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one value")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="infergate-load",
        description="Open- and closed-loop KServe V2 gRPC load. Other commands: "
        "'infergate-load ceiling|echo-server --help'.",
    )
    p.add_argument("--target", required=True, help="HOST:PORT of a V2 gRPC server")
    p.add_argument("--model", required=True, help="model name")
    p.add_argument("--version", default="", help="model version (default: the server's choice)")
    p.add_argument(
        "--mode",
        choices=("closed", "open"),
        default="closed",
        help="closed: fixed concurrency; open: fixed rate",
    )
    p.add_argument(
        "--concurrency", type=_levels, default=(1.0,), help="in-flight requests (closed loop); list = sweep"
    )
    p.add_argument("--rate", type=_levels, default=None, help="requests/s (open loop); list = sweep")
    p.add_argument(
        "--poisson", action="store_true", help="open loop: Poisson arrivals instead of a fixed interval"
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help=f"measured seconds per step (default {DEFAULT_DURATION_S:g})",
    )
    p.add_argument(
        "--requests", type=int, default=None, help="measured requests per step (ends the step early)"
    )
    p.add_argument(
        "--warmup", type=float, default=1.0, help="seconds of load before measuring, per step (default 1)"
    )
    p.add_argument("--rows", type=int, default=1, help="rows per request (batch dimension, default 1)")
    p.add_argument(
        "--timeout-us", type=int, default=None, help="'timeout' request parameter in µs (latency budget)"
    )
    p.add_argument("--priority", type=int, default=None, help="'priority' request parameter (1 = highest)")
    p.add_argument("--budget-ms", type=float, default=None, help="goodput budget (default: --timeout-us)")
    p.add_argument("--processes", type=int, default=1, help="client processes (default 1)")
    p.add_argument("--stream", action="store_true", help="use ModelStreamInfer (one stream per process)")
    p.add_argument(
        "--native-client",
        type=Path,
        default=None,
        metavar="BINARY",
        help="send unary calls with this compiled client (make native-client) instead of Python gRPC",
    )
    p.add_argument(
        "--input",
        dest="input_source",
        choices=INPUT_SOURCES,
        default=None,
        help="where rows come from (default: reference with --registry, npz with --npz, else random)",
    )
    p.add_argument("--registry", type=Path, default=None, help="registry directory (for --input reference)")
    p.add_argument("--npz", type=Path, default=None, help=".npz file with one array per input name")
    p.add_argument(
        "--payloads", type=int, default=1, help="distinct pre-serialized requests to cycle (default 1)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for random inputs and Poisson arrivals")
    p.add_argument(
        "--deadline", type=float, default=10.0, help="gRPC deadline per request, seconds (default 10)"
    )
    p.add_argument(
        "--max-inflight", type=int, default=2048, help="open loop: outstanding requests per process"
    )
    p.add_argument("--drain", type=float, default=5.0, help="seconds to wait for stragglers after a step")
    p.add_argument(
        "--metrics-url", default=None, help="server /metrics URL to scrape before and after each step"
    )
    p.add_argument("--json", type=Path, default=None, help="write the JSON report here")
    p.add_argument("--plot", type=Path, default=None, help="write PNG plots into this directory")
    p.add_argument("--label", default="", help="prefix for plot file names")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--quiet", action="store_true", help="no summary table")
    secure.add_arguments(p)
    return p


def parse_load_args(argv: list[str] | None) -> tuple[LoadConfig, bool]:
    """(config, quiet) from ``argv``; usage errors exit with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    levels = args.rate if args.mode == "open" else args.concurrency
    if args.mode == "open" and args.rate is None:
        parser.error("--mode open needs --rate")
    duration = args.duration
    if duration is None:
        duration = REQUESTS_ONLY_CAP_S if args.requests is not None else DEFAULT_DURATION_S
    source = args.input_source or ("reference" if args.registry else "npz" if args.npz else "random")
    try:
        config = LoadConfig(
            target=args.target,
            model=args.model,
            levels=levels,
            mode=args.mode,
            version=args.version,
            poisson=args.poisson,
            stream=args.stream,
            duration_s=duration,
            requests=args.requests,
            warmup_s=args.warmup,
            rows=args.rows,
            timeout_us=args.timeout_us,
            priority=args.priority,
            budget_ms=args.budget_ms,
            processes=args.processes,
            payloads=args.payloads,
            input_source=source,
            registry=args.registry,
            npz=args.npz,
            seed=args.seed,
            deadline_s=args.deadline,
            max_inflight=args.max_inflight,
            drain_s=args.drain,
            metrics_url=args.metrics_url,
            json_path=args.json,
            plot_dir=args.plot,
            progress=not args.no_progress,
            label=args.label,
            security=secure.from_args(args),
            native_client=args.native_client,
        )
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    return config, args.quiet
