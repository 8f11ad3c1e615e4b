"""Presenting a run: the terminal summary table, the JSON file and a tqdm progress bar factory.

Contracts:

* :func:`table` renders a report dict (from :func:`loadtests.run.run_load`) as plain text: one row per
  step, then the whole run, then errors, server deltas and warnings. It reads only JSON keys, so it
  works on a report loaded back from a file.
* :func:`write_json` writes the report with sorted keys, creating parent directories.
* :class:`ProgressBars` is a progress factory for :func:`run_load`: one tqdm bar per step on stderr, by time.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtests.config import LoadConfig

__all__ = ["ProgressBars", "table", "write_json"]

_COLUMNS = (
    ("offered", 8),
    ("requests", 9),
    ("ok", 9),
    ("errors", 7),
    ("req/s", 9),
    ("rows/s", 10),
    ("good/s", 9),
    ("p50 ms", 8),
    ("p90 ms", 8),
    ("p99 ms", 8),
    ("p99.9 ms", 9),
    ("max ms", 8),
    ("client cores", 13),
)


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1e6 else f"{value:.3g}"
    return str(value)


def _row(label: str, fig: dict[str, Any], cores: str) -> str:
    lat = fig["latency_ms"]
    cells = [
        label,
        _num(fig["requests"]),
        _num(fig["ok"]),
        _num(sum(fig["errors"].values())),
        _num(fig["throughput_rps"]),
        _num(fig["rows_per_s"], 0),
        _num(fig["goodput_rps"]),
        _num(lat["p50"], 2),
        _num(lat["p90"], 2),
        _num(lat["p99"], 2),
        _num(lat["p999"], 2),
        _num(lat["max"], 2),
        cores,
    ]
    return " ".join(cell.rjust(width) for cell, (_, width) in zip(cells, _COLUMNS, strict=True))


def table(report: dict[str, Any]) -> str:
    """The plain-text summary of a report (see the module contract)."""
    params = report["parameters"]
    kind = (
        f"{report['mode']} loop"
        + (" (Poisson)" if report.get("poisson") else "")
        + (", streaming" if report.get("stream") else "")
    )
    lines = [
        f"infergate-load: {params['model']} at {params['target']}, {kind}, "
        f"{params['processes']} client process(es), {report['rows_per_request']} row(s)/request, "
        f"input {report['input_source']}",
        " ".join(name.rjust(width) for name, width in _COLUMNS),
    ]
    for step in report["steps"]:
        cores = ",".join(f"{c:.2f}" for c in step["client"]["cpu_cores"])
        lines.append(_row(f"{step['offered']:g}", step, cores))
    if len(report["steps"]) > 1:
        lines.append(_row("all", report, ""))
    if report["errors"]:
        lines.append("errors: " + ", ".join(f"{k}={v}" for k, v in sorted(report["errors"].items())))
    budget = report["goodput"]["budget_ms"]
    if budget is not None:
        good = report["goodput"]["within_budget"]
        lines.append(f"goodput: {good} of {report['ok']} OK responses within {budget:g} ms")
    server = report.get("server")
    if server:
        parts = []
        if server.get("requests") is not None:
            parts.append("requests " + ", ".join(f"{k}={v}" for k, v in server["requests"].items()))
        for key in ("queue_duration_s", "compute_duration_s", "request_duration_s"):
            hist = server.get(key)
            if hist and hist["mean"] is not None:
                parts.append(f"{key[:-11]} mean {hist['mean'] * 1e3:.3f} ms (n={hist['count']})")
        batch = server.get("batch_size")
        if batch and batch["mean"] is not None:
            parts.append(f"batch size mean {batch['mean']:.2f} over {batch['count']} batches")
        lines.append("server (deltas incl. warm-up): " + "; ".join(parts))
    lines.extend(f"warning: {w}" for w in report["warnings"])
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: Path) -> None:
    """Writes ``report`` as JSON to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")


class ProgressBars:
    """A progress factory for :func:`loadtests.run.run_load`: one tqdm bar per step on stderr, by time."""

    def __init__(self) -> None:
        self._bar: Any = None

    @staticmethod
    def available() -> bool:
        """Whether tqdm (the ``load`` extra) is installed; without it a run shows no progress bar."""
        try:
            import tqdm  # noqa: F401
        except ImportError:
            return False
        return True

    def __call__(self, index: int, config: LoadConfig, level: float) -> Callable[[float, int], None]:
        from tqdm import tqdm

        self.close()
        total = round(config.warmup_s + config.duration_s, 1)
        unit = "conc" if config.mode == "closed" else "req/s"
        bar = tqdm(
            total=total,
            desc=f"step {index + 1}/{len(config.levels)} ({level:g} {unit})",
            unit="s",
            file=sys.stderr,
            leave=False,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s{postfix}",
        )
        self._bar = bar

        def update(elapsed: float, completed: int) -> None:
            bar.n = min(round(elapsed, 1), total)
            bar.set_postfix_str(f"{completed} done", refresh=False)
            bar.refresh()

        return update

    def close(self) -> None:
        """Removes the current bar, if any."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
