"""PNG plots of a report (matplotlib, Agg backend): latency CDF, throughput and p99 versus offered load, and
latency over time.

Contracts:

* :func:`write_plots` reads only report JSON keys (so a saved report can be re-plotted), writes three
  PNGs into ``directory`` named ``<prefix>latency_cdf.png``, ``<prefix>throughput_vs_load.png`` and
  ``<prefix>latency_over_time.png``, and returns their paths.
* Latency-over-time puts each request at its *intended* send time, so a stall shows as a ramp of
  latencies (requests that waited) and a swap as a spike. Steps of a sweep follow one another on one
  time axis, with their offered load marked.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

__all__ = ["write_plots"]


def _values(values: list[Any]) -> list[float]:
    """Floats, with None (no OK response in that window or step) as NaN, which matplotlib leaves out."""
    return [math.nan if v is None else float(v) for v in values]


def _log_scale(ax: Any, *series: list[float]) -> None:
    """Log y scale when there is something positive to show (a step with only errors has nothing)."""
    if any(v > 0 for s in series for v in s if not math.isnan(v)):
        ax.set_yscale("log")


def _legend(ax: Any, **kw: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", **kw)


def _label(report: dict[str, Any], step: dict[str, Any]) -> str:
    unit = "concurrency" if report["mode"] == "closed" else "req/s"
    return f"{step['offered']:g} {unit}"


def latency_cdf(report: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for step in report["steps"]:
        points = [
            (ms, q) for ms, q in zip(step["cdf"]["latency_ms"], step["cdf"]["quantile"], strict=True) if ms
        ]
        if points:
            xs, qs = zip(*points, strict=True)
            ax.step(xs, [q / 100 for q in qs], where="post", label=_label(report, step))
    if ax.get_legend_handles_labels()[0]:
        ax.set_xscale("log")
    ax.set_xlabel("latency from intended send time (ms, log scale)")
    ax.set_ylabel("fraction of OK responses")
    ax.set_title(f"Latency CDF: {report['parameters']['model']} ({report['mode']} loop)")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def throughput_vs_load(report: dict[str, Any], path: Path) -> None:
    steps = report["steps"]
    offered = [s["offered"] for s in steps]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(offered, [s["throughput_rps"] for s in steps], "o-", color="tab:blue", label="throughput (req/s)")
    ax.plot(offered, [s["goodput_rps"] for s in steps], "s--", color="tab:green", label="goodput (req/s)")
    if report["mode"] == "open":
        ax.plot(offered, offered, ":", color="gray", label="offered")
    ax.set_xlabel("offered load (" + ("concurrency" if report["mode"] == "closed" else "req/s") + ")")
    ax.set_ylabel("responses per second")
    right = ax.twinx()
    p99 = _values([s["latency_ms"]["p99"] for s in steps])
    right.plot(offered, p99, "^-", color="tab:red", label="p99 latency")
    right.set_ylabel("p99 latency (ms)", color="tab:red")
    _log_scale(right, p99)
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize="small", loc="upper left")
    ax.set_title(f"Throughput and p99 vs offered load: {report['parameters']['model']}")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def latency_over_time(report: dict[str, Any], path: Path) -> None:
    fig, (ax, counts) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True, height_ratios=(3, 1))
    everything: list[float] = []
    for index, step in enumerate(report["steps"]):
        tl = step["timeline"]
        t = [step["start_s"] + x for x in tl["t_s"]]
        first = index == 0
        p50, p99, peak = _values(tl["p50_ms"]), _values(tl["p99_ms"]), _values(tl["max_ms"])
        everything += peak
        ax.plot(t, p50, color="tab:blue", lw=1, label="p50" if first else None)
        ax.plot(t, p99, color="tab:orange", lw=1, label="p99" if first else None)
        ax.plot(t, peak, color="tab:red", lw=0.6, alpha=0.6, label="max" if first else None)
        width = tl["t_s"][1] - tl["t_s"][0] if len(tl["t_s"]) > 1 else 0.1
        counts.plot(t, [n / width for n in tl["ok"]], color="tab:green", lw=1, label="OK" if first else None)
        counts.plot(
            t, [n / width for n in tl["errors"]], color="tab:red", lw=1, label="errors" if first else None
        )
        if len(report["steps"]) > 1 and t:
            ax.axvline(t[0], color="gray", lw=0.5)
            ax.annotate(
                _label(report, step), (t[0], 1), xycoords=("data", "axes fraction"), fontsize=7, va="top"
            )
    _log_scale(ax, everything)
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"Latency over time (by intended send time): {report['parameters']['model']}")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, loc="upper right")
    counts.set_xlabel("time since measurement start (s)")
    counts.set_ylabel("requests/s\n(by send time)")
    counts.grid(True, alpha=0.3)
    _legend(counts, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_plots(report: dict[str, Any], directory: Path, prefix: str = "") -> list[Path]:
    """Writes the three plots (see the module contract) and returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [
        directory / f"{prefix}latency_cdf.png",
        directory / f"{prefix}throughput_vs_load.png",
        directory / f"{prefix}latency_over_time.png",
    ]
    latency_cdf(report, paths[0])
    throughput_vs_load(report, paths[1])
    latency_over_time(report, paths[2])
    return paths
