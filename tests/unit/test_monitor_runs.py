"""Runs of a SampleBatch: consecutive samples of one version with the same tensor layout become one block
of rows, in batch order, with each sample's id, timestamp and rows kept for the feedback join."""

from __future__ import annotations

from typing import cast

import numpy as np

from monitor.catalog import VersionState
from monitor.decode import DecodedSample
from monitor.runs import merge_runs
from protos import monitor_pb2


def sample(rows: int, start: float, width: int = 3, *, outputs: bool = True) -> DecodedSample:
    x = np.arange(start, start + rows * width, dtype=np.float32).reshape(rows, width)
    tensors = {("input", "x"): x}
    if outputs:
        tensors[("output", "y")] = x[:, :1] * 2
    return DecodedSample("m", 1, rows, tensors)


def message(request_id: str, stamp: int) -> monitor_pb2.Sample:
    return monitor_pb2.Sample(model="m", version="1", request_id=request_id, timestamp_ns=stamp)


def test_consecutive_samples_of_a_version_merge_in_order_and_others_split_runs() -> None:
    v1, v2 = cast(VersionState, object()), cast(VersionState, object())
    decoded = [
        (v1, sample(1, 0)),
        (v1, sample(2, 100)),
        (v2, sample(1, 200)),  # another version
        (v1, sample(1, 300)),
        (v1, sample(1, 400, width=4)),  # another layout
        (v1, sample(1, 500, outputs=False)),  # another set of tensors
    ]
    messages = [message(f"r{i}", 1000 + i) for i in range(len(decoded))]
    runs = merge_runs(decoded, messages)
    assert [(run.state is v1, run.ids, run.rows, run.stamps) for run in runs] == [
        (True, ["r0", "r1"], [1, 2], [1000, 1001]),
        (False, ["r2"], [1], [1002]),
        (True, ["r3"], [1], [1003]),
        (True, ["r4"], [1], [1004]),
        (True, ["r5"], [1], [1005]),
    ]
    first = runs[0].sample
    assert first.rows == 3
    expected = np.concatenate([decoded[0][1].tensors[("input", "x")], decoded[1][1].tensors[("input", "x")]])
    np.testing.assert_array_equal(first.tensors[("input", "x")], expected)
    np.testing.assert_array_equal(first.tensors[("output", "y")], expected[:, :1] * 2)
    # A run of one sample keeps the sample itself (its zero-copy views).
    assert runs[1].sample is decoded[2][1]


def test_no_samples_no_runs() -> None:
    assert merge_runs([], []) == []
