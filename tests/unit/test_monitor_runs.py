"""Runs of a SampleBatch: consecutive samples of one version with the same tensor layout become one block
of rows, in batch order, with each sample's id, timestamp and rows kept for the feedback join. The oracle
is the sample-by-sample read: :meth:`DecodedSample.decode` of each sample, its rows concatenated."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.catalog import VersionState
from monitor.decode import DecodedSample, sample_key
from monitor.errors import SampleError
from monitor.runs import SampleRun, read_runs
from protos import monitor_pb2
from registry.signature import Signature, TensorSpec

SIGNATURE = Signature(
    inputs=(TensorSpec("x", "FP32", (-1, -1)),),
    outputs=(TensorSpec("y", "INT64", (-1, 1)), TensorSpec("tag", "BYTES", (-1,))),
)


class _State:
    """What read_runs reads of a VersionState: its signature (identity tells versions apart)."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.signature = SIGNATURE


STATES = {("m", 1): _State(1), ("m", 2): _State(2)}


async def _resolve(sample: monitor_pb2.Sample, i: int) -> VersionState:
    key = sample_key(sample, i)
    if key not in STATES:
        raise SampleError("unknown_version", f"sample {i}: no such version")
    return cast(VersionState, STATES[key])


def message(
    request_id: str, stamp: int, rows: int = 1, width: int = 3, *, version: str = "1", outputs: bool = True,
    tag: bool = False, start: float = 0.0,
) -> monitor_pb2.Sample:  # fmt: skip
    x = np.arange(start, start + rows * width, dtype=np.float32).reshape(rows, width)
    sample = monitor_pb2.Sample(model="m", version=version, request_id=request_id, timestamp_ns=stamp)
    sample.inputs.add(name="x", datatype="FP32", shape=x.shape, raw=x.tobytes())
    if outputs:
        y = (np.arange(rows, dtype=np.int64) + int(start)).reshape(rows, 1)
        sample.outputs.add(name="y", datatype="INT64", shape=y.shape, raw=y.tobytes())
    if tag:
        sample.outputs.add(name="tag", datatype="BYTES", shape=[rows], raw=b"\x01\x00\x00\x00a" * rows)
    return sample


def read(samples: list[monitor_pb2.Sample]) -> list[SampleRun]:
    return asyncio.run(read_runs(samples, _resolve))


def oracle(samples: list[monitor_pb2.Sample]) -> list[tuple[Any, DecodedSample]]:
    return [(STATES[sample_key(s, i)], DecodedSample.decode(s, SIGNATURE, i)) for i, s in enumerate(samples)]


def assert_same_rows(runs: list[SampleRun], samples: list[monitor_pb2.Sample]) -> None:
    """The runs hold, in order, every sample's rows, versions, ids, stamps and row counts."""
    expected = oracle(samples)
    assert [i for run in runs for i in run.ids] == [s.request_id for s in samples]
    assert [int(t) for run in runs for t in run.stamps] == [s.timestamp_ns for s in samples]
    assert [int(r) for run in runs for r in run.rows] == [d.rows for _, d in expected]
    position = 0
    for run in runs:
        members = expected[position : position + len(run.ids)]
        position += len(run.ids)
        assert all(state is run.state for state, _ in members)
        assert run.sample.rows == sum(d.rows for _, d in members)
        assert set(run.sample.tensors) == set(members[0][1].tensors)
        for key, array in run.sample.tensors.items():
            want = np.concatenate([d.tensors[key] for _, d in members])
            assert array.dtype == want.dtype
            np.testing.assert_array_equal(array, want)


def test_consecutive_samples_of_a_version_merge_in_order_and_others_split_runs() -> None:
    samples = [
        message("r0", 1000, start=0),
        message("r1", 1001, rows=2, start=100),  # other rows, same layout after the batch dim: merged
        message("r2", 1002, start=200),
        message("r3", 1003, version="2", start=300),  # another version
        message("r4", 1004, start=400),
        message("r5", 1005, width=4, start=500),  # another layout
        message("r6", 1006, outputs=False, start=600),  # another set of tensors
        message("r7", 1007, outputs=False, start=700),
    ]
    runs = read(samples)
    assert [(run.state.version, run.ids) for run in runs] == [
        (1, ["r0", "r1", "r2"]),
        (2, ["r3"]),
        (1, ["r4"]),
        (1, ["r5"]),
        (1, ["r6", "r7"]),
    ]
    assert runs[0].rows.tolist() == [1, 2, 1]
    assert_same_rows(runs, samples)
    # A run of one sample keeps the sample's zero-copy views of the message's bytes.
    assert not runs[1].sample.tensors[("input", "x")].flags.owndata


def test_bytes_tensors_are_checked_but_carry_no_features() -> None:
    samples = [message(f"r{i}", i, tag=True, start=i) for i in range(3)]
    runs = read(samples)
    assert len(runs) == 1
    assert ("output", "tag") not in runs[0].sample.tensors
    assert_same_rows(runs, samples)


