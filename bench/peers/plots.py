"""Plots of the peers benchmark: throughput and p99 against concurrency, one line per server.

Contract: :func:`plot_all` writes one PNG per closed-loop table that has a measured cell (``tiny``,
``mlp``, ``mlp`` with multi-row requests) into ``directory``, each with two panels (req/s, and p99 in ms
on a log axis), and returns ``[(title, path)]``. matplotlib (the ``load`` extra) is imported only here,
with the Agg backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_all"]


def plot_all(summary: dict[str, Any], directory: Path) -> list[tuple[str, Path]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plan = summary["plan"]
    groups = [("tiny", 1, plan["concurrency"]), ("mlp", 1, plan["concurrency"])]
    groups.append(("mlp", plan["batch_rows"], plan["batch_concurrency"]))
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for model, rows, concurrencies in groups:
        if not any(c["model"] == model and c["rows"] == rows for s in summary["servers"] for c in s["cells"]):
            continue
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        for server in summary["servers"]:
            cells = {
                c["concurrency"]: c
                for c in server.get("cells", [])
                if c["model"] == model and c["rows"] == rows and c["concurrency"] in concurrencies
            }
            xs = sorted(cells)
            if not xs:
                continue
            left.plot(xs, [cells[x]["rps"] for x in xs], marker="o", label=server["label"])
            p99 = [(x, cells[x]["p99_ms"]) for x in xs if cells[x]["p99_ms"] is not None]
            right.plot([x for x, _ in p99], [y for _, y in p99], marker="o", label=server["label"])
        title = f"{model}, {rows} row{'s' if rows > 1 else ''} per request"
        for axis, ylabel in ((left, "requests/s"), (right, "p99 latency (ms)")):
            axis.set_xscale("log", base=2)
            axis.set_xticks(concurrencies, [str(c) for c in concurrencies])
            axis.set_xlabel("concurrency (requests in flight)")
            axis.set_ylabel(ylabel)
            axis.grid(True, which="both", alpha=0.3)
        right.set_yscale("log")
        left.set_ylim(bottom=0)
        left.legend(fontsize=8)
        fig.suptitle(f"{title}: throughput and p99 against concurrency")
        fig.tight_layout()
        path = directory / f"{model}-rows{rows}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        out.append((title, path))
    return out
