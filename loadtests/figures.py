"""Figures of a step (and of a whole run) from merged summaries: the numbers every report prints.

Contracts (the JSON keys of DESIGN.md §8 are produced here):

* ``requests``: measured requests (warm-up excluded), every outcome; ``ok``; ``errors``: status name ->
  count (gRPC names plus the client's CLIENT_DROPPED / CLIENT_DRAIN_TIMEOUT / STREAM_ERROR).
* ``duration_s``: from the start of measurement to the last measured completion.
* ``throughput_rps`` = ok / duration_s; ``rows_per_s`` = ok * rows / duration_s; ``goodput_rps`` = OK
  responses within the latency budget / duration_s (without a budget, every OK response counts).
* ``latency_ms``: OK responses only, measured from the *intended* send time; ``p50``, ``p90``, ``p99``,
  ``p999``, ``max`` (exact), ``min`` (exact), ``mean`` (exact).
* ``error_latency_ms``: the same percentiles over non-OK outcomes (refusals, timeouts, client drops), from
  the intended send time to the error: how fast the server refused.
* ``send_lag_ms``: how late the client sent compared with its schedule (a client-saturation signal).
* ``timeline``: per window of the intended send time: OK and error counts, p50 / p99 / max latency.
* ``cdf``: latency (ms) at a fixed grid of quantiles, for plots; ``error_cdf``: the same over non-OK outcomes
  (how much of the refusals came back within a given time).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loadtests.histogram import NUM_BUCKETS, Histogram, bucket_bounds
from loadtests.recorder import Summary
from loadtests.status import NUM_CODES, OK, code_name

__all__ = ["CDF_QUANTILES", "latency_ms", "summary_figures", "timeline"]

#: Quantiles (percent) at which the CDF is reported.
CDF_QUANTILES = tuple(
    float(q)
    for q in np.unique(np.concatenate([np.arange(1, 100, 1.0), 100 - np.logspace(0, -3, 16), [100.0]]))
)


def _ms(ns: float | None) -> float | None:
    return None if ns is None else round(ns / 1e6, 6)


def latency_ms(hist: Histogram) -> dict[str, float | None]:
    """p50 / p90 / p99 / p999 / max / min / mean of a histogram, in ms (None when empty)."""
    return {
        "p50": _ms(hist.percentile(50)),
        "p90": _ms(hist.percentile(90)),
        "p99": _ms(hist.percentile(99)),
        "p999": _ms(hist.percentile(99.9)),
        "max": _ms(hist.max_ns),
        "min": _ms(hist.min_ns),
        "mean": _ms(hist.mean()),
    }


def summary_figures(
    summary: Summary, *, measure_ns: int, rows: int, budget_ms: float | None
) -> dict[str, Any]:
    """The §8 figures of one merged summary (see the module contract)."""
    totals = summary.status_totals()
    ok = int(totals[OK])
    last = summary.last_done_ns
    duration_s = max((last - measure_ns) / 1e9, 0.0) if last is not None else 0.0
    per_s = 1.0 / duration_s if duration_s > 0 else 0.0
    return {
        "requests": int(totals.sum()),
        "ok": ok,
        "errors": {code_name(c): int(n) for c, n in enumerate(totals.tolist()) if c != OK and n},
        "warmup_requests": summary.warmup,
        "duration_s": round(duration_s, 6),
        "throughput_rps": ok * per_s,
        "rows_per_s": ok * rows * per_s,
        "goodput_rps": summary.good * per_s,
        "goodput": {
            "budget_ms": budget_ms,
            "within_budget": summary.good,
            "fraction": summary.good / ok if ok else None,
        },
        "latency_ms": latency_ms(summary.latency),
        "error_latency_ms": latency_ms(summary.error_latency),
        "send_lag_ms": {
            "p50": _ms(summary.lag.percentile(50)),
            "p99": _ms(summary.lag.percentile(99)),
            "max": _ms(summary.lag.max_ns),
        },
        "cdf": {
            "quantile": list(CDF_QUANTILES),
            "latency_ms": [_ms(summary.latency.percentile(q)) for q in CDF_QUANTILES],
        },
        "error_cdf": {
            "quantile": list(CDF_QUANTILES),
            "latency_ms": [_ms(summary.error_latency.percentile(q)) for q in CDF_QUANTILES],
        },
    }


def timeline(summary: Summary, window_ns: int) -> dict[str, list[float | None]]:
    """Per-window OK / error counts and latency p50 / p99 / max (ms) over the measured part of a step."""
    statuses = summary.statuses.dense(NUM_CODES)
    latency = summary.timeline.dense(NUM_BUCKETS)
    windows = max(statuses.shape[0], latency.shape[0])
    out: dict[str, list[float | None]] = {
        k: [] for k in ("t_s", "ok", "errors", "p50_ms", "p99_ms", "max_ms")
    }
    upper = np.add(*bucket_bounds(np.arange(NUM_BUCKETS))).astype(np.float64)
    for w in range(windows):
        counts = statuses[w] if w < statuses.shape[0] else np.zeros(NUM_CODES, dtype=np.int64)
        out["t_s"].append(round(w * window_ns / 1e9, 6))
        out["ok"].append(float(counts[OK]))
        out["errors"].append(float(counts.sum() - counts[OK]))
        row = latency[w] if w < latency.shape[0] else np.zeros(NUM_BUCKETS, dtype=np.int64)
        total = int(row.sum())
        if total == 0:
            out["p50_ms"].append(None)
            out["p99_ms"].append(None)
            out["max_ms"].append(None)
            continue
        cumulative = np.cumsum(row)
        for key, q in (("p50_ms", 0.5), ("p99_ms", 0.99)):
            index = int(np.searchsorted(cumulative, max(1, int(np.ceil(q * total - 1e-9)))))
            out[key].append(_ms(float(upper[index])))
        out["max_ms"].append(_ms(float(upper[int(np.flatnonzero(row)[-1])])))
    return out
