"""Plots are drawn from report JSON keys alone, also for steps where nothing succeeded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from loadtests.figures import summary_figures, timeline
from loadtests.plots import write_plots
from loadtests.recorder import Recorder
from loadtests.status import OK, code_of

MS = 1_000_000


def _step(offered: float, ok: bool) -> dict[str, Any]:
    rec = Recorder(measure_ns=0, window_ns=100 * MS, budget_ns=None)
    code = OK if ok else code_of(grpc.StatusCode.DEADLINE_EXCEEDED)
    for i in range(50):
        rec.add(i * 10 * MS, i * 10 * MS, i * 10 * MS + (i % 7 + 1) * MS, code)
    rec.fold()
    step = summary_figures(rec.summary, measure_ns=0, rows=1, budget_ms=None)
    step.update(offered=offered, start_s=offered, timeline=timeline(rec.summary, 100 * MS))
    return step


def test_plots_with_failed_steps(tmp_path: Path) -> None:
    for steps in ([_step(1, True), _step(4, False)], [_step(1, False)]):
        report = {"mode": "closed", "parameters": {"model": "m"}, "steps": steps}
        paths = write_plots(report, tmp_path, f"n{len(steps)}-")
        assert all(p.stat().st_size > 1000 for p in paths)
