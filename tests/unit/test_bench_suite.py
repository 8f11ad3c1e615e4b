"""The issue benchmarks' pure helpers: marked sections, ratios, verdicts, log parsing, refusal latency."""

from __future__ import annotations

import grpc
import pytest

from bench.kit import ratio, replace_section, verdict
from bench.swap import load_times
from loadtests.figures import summary_figures
from loadtests.recorder import Recorder
from loadtests.status import OK, code_of


def test_replace_section_keeps_everything_else_and_appends_when_missing() -> None:
    text = (
        "# B\n\n<!-- drift:start -->\nx  \n<!-- drift:end -->\n\n"
        "<!-- swap:start -->\nold\n<!-- swap:end -->\ntail\n"
    )
    out = replace_section(text, "swap", "new\n")
    assert out == text.replace("old", "new")
    added = replace_section(out, "workers", "w")
    assert added.startswith(out.rstrip("\n"))
    assert added.endswith("\n\n<!-- workers:start -->\nw\n<!-- workers:end -->\n")
    assert replace_section(added, "workers", "w2").count("<!-- workers:start -->") == 1


def test_ratio_and_verdict() -> None:
    assert ratio(3.0, 2.0) == pytest.approx(1.5)
    assert ratio(None, 2.0) is None
    assert ratio(1.0, 0.0) is None
    assert verdict(0.8, 0.8, True) == "met"
    assert verdict(0.79, 0.8, True) == "missed"
    assert verdict(1.3, 1.3, False) == "met"
    assert verdict(None, 1.0, False) == "-"


def test_load_times_reads_json_and_text_log_lines() -> None:
    log = (
        '{"ts":"2026-01-01T00:00:01.500+00:00","level":"INFO","msg":"loaded mlp:2 on cpu in 0.08 s"}\n'
        "not json: loaded tiny:1 on cpu in 0.03 s\n"
        '{"msg":"closed mlp:1"}\n'
    )
    times = load_times(log)
    assert [(m, p, s) for m, p, s, _ in times] == [("mlp:2", "cpu", 0.08), ("tiny:1", "cpu", 0.03)]
    assert times[0][3] == pytest.approx(1767225601.5)
    assert times[1][3] is None


def test_refusal_latency_is_reported_apart_from_ok_latency() -> None:
    rec = Recorder(measure_ns=0, window_ns=50_000_000, budget_ns=None)
    unavailable = code_of(grpc.StatusCode.UNAVAILABLE)
    rec.add(0, 0, 10_000_000, OK)
    rec.add(0, 0, 2_000_000, unavailable)
    rec.add(0, 0, 4_000_000, unavailable)
    rec.fold()
    fig = summary_figures(rec.summary, measure_ns=0, rows=1, budget_ms=None)
    assert fig["latency_ms"]["max"] == pytest.approx(10.0)
    assert fig["error_latency_ms"]["max"] == pytest.approx(4.0)
    assert fig["error_latency_ms"]["min"] == pytest.approx(2.0)
