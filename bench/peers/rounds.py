"""Head-to-head rounds of the peers benchmark: the cells behind goal (c), measured on every server in
alternating order while all of them are up, so that each round's ratios compare servers a few seconds
apart instead of minutes apart (this machine's speed drifts by up to ~1.5x within the hour).

Contracts:

* :func:`measure_rounds` starts every server it is given (each as :func:`bench.peers.run.measure_server`
  does, with fresh ports), measures the machine's CPU busy with all of them idle, then runs
  ``plan.rounds`` rounds. A round runs every cell of :data:`ROUND_CELLS` on each server in turn, the
  servers in the given order in even rounds and reversed in odd ones. Every server is stopped at the end,
  whatever happened. A server that does not start is left out of the rounds (its error is recorded).
* The result is ``{"servers": [keys measured], "labels": {key: label}, "idle_busy": fraction or None,
  "errors": {key: text},
  "rounds": [{key: {cell key: figures}}]}``: figures as :func:`bench.peers.run._cell` gives them, each
  report written under ``results/<server>/rounds/``.
* :func:`goal_figure` and :func:`rounds_table` render them (pure): a goal figure as the mean of the
  per-round ratios, and each round's req/s and p99 per server.
* :func:`per_round` gives one figure of one cell for one server in every round (None where missing), and
  :func:`round_ratios` divides two such series round by round (:func:`bench.kit.ratio`); a
  denominator may be a group of servers, whose best (largest) figure of the round is used.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.kit import ratio
from bench.markdown import fmt
from loadtests.environment import busy_fraction, cpu_times

__all__ = [
    "IDLE_SAMPLE_S",
    "ROUND_CELLS",
    "cell_key",
    "goal_figure",
    "measure_rounds",
    "per_round",
    "round_ratios",
    "rounds_table",
]

#: (model, rows, concurrency) of each cell a round measures: goal (c)'s.
ROUND_CELLS: tuple[tuple[str, int, int], ...] = (("mlp", 1, 64), ("mlp", 1, 16))
#: Seconds over which the machine's CPU busy is sampled with every server up and idle.
IDLE_SAMPLE_S = 2.0


def cell_key(model: str, rows: int, concurrency: int) -> str:
    """A closed-loop cell's name, in reports and result files: ``mlp-r1-c64``."""
    return f"{model}-r{rows}-c{concurrency}"


