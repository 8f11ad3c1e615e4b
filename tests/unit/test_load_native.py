"""The native engine's plumbing: payload and record files, bulk recording, and what it refuses to run."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from bench.scenarios import command_line
from loadtests.config import LoadConfig
from loadtests.native import read_records, write_payloads
from loadtests.recorder import Recorder
from loadtests.secure import ClientSecurity


def test_payloads_file_is_length_prefixed_in_order(tmp_path: Path) -> None:
    payloads = (b"first", b"", b"\x00\x01" * 300)
    write_payloads(tmp_path / "p", payloads)
    data = (tmp_path / "p").read_bytes()
    found, at = [], 0
    while at < len(data):
        (size,) = struct.unpack_from("<I", data, at)
        found.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    assert tuple(found) == payloads


def test_records_file_reads_back_as_rows_of_four(tmp_path: Path) -> None:
    records = np.array([[10, 11, 20, 0], [12, 15, 40, 4], [13, 13, 13, 17]], dtype="<i8")
    records.tofile(tmp_path / "r")
    assert np.array_equal(read_records(tmp_path / "r"), records)
    (tmp_path / "empty").write_bytes(b"")
    assert read_records(tmp_path / "empty").shape == (0, 4)


def test_bulk_records_summarize_exactly_as_one_by_one() -> None:
    rng = np.random.default_rng(3)
    intended = np.sort(rng.integers(0, 2_000_000_000, size=500))
    sent = intended + rng.integers(0, 1_000_000, size=500)
    done = sent + rng.integers(1, 80_000_000, size=500)
    code = rng.choice([0, 0, 0, 1, 4, 17], size=500)
    records = np.stack([intended, sent, done, code], axis=1).astype(np.int64)
    one, bulk = (Recorder(measure_ns=500_000_000, window_ns=100_000_000, budget_ns=50_000_000) for _ in "ab")
    for row in records.tolist():
        one.add(*row)
    bulk.add_records(records)
    one.fold()
    bulk.fold()
    assert one.completed == bulk.completed == 500
    assert one.summary.good == bulk.summary.good
    assert one.summary.warmup == bulk.summary.warmup
    assert np.array_equal(one.summary.status_totals(), bulk.summary.status_totals())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stream": True}, "unary calls only"),
        ({"security": ClientSecurity(token="t")}, "unary calls only"),
        ({"requests": 10}, "not a --requests quota"),
    ],
)
def test_config_refuses_what_the_native_engine_cannot_do(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoadConfig("127.0.0.1:1", "tiny", (4.0,), native_client=Path("engine"), **change)  # type: ignore[arg-type]


def test_shown_command_names_the_native_engine() -> None:
    config = LoadConfig("127.0.0.1:1", "tiny", (8000.0,), mode="open", native_client=Path("build/engine"))
    assert "--native-client build/engine" in command_line(config, "GATEWAY_PORT")
