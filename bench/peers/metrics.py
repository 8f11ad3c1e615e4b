"""Each server's own batch figure, from its Prometheus metrics scraped before and after a step.

Contracts:

* :func:`parse` turns the Prometheus text format into ``{(sample name, sorted labels): value}`` with
  ``prometheus_client``'s parser.
* :func:`mean_batch` is the mean rows per executed batch of ``model`` between two scrapes, from the
  server's own counters:

  - infergate: ``infergate_batch_size_sum / infergate_batch_size_count`` (the histogram of rows per batch);
  - Triton (PyTriton): ``nv_inference_count / nv_inference_exec_count`` (inferences, i.e. rows, per model
    execution), or ``nv_inference_request_success`` x ``rows_per_request`` in place of
    ``nv_inference_count`` when it is absent;
  - MLServer: ``peer_batch_rows_sum / peer_batch_rows_count``, the histogram that the benchmark's runtime
    records through MLServer's own metrics (MLServer has no batch-size metric).

  It is ``None`` ("-" in the table) when either scrape is missing, a family is absent, or no batch ran.
  Samples match ``model`` on the ``model`` or ``model_name`` label. Deltas include the step's warm-up: a
  server cannot tell warm-up requests from measured ones.
* :func:`scrape` never raises: an unreachable endpoint is ``None``.
"""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["BATCH_FAMILIES", "Samples", "mean_batch", "parse", "scrape", "total"]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

#: Server kind -> ((rows counter, counts requests rather than rows) in order of preference, batches counter).
BATCH_FAMILIES: dict[str, tuple[tuple[tuple[str, bool], ...], str]] = {
    "infergate": ((("infergate_batch_size_sum", False),), "infergate_batch_size_count"),
    "triton": (
        (("nv_inference_count", False), ("nv_inference_request_success", True)),
        "nv_inference_exec_count",
    ),
    "mlserver": ((("peer_batch_rows_sum", False),), "peer_batch_rows_count"),
}
_MODEL_LABELS = ("model", "model_name")


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return samples


def scrape(url: str, timeout_s: float = 5.0) -> Samples | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return parse(response.read().decode())
    except (OSError, ValueError):
        return None


def total(samples: Samples, name: str, model: str) -> float | None:
    """Sum of the ``name`` samples labelled with ``model``; None when there is none. A counter matches
    with or without the ``_total`` suffix (the parser adds it to counters that lack it, as Triton's do)."""
    names = {name, f"{name}_total"}
    values = [
        value
        for (sample, labels), value in samples.items()
        if sample in names and any(k in _MODEL_LABELS and v == model for k, v in labels)
    ]
    return sum(values) if values else None


def _delta(before: Samples, after: Samples, name: str, model: str) -> float | None:
    """``after - before``; a family absent before but present after counts from 0 (labelled children
    appear on first use)."""
    b = total(after, name, model)
    return None if b is None else b - (total(before, name, model) or 0.0)


def mean_batch(
    kind: str, before: Samples | None, after: Samples | None, model: str, rows_per_request: int = 1
) -> float | None:
    """Mean rows per batch of ``model`` between the scrapes (see the module contract)."""
    if before is None or after is None or kind not in BATCH_FAMILIES:
        return None
    rows_names, batches_name = BATCH_FAMILIES[kind]
    batches = _delta(before, after, batches_name, model)
    if batches is None or batches <= 0:
        return None
    for name, per_request in rows_names:
        rows = _delta(before, after, name, model)
        if rows is not None:
            return rows * (rows_per_request if per_request else 1) / batches
    return None
