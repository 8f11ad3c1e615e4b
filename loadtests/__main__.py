"""``infergate-load`` / ``python -m loadtests``: the load generator and its companion commands.

* ``infergate-load --target HOST:PORT --model NAME ...``: a load run (flags: :mod:`loadtests.cli`).
* ``infergate-load ceiling --registry DIR --model NAME ...``: in-process onnxruntime rows/s per batch size.
* ``infergate-load echo-server --registry DIR [--port 0]``: the bare gRPC echo baseline server.

Exit status: 0 when the run completed (request errors are figures, not failures), 1 when it could not run
(no connection, a client process failed), 2 on a usage error, including ``--plot`` without matplotlib.

The load generator needs only the main distribution: matplotlib (plots) and tqdm (progress bars) come with
the ``load`` extra and are imported only when used; without tqdm a run shows no progress bar.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

__all__ = ["main"]


def _load_main(argv: list[str]) -> int:
    from loadtests.cli import parse_load_args
    from loadtests.pool import LoadError
    from loadtests.report import ProgressBars, table, write_json
    from loadtests.run import run_load

    config, quiet = parse_load_args(argv)
    plotter: Callable[[dict[str, Any], Path, str], list[Path]] | None = None
    if config.plot_dir is not None:
        try:
            from loadtests.plots import write_plots

            plotter = write_plots
        except ImportError as exc:
            print(
                f"infergate-load: --plot needs matplotlib ({exc}); install the 'load' extra: "
                "pip install 'infergate[load]'",
                file=sys.stderr,
            )
            return 2
    show_bars = config.progress and sys.stderr.isatty() and ProgressBars.available()
    bars = ProgressBars() if show_bars else None
    try:
        report = run_load(config, bars)
    except grpc.RpcError as exc:
        detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        print(f"infergate-load: {config.target}: {detail}", file=sys.stderr)
        return 1
    except (LoadError, ValueError, OSError) as exc:
        print(f"infergate-load: {exc}", file=sys.stderr)
        return 1
    finally:
        if bars is not None:
            bars.close()
    if config.json_path is not None:
        write_json(report, config.json_path)
    if plotter is not None and config.plot_dir is not None:
        plotter(report, config.plot_dir, config.label)
    if not quiet:
        print(table(report))
    return 0


def _sub(name: str) -> Callable[[list[str]], int]:
    if name == "ceiling":
        from loadtests.ortceiling import main as ceiling_main

        return ceiling_main
    from loadtests.echo import main as echo_main

    return echo_main


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("ceiling", "echo-server"):
        return _sub(args[0])(args[1:])
    return _load_main(args)


if __name__ == "__main__":
    sys.exit(main())
