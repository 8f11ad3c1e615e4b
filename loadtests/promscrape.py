"""Server-side figures: scrape the gateway's Prometheus ``/metrics`` before and after a step, report deltas.

Contracts:

* :func:`scrape` fetches one text-format page (any URL the user gives, 5 s timeout) and :func:`parse`
  turns it, with ``prometheus_client``'s own text-format parser, into ``{sample name: [(labels,
  value)]}`` (labels sorted by name). Sample names keep their ``_bucket``/``_sum``/``_count``/``_total``
  suffixes; a page that is not valid text format raises ValueError.
* :func:`server_deltas` reports, for one model (and version, when given), the change between two scrapes:
  requests by code, the request / queue / compute duration histograms (count, mean and p50/p99 by
  Prometheus' linear interpolation in buckets) and the batch-size histogram (batches, mean, p50, p99),
  plus shed counts. A family the server does not expose (e.g. the queue histogram before batching
  exists) is reported as ``null``, never as an error. The deltas include the step's warm-up: the server
  cannot tell warm-up requests apart.
"""

from __future__ import annotations

import math
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Metrics", "scrape", "server_deltas"]

Labels = tuple[tuple[str, str], ...]
Metrics = dict[str, list[tuple[Labels, float]]]

_HISTOGRAMS = {
    "request_duration_s": "infergate_request_duration_seconds",
    "queue_duration_s": "infergate_queue_duration_seconds",
    "compute_duration_s": "infergate_compute_duration_seconds",
    "batch_size": "infergate_batch_size",
}


def scrape(url: str, timeout_s: float = 5.0) -> Metrics:
    """Fetches and parses ``url`` (see the module contract)."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        text = response.read().decode("utf-8", "replace")
    return parse(text)


def parse(text: str) -> Metrics:
    """Prometheus text exposition -> ``{sample name: [(labels, value)]}``."""
    out: Metrics = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            out.setdefault(sample.name, []).append((labels, float(sample.value)))
    return out


def server_deltas(before: Metrics, after: Metrics, model: str, version: str = "") -> dict[str, Any]:
    """Per-model deltas between two scrapes (see the module contract)."""

    def pick(metrics: Metrics, name: str) -> list[tuple[dict[str, str], float]]:
        chosen = []
        for labels, value in metrics.get(name, []):
            d = dict(labels)
            if d.get("model") == model and (not version or d.get("version") == version):
                chosen.append((d, value))
        return chosen

    def summed(metrics: Metrics, name: str, key: str | None) -> dict[str, float]:
        sums: dict[str, float] = {}
        for labels, value in pick(metrics, name):
            k = labels.get(key, "") if key else ""
            sums[k] = sums.get(k, 0.0) + value
        return sums

    def delta(name: str, key: str | None, keep_zero: bool = False) -> dict[str, float] | None:
        if name not in after:
            return None
        b, a = summed(before, name, key), summed(after, name, key)
        return {k: a[k] - b.get(k, 0.0) for k in sorted(a) if keep_zero or a[k] - b.get(k, 0.0)}

    out: dict[str, Any] = {}
    requests = delta("infergate_requests_total", "code")
    out["requests"] = None if requests is None else {k: int(v) for k, v in requests.items()}
    shed = delta("infergate_shed_total", "reason")
    out["shed"] = None if shed is None else {k: int(v) for k, v in shed.items()}
    for key, family in _HISTOGRAMS.items():
        buckets = delta(f"{family}_bucket", "le", keep_zero=True)
        if buckets is None:
            out[key] = None
            continue
        count = sum((delta(f"{family}_count", None) or {}).values())
        total = sum((delta(f"{family}_sum", None) or {}).values())
        out[key] = {
            "count": int(count),
            "mean": total / count if count else None,
            "p50": _quantile(0.5, buckets),
            "p99": _quantile(0.99, buckets),
        }
    return out


def _quantile(q: float, buckets: dict[str, float]) -> float | None:
    """Prometheus ``histogram_quantile`` on cumulative bucket deltas keyed by ``le``."""
    edges = sorted((math.inf if le == "+Inf" else float(le), count) for le, count in buckets.items())
    if not edges or edges[-1][1] <= 0:
        return None
    rank = q * edges[-1][1]
    previous_edge, previous_count = 0.0, 0.0
    for edge, count in edges:
        if count >= rank:
            if math.isinf(edge):
                return previous_edge
            if count == previous_count:
                return edge
            return previous_edge + (edge - previous_edge) * (rank - previous_count) / (count - previous_count)
        previous_edge, previous_count = edge, count
    return previous_edge
