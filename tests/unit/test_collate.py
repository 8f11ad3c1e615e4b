"""collate.stack / split round trips (Hypothesis) and the row-count contract."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.collate import CollationError, batch_key, pad, split, stack, unpad


@given(st.lists(st.integers(1, 9), min_size=1, max_size=12), st.integers(1, 5), st.integers(0, 2**31))
def test_stack_then_split_returns_each_request_its_own_rows(rows: list[int], width: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    requests = [
        {
            "a": rng.normal(size=(n, width)).astype(np.float32),
            "b": rng.integers(0, 9, size=(n,)).astype(np.int64),
        }
        for n in rows
    ]
    assert len({batch_key(r) for r in requests}) == 1
    feeds, offsets = stack(requests)
    assert offsets.tolist() == [0, *np.cumsum(rows).tolist()]
    assert feeds["a"].shape == (sum(rows), width)
    # A model that maps each row independently: outputs are per-row functions of the inputs.
    outputs = [feeds["a"] * 2, feeds["b"] + 1]
    parts = split(outputs, offsets)
    for request, (a, b) in zip(requests, parts, strict=True):
        assert a.tobytes() == (request["a"] * 2).tobytes()
        assert b.tolist() == (request["b"] + 1).tolist()


def test_single_request_is_not_copied() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    feeds, offsets = stack([{"x": x}])
    assert feeds["x"] is x
    assert offsets.tolist() == [0, 2]


def test_batch_key_separates_non_batch_dims_and_dtypes() -> None:
    a = {"x": np.zeros((2, 3, 4), np.float32)}
    assert batch_key(a) == batch_key({"x": np.zeros((7, 3, 4), np.float32)})
    assert batch_key(a) != batch_key({"x": np.zeros((2, 3, 5), np.float32)})
    assert batch_key(a) != batch_key({"x": np.zeros((2, 3, 4), np.float64)})


def test_split_refuses_outputs_with_the_wrong_row_count() -> None:
    _, offsets = stack([{"x": np.zeros((2, 1))}, {"x": np.zeros((3, 1))}])
    with pytest.raises(CollationError, match="expected 5 rows"):
        split([np.zeros((4, 1))], offsets)
    with pytest.raises(CollationError):
        split([np.float32(1.0)], offsets)  # type: ignore[list-item]


def test_unpad_drops_the_padding_rows_of_batched_outputs_only() -> None:
    feeds = pad({"x": np.arange(6, dtype=np.float32).reshape(3, 2)}, 3, 8)
    assert feeds["x"].shape == (8, 2)
    per_row, scalar, fixed = feeds["x"] * 2, np.float32(1.0), np.zeros((4, 2), np.float32)
    trimmed = unpad([per_row, np.asarray(scalar), fixed], 3, 8)
    np.testing.assert_array_equal(trimmed[0], np.arange(6, dtype=np.float32).reshape(3, 2) * 2)
    assert (trimmed[1].shape, trimmed[2].shape) == ((), (4, 2))  # not batched along rows: untouched
    outputs = [per_row]
    assert unpad(outputs, 8, 8) is outputs  # nothing padded: the same list
