"""Section ``feedback`` (``make bench-feedback``, ``python -m bench feedback``): ground truth in.

Contracts:

* (a) ingest over HTTP, binary: a ``python -m monitor`` process over a fresh demo registry is given
  ``predictions`` sampled predictions of the demo classifier (one row each, ids like the gateway's
  UUIDs, by ``POST /v1/samples``, not timed); then a client process POSTs ``FeedbackBatch`` bodies of
  ``batch`` labels for them (each request labelled once, every label joined) back to back on one
  connection, in :data:`ROUNDS` rounds. labels/s is the median over rounds of the round's labels / its
  wall time from its first request to its last answer (every label must be joined: the total is read
  from ``infergate_feedback_total{result="matched"}``). The server's RSS is read before and after.
* (b) memory per stored prediction, in this process: ``tracemalloc`` over adding ``store_rows`` entries
  of one row with two probabilities (36-character ids) to a :class:`~monitor.feedback_store.PredictionStore`
  (ids included, as held), beside the store's own estimate (``nbytes``, which bounds ``max_bytes``).
* Goals: (a) at least 100k labels/s; (b) reported. ``--quick`` divides the sizes by 10.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

from bench.markdown import header
from bench.sections import Goal, Results, Section

__all__ = ["SECTION"]

ROUNDS = 5
"""The labels go in this many rounds (consecutive runs of bodies); labels/s is the median round's."""


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--feedback-predictions", type=int, default=200_000, help="feedback: predictions stored")
    p.add_argument("--feedback-batch", type=int, default=10_000, help="feedback: labels per POST")


