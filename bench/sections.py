"""The section registry of ``make bench``: what a section is, which sections exist, and their goals.

Contracts:

* A :class:`Section` is a name (its CLI name and its ``<!-- NAME:start -->`` block in BENCHMARKS.md), a
  title, and three functions: ``run(args) -> results`` (a JSON-ready dict; it may start servers and must
  stop them, also on failure), ``render(results) -> markdown`` (pure: the block's body, no markers) and
  ``goals(results) -> list[Goal]`` (pure). ``add_arguments(parser)`` may add the section's own options to
  the shared parser of ``python -m bench``; they must not clash with another section's.
* ``render`` and ``goals`` read only ``results``, so a saved ``results.json`` re-renders without a rerun
  (``python -m bench --render-only``). The runner adds ``results["meta"]`` (command, timings, measured
  machine state; :mod:`bench.runner`) before either is called. ``results["plots"]`` may name files in the
  section's results folder that its markdown links as ``docs/bench/NAME/FILE``; the runner copies them
  there when it writes BENCHMARKS.md.
* :data:`REGISTRY` maps each name to the module that defines ``SECTION``, in report order; modules are
  imported only when their section is chosen, so one section's heavy imports never slow another.
* A :class:`Goal` with ``counted`` set is a goal with a target (it goes to the summary table at the top of
  BENCHMARKS.md); the others are figures reported for reading only.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["REGISTRY", "Goal", "Results", "Section", "load_section", "verdict"]

Results = dict[str, Any]

#: Section name -> module defining ``SECTION``, in the order of BENCHMARKS.md.
REGISTRY: dict[str, str] = {
    "load": "bench.load",
    "hotpath": "bench.hotpath",
    "batching": "bench.batching",
    "swap": "bench.swap",
    "rollout": "bench.rollout",
    "sampling": "bench.sampling",
    "workers": "bench.workers",
    "auth": "bench.auth",
    "drift": "bench.drift",
    "feedback": "bench.feedback",
    "drift-power": "bench.drift_power",
    "gpu": "bench.gpu",
    "peers": "bench.peers",
}


def verdict(value: float | None, goal: float, at_least: bool) -> str:
    """ "met" / "missed" for ``value`` against ``goal`` (``>=`` when ``at_least``, else ``<=``); "-" when
    nothing was measured."""
    if value is None:
        return "-"
    return "met" if (value >= goal if at_least else value <= goal) else "missed"


@dataclass(frozen=True)
class Goal:
    """One figure of a section: what it is, the measured operands, its value, the goal and the verdict."""

    figure: str
    measured: str
    value: float | None
    goal: str
    verdict: str
    counted: bool = True

    @classmethod
    def at_least(cls, figure: str, measured: str, value: float | None, target: float) -> Goal:
        return cls(figure, measured, value, f"≥ {target:,g}", verdict(value, target, True))

    @classmethod
    def at_most(cls, figure: str, measured: str, value: float | None, target: float) -> Goal:
        return cls(figure, measured, value, f"≤ {target:,g}", verdict(value, target, False))

    @classmethod
    def report(cls, figure: str, measured: str, value: float | None, note: str = "(report)") -> Goal:
        """A figure shown for reading, with no target (never in the summary)."""
        return cls(figure, measured, value, note, "-", counted=False)


@dataclass(frozen=True)
class Section:
    name: str
    title: str
    run: Callable[[argparse.Namespace], Results]
    render: Callable[[Results], str]
    goals: Callable[[Results], list[Goal]]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    #: Part of a plain ``make bench`` (False: only when named, e.g. it needs a GPU).
    default: bool = True
    #: Measured seconds per step when ``--duration`` is not given.
    duration_s: float = 5.0


def load_section(name: str) -> Section:
    """The registered section ``name``; KeyError naming the known ones otherwise."""
    if name not in REGISTRY:
        raise KeyError(f"unknown section {name!r}; known: {', '.join(REGISTRY)}")
    section = importlib.import_module(REGISTRY[name]).SECTION
    if not isinstance(section, Section) or section.name != name:
        raise TypeError(f"{REGISTRY[name]}.SECTION is not the Section {name!r}")
    return section
