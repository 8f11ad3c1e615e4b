"""The ``peers`` section of the benchmark suite (``make bench-peers``, ``python -m bench peers``): infergate
beside PyTriton 0.7.0 and MLServer 1.7.1 on the same ONNX models and the same ``infergate-load``
scenarios, one server at a time.

Layout: :mod:`bench.peers.launch` (what each server runs, with which settings), :mod:`bench.peers.process`
(process groups, readiness, pinning), :mod:`bench.peers.run` (the measuring loop), :mod:`bench.peers.rounds`
(goal (c)'s cells in alternating rounds with every server up), :mod:`bench.peers.metrics`
(each server's own batch figure), :mod:`bench.peers.report` (the markdown and the goals, pure),
:mod:`bench.peers.plots`. :mod:`bench.peers.pytriton_server` and :mod:`bench.peers.mlserver_runtime` run
only inside the peers' venvs, which ``make bench-peers`` builds from ``bench/peers/*.lock``.

This module stays light (the runner imports it for ``--help``): the heavy parts load inside the functions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.sections import Goal, Results, Section

__all__ = ["SECTION"]


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def add_arguments(p: argparse.ArgumentParser) -> None:
    from bench.peers.launch import SERVERS

    g = p.add_argument_group("peers")
    g.add_argument(
        "--peers-venvs", type=Path, default=Path("bench-out/peer-venvs"),
        help="peers: folder holding venv-pytriton and venv-mlserver (built by make bench-peers)",
    )  # fmt: skip
    g.add_argument("--peers-servers", default=",".join(SERVERS), help=f"peers: subset of {','.join(SERVERS)}")
    g.add_argument("--peers-concurrency", type=_ints, default=(1, 16, 64), help="peers: single-row cells")
    g.add_argument("--peers-batch-rows", type=int, default=32, help="peers: rows of the multi-row mlp cells")
    g.add_argument("--peers-batch-concurrency", type=_ints, default=(1, 16), help="peers: multi-row cells")
    g.add_argument("--peers-processes", type=int, default=1, help="peers: load client processes")
    g.add_argument(
        "--peers-overload-model", default="mlp", choices=("tiny", "mlp"), help="peers: overload model"
    )
    g.add_argument("--peers-overload-factor", type=float, default=2.0, help="peers: offered ÷ capacity")
    g.add_argument("--peers-overload-duration", type=float, default=5.0, help="peers: overload seconds")
    g.add_argument("--peers-probe-concurrency", type=int, default=64, help="peers: capacity probe C")
    g.add_argument("--peers-budget-ms", type=float, default=50.0, help="peers: deadline, timeout and budget")
    g.add_argument("--peers-start-timeout", type=float, default=180.0, help="peers: seconds to get ready")
    g.add_argument("--peers-start-attempts", type=int, default=3, help="peers: start tries per server")
    g.add_argument(
        "--peers-rounds",
        type=int,
        default=4,
        help="peers: head-to-head rounds of goal (c)'s cells with every server up (0: none)",
    )


def run(args: argparse.Namespace) -> Results:
    from bench.peers.run import run_all

    return run_all(args)


def render(results: Results) -> str:
    from bench.peers.report import render as render_body

    return render_body(results)


def goals(results: Results) -> list[Goal]:
    from bench.peers.report import goals as peer_goals

    return peer_goals(results)


SECTION = Section(
    "peers",
    "Peers: infergate beside PyTriton and MLServer",
    run,
    render,
    goals,
    add_arguments,
    default=False,
    duration_s=3.0,
)
