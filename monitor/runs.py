"""Runs of samples: the consecutive samples of a SampleBatch that belong to one version, read as one block
of rows, so that validation, the windows, the skew check, the metrics and the feedback hub handle a run in
one call instead of one call per sample. A gateway sampling single-row requests sends frames of many
one-row samples, and per-sample work there costs the monitor a Python round trip per row.

Contracts:

* :func:`read_runs` validates every sample of a batch exactly as
  :meth:`~monitor.decode.DecodedSample.decode` does, in batch order, and raises the SampleError of the
  first sample that fails (so a rejected batch names the same sample and reason as a sample-by-sample
  read). It decodes in full only the first sample of each *segment*: consecutive samples with the same
  model, version text and tensor layout (names, datatypes and shapes in order, and the byte length of each
  ``raw``). Validation is a function of exactly those, so a segment's other samples pass when its first
  does. A segment's tensors are its samples' ``raw`` bytes joined, one ``np.frombuffer`` per tensor (a
  segment of one sample keeps the sample's zero-copy views).
* A packed sample (``rows`` set, monitor.proto) is validated in full as one sample whose tensors hold the
  sum of its ``rows``; its ``request_ids`` and ``timestamps_ns`` must be as long as ``rows``
  (``monotonics_ns`` too, or empty), else SampleError ``malformed`` (``shape`` when the rows do not add
  up). It is its own run, whose requests are its entries.
* The runs keep the batch's row order. Consecutive segments of one version whose numeric tensors agree on
  keys, dtypes and dims after the batch dim (samples of 1 row next to samples of 2, say) are one run.
* ``ids``, ``stamps`` and ``rows`` give each sample's request id, ``timestamp_ns`` and row count, in
  order, so ground truth still joins per request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from monitor.catalog import VersionState
from monitor.decode import DecodedSample
from monitor.errors import SampleError
from protos import monitor_pb2

__all__ = ["Resolve", "SampleRun", "read_runs"]

#: The version of a sample (the ``int`` is its index in the batch, for messages); SampleError if none.
Resolve = Callable[[monitor_pb2.Sample, int], Awaitable[VersionState]]


@dataclass(frozen=True, eq=False)
class SampleRun:
    """Consecutive samples of one version as one block: ``sample`` holds all their rows."""

    state: VersionState
    sample: DecodedSample
    ids: list[str]
    stamps: npt.NDArray[np.int64]
    rows: npt.NDArray[np.int32]


def _tensors_key(tensors: Any) -> list[tuple[str, str, list[int], int]]:
    return [(t.name, t.datatype, list(t.shape), len(t.raw)) for t in tensors]


def _key(sample: monitor_pb2.Sample) -> tuple[Any, ...]:
    """Everything validation reads of a sample (see the module doc)."""
    return sample.model, sample.version, _tensors_key(sample.inputs), _tensors_key(sample.outputs)


@dataclass
class _Segment:
    key: tuple[Any, ...]
    state: VersionState
    first: DecodedSample
    members: list[monitor_pb2.Sample]


async def read_runs(samples: Sequence[monitor_pb2.Sample], resolve: Resolve) -> list[SampleRun]:
    """The runs of a batch's ``samples`` (see the module doc); SampleError on the first invalid sample."""
    parts: list[_Segment | SampleRun] = []
    current: _Segment | None = None
    for i, sample in enumerate(samples):
        if sample.rows:  # packed: already one block of several requests
            state = await resolve(sample, i)
            parts.append(_unpacked(state, DecodedSample.decode(sample, state.signature, i), sample, i))
            current = None
            continue
        key = _key(sample)
        if current is not None and key == current.key:
            current.members.append(sample)
            continue
        state = await resolve(sample, i)
        current = _Segment(key, state, DecodedSample.decode(sample, state.signature, i), [sample])
        parts.append(current)
    return _merged([_stacked(part) if isinstance(part, _Segment) else part for part in parts])


