"""The shipper's frames: consecutive samples of one model, version, rate and tensor layout travel as one
packed Sample (monitor.proto ``rows``), and split by the wire contract (tests/collector.py ``unpacked``)
they are exactly the ordinary samples of the requests, in order."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sampler import Sample
from gateway.shipper import encode_batch
from protos import monitor_pb2
from tests.collector import unpacked


def sample(
    request_id: str, rows: int = 1, *, version: str = "1", width: int = 3, rate: float = 1.0,
    tag: bool = False, start: int = 0,
) -> Sample:  # fmt: skip
    x = np.arange(start, start + rows * width, dtype=np.float32).reshape(rows, width)
    y = (np.arange(rows, dtype=np.int64) + start).reshape(rows, 1)
    outputs: tuple[tuple[str, str, Any], ...] = (("y", "INT64", y),)
    if tag:
        words = np.array([f"w{start + i}".encode() for i in range(rows)], dtype=object)
        outputs += (("tag", "BYTES", words),)
    stamp = 1_000 + start
    return Sample("m", version, request_id, stamp, stamp + 7, (("x", "FP32", x),), outputs, rows, 0, rate)


def ordinary(s: Sample) -> monitor_pb2.Sample:
    """The sample alone in a frame: how the shipper sends a run of one."""
    return monitor_pb2.SampleBatch.FromString(encode_batch([s])).samples[0]


def frame(samples: list[Sample]) -> list[monitor_pb2.Sample]:
    return list(monitor_pb2.SampleBatch.FromString(encode_batch(samples)).samples)


def test_consecutive_samples_of_one_layout_are_packed_and_others_split_the_pack() -> None:
    samples = [
        sample("a", start=0),
        sample("b", rows=2, start=10),  # other rows, same layout: packed
        sample("", start=20),  # no id: packed, with an empty id
        sample("c", version="2", start=30),  # another version
        sample("d", rate=0.5, start=40),  # another rate
        sample("e", width=4, start=50),  # another layout
        sample("f", width=4, start=60),
    ]
    sent = frame(samples)
    assert [(list(s.rows), list(s.request_ids), s.request_id) for s in sent] == [
        ([1, 2, 1], ["a", "b", ""], ""),
        ([], [], "c"),
        ([], [], "d"),
        ([1, 1], ["e", "f"], ""),
    ]
    assert list(sent[0].timestamps_ns) == [1_000, 1_010, 1_020]
    assert list(sent[0].monotonics_ns) == [1_007, 1_017, 1_027]
    assert list(sent[0].inputs[0].shape) == [4, 3]
    assert [u for s in sent for u in unpacked(s)] == [ordinary(s) for s in samples]


def test_bytes_tensors_are_packed_element_by_element() -> None:
    samples = [sample(f"r{i}", rows=i + 1, tag=True, start=10 * i) for i in range(3)]
    (packed,) = frame(samples)
    assert list(packed.rows) == [1, 2, 3]
    assert unpacked(packed) == [ordinary(s) for s in samples]


def test_a_sample_whose_tensors_disagree_on_rows_is_sent_alone() -> None:
    odd = sample("odd", rows=2)
    odd = odd._replace(outputs=(("y", "INT64", np.zeros((1, 1), np.int64)),))  # not its rows
    sent = frame([sample("a"), odd, sample("b")])
    assert [s.request_id for s in sent] == ["a", "odd", "b"]
    assert not any(s.rows for s in sent)


_samples = st.lists(
    st.builds(
        sample,
        request_id=st.sampled_from(["", "a", "b"]),
        rows=st.integers(0, 3),
        version=st.sampled_from(["1", "2"]),
        width=st.sampled_from([2, 3]),
        tag=st.booleans(),
        start=st.integers(0, 100),
    ),
    max_size=10,
)


@settings(max_examples=150, deadline=None)
@given(_samples)
def test_any_frame_splits_back_into_its_requests(samples: list[Sample]) -> None:
    assert [u for s in frame(samples) for u in unpacked(s)] == [ordinary(s) for s in samples]