def _client(port: int, rounds: list[list[bytes]], took: Any) -> None:
    """POST each round's bodies back to back on one connection; ``took[i]`` is round i's wall time."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": "application/x-protobuf"}
    for i, bodies in enumerate(rounds):
        began = time.perf_counter()
        for body in bodies:
            connection.request("POST", "/v1/feedback", body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"POST /v1/feedback: HTTP {response.status}")
        took[i] = time.perf_counter() - began
    connection.close()


def bench_ingest(predictions: int, batch: int) -> dict[str, Any]:
    import numpy as np

    from bench.drift_parts import _metric, _rss_mib
    from registry.demo import build_demo
    from tests.feedback_rig import T0, classifier_outputs, demo_inputs, feedback, samples, set_feedback
    from tests.monitor_servers import MonitorProcess

    with tempfile.TemporaryDirectory(prefix="bench-feedback-") as tmp:
        registry = Path(tmp) / "registry"
        build_demo(registry)
        set_feedback(
            registry, "classifier", f"window_rows = {predictions * 2}\nmax_rows = {predictions * 2}\n"
        )
        x = demo_inputs(registry, 1000, seed=0)
        out = classifier_outputs(registry, 1, x)
        ids = [str(uuid.UUID(int=i)) for i in range(predictions)]
        monitor = MonitorProcess(registry, Path(tmp) / "m.db", Path(tmp) / "monitor.log")
        try:
            import urllib.request

            for start in range(0, predictions, 1000):
                part = ids[start : start + 1000]
                body = samples("classifier", "1", part, [T0 + i for i in range(len(part))], x, out)
                urllib.request.urlopen(
                    urllib.request.Request(f"{monitor.url}/v1/samples", data=body), timeout=120
                ).read()
            labels = np.resize(out["label"], predictions)
            bodies = [
                feedback("classifier", ids[s : s + batch], labels[s : s + batch])
                for s in range(0, predictions, batch)
            ]
            rounds = [list(part) for part in np.array_split(np.array(bodies, dtype=object), ROUNDS)]
            rss_before, first = _rss_mib(monitor.proc.pid), monitor.metrics()
            took = multiprocessing.get_context("spawn").Array("d", ROUNDS)
            client = multiprocessing.get_context("spawn").Process(
                target=_client, args=(monitor.port, rounds, took)
            )
            client.start()
            client.join(600)
            last = monitor.metrics()
            matched = _metric(last, "infergate_feedback_total", result="matched") - _metric(
                first, "infergate_feedback_total", result="matched"
            )
            if matched != predictions:
                raise RuntimeError(f"{matched:,.0f} of {predictions:,} labels joined: {monitor.log_tail()}")
            rates = sorted(len(r) * batch / t for r, t in zip(rounds, took[:], strict=True) if t > 0)
            return {
                "predictions": predictions,
                "batch": batch,
                "body_bytes": len(bodies[0]),
                "labels": matched,
                "rounds": len(rates),
                "seconds": sum(took[:]),
                "labels_per_s": statistics.median(rates) if rates else None,
                "round_rates": rates,
                "rss_before_mib": rss_before,
                "rss_after_mib": _rss_mib(monitor.proc.pid),
                "store_rows": _metric(last, "infergate_feedback_store_rows"),
            }
        finally:
            monitor.stop()


def bench_memory(rows: int) -> dict[str, Any]:
    import numpy as np

    from monitor.feedback_store import PredictionStore
    from registry.feedback_config import FeedbackConfig

    ids = [str(uuid.UUID(int=i)) for i in range(rows)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    store = PredictionStore(FeedbackConfig(max_rows=rows, max_bytes=1 << 40), classes=2)
    for start in range(0, rows, 1000):
        n = min(1000, rows - start)
        store.add(ids[start : start + n], 1, np.ones(n, np.int32), np.arange(n, dtype=np.int64), np.zeros(n),
                  np.zeros((n, 2), np.float32))  # fmt: skip
    del ids  # the store holds its own references to the id strings
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return {"rows": rows, "traced_bytes": used / rows, "estimate_bytes": store.nbytes / rows}


def run(args: argparse.Namespace) -> Results:
    scale = 10 if getattr(args, "quick", False) else 1
    predictions = args.feedback_predictions // scale
    results: Results = {"quick": scale > 1}
    print("== feedback: memory", file=sys.stderr, flush=True)
    results["memory"] = bench_memory(predictions)
    print("== feedback: ingest", file=sys.stderr, flush=True)
    results["ingest"] = bench_ingest(predictions, min(args.feedback_batch, predictions))
    return results


def goals(results: Results) -> list[Goal]:
    a, b = results["ingest"], results["memory"]
    return [
        Goal.at_least(
            f"(a) feedback ingest over HTTP, binary, {a['batch']:,} labels per POST (labels/s)",
            f"median of {a['rounds']} rounds; {a['labels']:,.0f} labels joined in {a['seconds']:.2f} s",
            a["labels_per_s"],
            100_000,
        ),
        Goal.report(
            "(b) memory per stored prediction, one row, 2 probabilities, 36-character id (bytes)",
            f"tracemalloc over {b['rows']:,} rows; estimate {b['estimate_bytes']:.0f}",
            b["traced_bytes"],
        ),
    ]


def render(results: Results) -> str:
    a, b = results["ingest"], results["memory"]
    verdicts = [g.verdict for g in goals(results)]
    lines = header(
        results["meta"],
        "Feedback ingest (monitor)",
        ["- `python -m bench feedback`" + (" --quick" if results.get("quick") else "") + "."],
    )
    lines += [
        "| benchmark | measured | goal |",
        "|---|---:|---|",
        f"| (a) `POST /v1/feedback`, binary `FeedbackBatch` of {a['batch']:,} labels "
        f"({a['body_bytes']:,} bytes), every label joined to one of {a['predictions']:,} stored predictions, "
        "one client process, one connection "
        f"| {a['labels_per_s']:,.0f} labels/s (median of {a['rounds']} rounds; "
        f"{min(a['round_rates']):,.0f} to {max(a['round_rates']):,.0f}) | ≥ 100k labels/s: {verdicts[0]} |",
        f"| (a') server RSS over that run | {a['rss_before_mib']:.0f} -> {a['rss_after_mib']:.0f} MiB | - |",
        f"| (b) memory per stored prediction (one row, 2 probabilities, 36-character id), tracemalloc over "
        f"{b['rows']:,} | {b['traced_bytes']:.0f} bytes | reported; the store's estimate "
        f"(`max_bytes` bound): {b['estimate_bytes']:.0f} bytes |",
        "",
        f"The store held {a['store_rows']:,.0f} rows at the end. The client and the server share the "
        "machine's cores.",
        "",
    ]
    return "\n".join(lines)


SECTION = Section("feedback", "Feedback ingest (monitor)", run, render, goals, _add_arguments)

if __name__ == "__main__":
    from bench.runner import main

    sys.exit(main(["feedback", *sys.argv[1:]]))