def measure_rounds(
    spec_fors: dict[str, Callable[[], Any]],
    plan: Any,
    logs: Path,
    *,
    start: Callable[..., tuple[Any, Any, float]],
    cell: Callable[..., dict[str, Any]],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Every server of ``spec_fors`` up at once, ``plan.rounds`` alternating rounds (module contract).

    ``start`` and ``cell`` are the runner's own (:func:`bench.peers.run._start` and ``_cell``), passed in so
    this module needs nothing of the runner's; ``cell`` takes ``(plan, spec, model, rows, concurrency,
    results_dir)``."""
    result: dict[str, Any] = {"servers": [], "labels": {}, "idle_busy": None, "errors": {}, "rounds": []}
    started: dict[str, tuple[Any, Any]] = {}
    with contextlib.ExitStack() as stack:
        for key, spec_for in spec_fors.items():
            try:
                spec, server, _ = start(spec_for, plan, logs)
            except Exception as exc:  # a peer that will not start again is left out, not fatal
                result["errors"][key] = f"{type(exc).__name__}: {exc}"
                log(f"rounds: {key} left out: {result['errors'][key]}")
                continue
            stack.enter_context(server)
            started[key] = (spec, server)
            result["labels"][key] = getattr(spec, "label", key)
        keys = list(started)
        result["servers"] = keys
        before = cpu_times()
        time.sleep(IDLE_SAMPLE_S)
        result["idle_busy"] = busy_fraction(before, cpu_times())
        for index in range(plan.rounds):
            order = keys if index % 2 == 0 else keys[::-1]
            figures: dict[str, dict[str, Any]] = {}
            for key in order:
                spec, server = started[key]
                try:
                    for model, rows, concurrency in ROUND_CELLS:
                        got = cell(plan, spec, model, rows, concurrency, plan.results / key / "rounds")
                        figures.setdefault(key, {})[got["cell"]] = got
                except Exception as exc:
                    result["errors"][key] = f"round {index}: {type(exc).__name__}: {exc}"
                    log(f"rounds: {key}: {result['errors'][key]}")
            result["rounds"].append(figures)
    return result


def per_round(rounds: dict[str, Any] | None, key: str, cell: str, field: str) -> list[float | None]:
    """``field`` of ``cell`` on server ``key`` in each round (None where it was not measured)."""
    out: list[float | None] = []
    for figures in (rounds or {}).get("rounds", []):
        value = (figures.get(key) or {}).get(cell, {}).get(field)
        out.append(None if value is None else float(value))
    return out


def round_ratios(
    rounds: dict[str, Any] | None, num: str, den: Sequence[str], cell: str, field: str
) -> list[float | None]:
    """Round by round, ``num``'s figure ÷ the best (largest) of ``den``'s figures in that round."""
    numerators = per_round(rounds, num, cell, field)
    groups = [per_round(rounds, key, cell, field) for key in den]
    out: list[float | None] = []
    for index, value in enumerate(numerators):
        candidates = [x for x in (g[index] for g in groups) if x is not None]
        out.append(ratio(value, max(candidates)) if candidates else None)
    return out


def goal_figure(
    rounds: dict[str, Any] | None,
    cell: tuple[str, int, int],
    field: str,
    den: tuple[str, ...],
    single: float | None,
    text: str,
    num: str = "infergate",
) -> tuple[float | None, str]:
    """A goal (c) figure (server ``num`` ÷ the best of ``den``) and its "measured" text: the mean of the
    per-round ratios when the rounds measured it, else the one-server-at-a-time ratio ``single``."""
    series = round_ratios(rounds, num, den, cell_key(*cell), field)
    got = [x for x in series if x is not None]
    if not got:
        return single, text
    per = ", ".join(fmt(x) for x in got)
    return statistics.fmean(got), f"{text}, mean of {len(got)} alternating rounds (per round {per})"


def rounds_table(results: dict[str, Any]) -> list[str]:
    """Each round's req/s and p99 per server, for every cell the rounds measured."""
    rounds = results.get("rounds") or {}
    if not rounds.get("rounds"):
        return []
    labels = {s["key"]: s["label"] for s in results["servers"]} | (rounds.get("labels") or {})
    keys = rounds["servers"]
    busy = rounds.get("idle_busy")
    lines = [
        "### Head-to-head rounds (goal (c))",
        "",
        "Every server above that measured a cell, and the bare grpc.aio echo server as the ceiling, up "
        f"at once ({', '.join(labels.get(k, k) for k in keys)}); "
        f"with all of them idle the machine was {fmt(None if busy is None else busy * 100, 0)}% busy. "
        f"{len(rounds['rounds'])} rounds; each runs every cell below on each server in turn, in the order "
        "listed in even rounds and reversed in odd ones, so a round's servers are measured seconds apart. "
        "Cells: req/s · p99 ms. Goal (c) above is the mean of the per-round ratios.",
        "",
    ]
    for cell in ROUND_CELLS:
        name = cell_key(*cell)
        lines += [f"**{cell[0]}, {cell[1]} row per request, C={cell[2]}**", ""]
        lines.append("| server | " + " | ".join(f"round {i}" for i in range(len(rounds["rounds"]))) + " |")
        lines.append("|---|" + "---:|" * len(rounds["rounds"]))
        for key in keys:
            rps, p99 = per_round(rounds, key, name, "rps"), per_round(rounds, key, name, "p99_ms")
            cells = [f"{fmt(a, 0)} · {fmt(b)}" for a, b in zip(rps, p99, strict=True)]
            lines.append(f"| {labels.get(key, key)} | " + " | ".join(cells) + " |")
        lines.append("")
    for key, error in sorted((rounds.get("errors") or {}).items()):
        lines.append(f"- {labels.get(key, key)}: {error}")
    return lines + ([""] if rounds.get("errors") else [])