def _unpacked(state: VersionState, block: DecodedSample, sample: monitor_pb2.Sample, where: int) -> SampleRun:
    """A packed sample's run: its per-request lists checked against each other and its tensors' rows."""
    count = len(sample.rows)
    rows = np.fromiter(sample.rows, np.int64, count)  # uint32 on the wire: no int32 overflow before the check
    lengths = (len(sample.request_ids), len(sample.timestamps_ns), len(sample.monotonics_ns))
    if lengths[0] != count or lengths[1] != count or lengths[2] not in (0, count):
        raise SampleError(
            "malformed",
            f"sample {where}: a packed sample needs as many request_ids and timestamps_ns as rows "
            f"({count}; monotonics_ns that many or none), got {lengths[0]}, {lengths[1]} and {lengths[2]}",
        )
    if int(rows.sum()) != block.rows:
        raise SampleError(
            "shape", f"sample {where}: rows add up to {int(rows.sum())}, its tensors hold {block.rows} rows"
        )
    stamps = np.fromiter(sample.timestamps_ns, np.int64, count)
    return SampleRun(state, block, list(sample.request_ids), stamps, rows.astype(np.int32))


def _stacked(segment: _Segment) -> SampleRun:
    """One segment as a run: each tensor's ``raw`` bytes of all its samples joined into one array."""
    members, first = segment.members, segment.first
    count = len(members)
    ids = [m.request_id for m in members]
    stamps = np.fromiter([m.timestamp_ns for m in members], np.int64, count)
    rows = np.full(count, first.rows, np.int32)
    if count == 1:
        return SampleRun(segment.state, first, ids, stamps, rows)
    tensors: dict[tuple[str, str], npt.NDArray[Any]] = {}
    head = members[0]
    for position, tensor in enumerate(head.inputs):
        _join(tensors, first, ("input", tensor.name), [m.inputs[position].raw for m in members])
    for position, tensor in enumerate(head.outputs):
        _join(tensors, first, ("output", tensor.name), [m.outputs[position].raw for m in members])
    return SampleRun(
        segment.state,
        DecodedSample(first.model, first.version, count * first.rows, tensors),
        ids,
        stamps,
        rows,
    )


def _join(
    tensors: dict[tuple[str, str], npt.NDArray[Any]],
    first: DecodedSample,
    key: tuple[str, str],
    raws: list[bytes],
) -> None:
    like = first.tensors.get(key)
    if like is None:  # BYTES: no numeric features
        return
    array = np.frombuffer(b"".join(raws), dtype=like.dtype)
    tensors[key] = array.reshape((len(raws) * like.shape[0], *like.shape[1:]))


def _layout(sample: DecodedSample) -> tuple[tuple[tuple[str, str], tuple[int, ...], Any], ...]:
    """What must match for two blocks' rows to stack: tensor keys, dims after the batch dim, dtypes."""
    return tuple((key, array.shape[1:], array.dtype) for key, array in sample.tensors.items())


def _merged(runs: list[SampleRun]) -> list[SampleRun]:
    """Consecutive runs of one version with the same layout, as one run."""
    out: list[SampleRun] = []
    start = 0
    while start < len(runs):
        first = runs[start]
        layout = _layout(first.sample)
        end = start + 1
        while end < len(runs) and runs[end].state is first.state and _layout(runs[end].sample) == layout:
            end += 1
        if end == start + 1:
            out.append(first)
        else:
            group = runs[start:end]
            blocks = [run.sample for run in group]
            tensors = {key: np.concatenate([b.tensors[key] for b in blocks]) for key in first.sample.tensors}
            out.append(
                SampleRun(
                    first.state,
                    DecodedSample(
                        first.sample.model, first.sample.version, sum(b.rows for b in blocks), tensors
                    ),
                    [i for run in group for i in run.ids],
                    np.concatenate([run.stamps for run in group]),
                    np.concatenate([run.rows for run in group]),
                )
            )
        start = end
    return out