def test_no_samples_no_runs() -> None:
    assert read([]) == []


@pytest.mark.parametrize("position", [0, 2, 4])
def test_an_invalid_sample_inside_a_run_is_refused_as_the_sample_by_sample_read_refuses_it(
    position: int,
) -> None:
    samples = [message(f"r{i}", i, start=i) for i in range(5)]
    samples[position].inputs[0].raw = samples[position].inputs[0].raw[:-4]  # one element short
    if position < 4:
        samples[4].model = "no such model!"  # a later fault must not be the one named
    with pytest.raises(SampleError) as got:
        read(samples)
    with pytest.raises(SampleError) as want:
        oracle(samples)
    assert (got.value.reason, str(got.value)) == (want.value.reason, str(want.value))
    assert f"sample {position}" in str(got.value)


_sample = st.builds(
    message,
    request_id=st.sampled_from(["", "a", "b"]),
    stamp=st.integers(0, 10),
    rows=st.integers(0, 3),
    width=st.sampled_from([2, 3]),
    version=st.sampled_from(["1", "2"]),
    outputs=st.booleans(),
    tag=st.booleans(),
    start=st.integers(0, 50).map(float),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_sample, max_size=12))
def test_any_batch_reads_as_its_samples_one_by_one(samples: list[monitor_pb2.Sample]) -> None:
    assert_same_rows(read(samples), samples)


def _layout(m: monitor_pb2.Sample) -> tuple[Any, ...]:
    return m.version, [(t.name, t.datatype, list(t.shape[1:])) for t in (*m.inputs, *m.outputs)]


def pack(members: list[monitor_pb2.Sample]) -> monitor_pb2.Sample:
    """One packed sample (monitor.proto ``rows``) holding ``members``' rows, from the wire contract."""
    head = members[0]
    packed = monitor_pb2.Sample(
        model=head.model,
        version=head.version,
        rows=[m.inputs[0].shape[0] for m in members],
        request_ids=[m.request_id for m in members],
        timestamps_ns=[m.timestamp_ns for m in members],
        monotonics_ns=[m.monotonic_ns for m in members],
    )
    for side in ("inputs", "outputs"):
        for position, t in enumerate(getattr(head, side)):
            total = sum(getattr(m, side)[position].shape[0] for m in members)
            raw = b"".join(getattr(m, side)[position].raw for m in members)
            getattr(packed, side).add(name=t.name, datatype=t.datatype, shape=[total, *t.shape[1:]], raw=raw)
    return packed


def test_a_packed_sample_reads_as_its_requests() -> None:
    members = [
        message("p0", 7, rows=2, start=0),
        message("", 8, start=10),
        message("p2", 9, rows=0, start=20),
    ]
    samples = [message("r0", 1, start=50), pack(members), message("r1", 2, version="2", start=60)]
    runs = read(samples)
    assert [run.ids for run in runs] == [["r0", "p0", "", "p2"], ["r1"]]  # same version and layout: one run
    assert runs[0].rows.tolist() == [1, 2, 1, 0]
    assert runs[0].stamps.tolist() == [1, 7, 8, 9]
    assert_same_rows(runs, [samples[0], *members, samples[2]])


@pytest.mark.parametrize(
    ("spoil", "reason", "words"),
    [
        (lambda p: p.request_ids.pop(), "malformed", "as many request_ids and timestamps_ns as rows"),
        (lambda p: p.timestamps_ns.append(5), "malformed", "got 2, 3 and 2"),
        (lambda p: p.monotonics_ns.pop(), "malformed", "got 2, 2 and 1"),
        (lambda p: p.rows.__setitem__(0, 2), "shape", "rows add up to 3, its tensors hold 2 rows"),
    ],
)
def test_a_packed_sample_whose_lists_disagree_is_refused(spoil: Any, reason: str, words: str) -> None:
    packed = pack([message("a", 1, start=0), message("b", 2, start=3)])
    spoil(packed)
    with pytest.raises(SampleError) as got:
        read([message("r", 0), packed])
    assert got.value.reason == reason
    assert str(got.value).startswith("sample 1: ")
    assert words in str(got.value)


@settings(max_examples=150, deadline=None)
@given(st.lists(_sample, max_size=12), st.lists(st.booleans(), min_size=12, max_size=12))
def test_any_batch_with_packed_runs_reads_as_its_requests(
    samples: list[monitor_pb2.Sample], joins: list[bool]
) -> None:
    """Consecutive samples of one layout are packed where ``joins`` says so; the read is the same."""
    wire: list[monitor_pb2.Sample] = []
    group: list[monitor_pb2.Sample] = []
    for i, s in enumerate(samples):
        if group and (not joins[i] or _layout(s) != _layout(group[0])):
            wire.append(pack(group))
            group = []
        group.append(s)
    if group:
        wire.append(pack(group))
    assert_same_rows(read(wire), samples)
