"""Runs of samples: the consecutive validated samples of a SampleBatch that belong to one version, merged
into one block of rows, so that the windows, the skew check, the metrics and the feedback hub take a run's
rows in one call instead of one call per sample. A gateway sampling single-row requests sends frames of
many one-row samples, and per-sample calls there cost the monitor a Python round trip per row.

Contracts: :func:`merge_runs` keeps the batch's row order. A run holds consecutive samples of one version
(the same :class:`~monitor.catalog.VersionState`) that carry the same numeric tensors with the same
dims after the batch dim; its tensors are theirs concatenated along the batch dim (a run of one sample
keeps the sample's own zero-copy views). ``ids``, ``stamps`` and ``rows`` give each sample's request id,
``timestamp_ns`` and row count, in order, so ground truth still joins per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from monitor.catalog import VersionState
from monitor.decode import DecodedSample
from protos import monitor_pb2

__all__ = ["SampleRun", "merge_runs"]


@dataclass(frozen=True, eq=False)
class SampleRun:
    """Consecutive samples of one version as one block: ``sample`` holds all their rows."""

    state: VersionState
    sample: DecodedSample
    ids: list[str]
    stamps: list[int]
    rows: list[int]


def _layout(sample: DecodedSample) -> tuple[tuple[tuple[str, str], tuple[int, ...], Any], ...]:
    """What must match for two samples' rows to stack: tensor keys, dims after the batch dim, dtypes."""
    return tuple((key, array.shape[1:], array.dtype) for key, array in sample.tensors.items())


def merge_runs(
    decoded: Sequence[tuple[VersionState, DecodedSample]], samples: Sequence[monitor_pb2.Sample]
) -> list[SampleRun]:
    """The runs of ``decoded`` (validated samples, in batch order, beside their messages ``samples``)."""
    runs: list[SampleRun] = []
    start = 0
    count = len(decoded)
    while start < count:
        state, first = decoded[start]
        layout = _layout(first)
        end = start + 1
        while end < count and decoded[end][0] is state and _layout(decoded[end][1]) == layout:
            end += 1
        members = [sample for _, sample in decoded[start:end]]
        if len(members) == 1:
            merged = first
        else:
            tensors: dict[tuple[str, str], npt.NDArray[Any]] = {
                key: np.concatenate([member.tensors[key] for member in members]) for key in first.tensors
            }
            merged = DecodedSample(first.model, first.version, sum(m.rows for m in members), tensors)
        messages = samples[start:end]
        runs.append(
            SampleRun(
                state,
                merged,
                [message.request_id for message in messages],
                [message.timestamp_ns for message in messages],
                [member.rows for member in members],
            )
        )
        start = end
    return runs
