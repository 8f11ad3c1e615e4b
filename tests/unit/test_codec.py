"""Codec round trips (Hypothesis) and its refusals."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gateway.codec import NUMPY_DTYPES, decode_bytes, decode_raw, element_count, encode_array
from gateway.errors import InvalidArgumentError

NUMERIC = sorted(name for name in NUMPY_DTYPES if name != "BYTES")
shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=6)


@st.composite
def numeric_arrays(draw: st.DrawFn) -> tuple[str, np.ndarray]:
    datatype = draw(st.sampled_from(NUMERIC))
    array = draw(hnp.arrays(NUMPY_DTYPES[datatype], draw(shapes)))
    return datatype, array


@given(numeric_arrays())
def test_numeric_round_trip_is_bitwise(case: tuple[str, np.ndarray]) -> None:
    datatype, array = case
    raw = encode_array(array, datatype)
    assert len(raw) == array.size * NUMPY_DTYPES[datatype].itemsize
    decoded = decode_raw("x", datatype, array.shape, raw)
    assert decoded.dtype == NUMPY_DTYPES[datatype]
    assert decoded.shape == array.shape
    assert decoded.tobytes() == np.ascontiguousarray(array).tobytes()


@given(st.lists(st.text(max_size=12), min_size=1, max_size=20))
def test_bytes_round_trip(words: list[str]) -> None:
    array = np.array(words, dtype=object)
    raw = encode_array(array, "BYTES")
    assert decode_bytes("x", raw, len(words)).tolist() == words


def test_decode_raw_is_a_view_over_the_request_bytes() -> None:
    raw = np.arange(6, dtype="<f4").tobytes()
    decoded = decode_raw("x", "FP32", [2, 3], raw)
    assert not decoded.flags.writeable  # frombuffer over immutable bytes: no copy was made
    assert decoded.tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize(
    ("raw", "count", "words"),
    [
        (struct.pack("<I", 5) + b"abc", 1, ("element 0", "5 bytes")),
        (struct.pack("<I", 1) + b"a" + b"\x00", 2, ("element 1", "prefix")),
        (struct.pack("<I", 1) + b"ab", 1, ("trailing",)),
        (struct.pack("<I", 1) + b"\x80", 1, ("UTF-8",)),
    ],
)
def test_bad_bytes_are_refused(raw: bytes, count: int, words: tuple[str, ...]) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        decode_bytes("t", raw, count)
    assert "'t'" in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_bool_bytes_must_be_zero_or_one() -> None:
    with pytest.raises(InvalidArgumentError, match="0 or 1"):
        decode_raw("b", "BOOL", [2], b"\x00\x02")


def test_element_count_does_not_overflow() -> None:
    assert element_count([2**40, 2**40]) == 2**80
    with pytest.raises(InvalidArgumentError, match="expected"):
        decode_raw("x", "FP32", [2**40, 2**40], b"\x00" * 4)
