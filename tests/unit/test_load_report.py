"""Server-metric deltas (prometheus_client's parser) and the §8 command line."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from bench.scenarios import command_line
from loadtests.cli import parse_load_args
from loadtests.config import REQUESTS_ONLY_CAP_S
from loadtests.promscrape import parse, server_deltas

BEFORE = """
# HELP infergate_requests_total Inference requests by outcome.
# TYPE infergate_requests_total counter
infergate_requests_total{code="OK",model="tiny",version="1"} 10.0
infergate_requests_total{code="OK",model="other",version="1"} 5.0
infergate_batch_size_bucket{le="1.0",model="tiny",version="1"} 4.0
infergate_batch_size_bucket{le="2.0",model="tiny",version="1"} 10.0
infergate_batch_size_bucket{le="+Inf",model="tiny",version="1"} 10.0
infergate_batch_size_sum{model="tiny",version="1"} 16.0
infergate_batch_size_count{model="tiny",version="1"} 10.0
"""
AFTER = """
infergate_requests_total{code="OK",model="tiny",version="1"} 110.0
infergate_requests_total{code="DEADLINE_EXCEEDED",model="tiny",version="1"} 3.0
infergate_requests_total{code="OK",model="other",version="1"} 50.0
infergate_batch_size_bucket{le="1.0",model="tiny",version="1"} 4.0
infergate_batch_size_bucket{le="2.0",model="tiny",version="1"} 60.0
infergate_batch_size_bucket{le="+Inf",model="tiny",version="1"} 60.0
infergate_batch_size_sum{model="tiny",version="1"} 116.0
infergate_batch_size_count{model="tiny",version="1"} 60.0
"""


def test_server_deltas_per_model_and_missing_families() -> None:
    deltas = server_deltas(parse(BEFORE), parse(AFTER), "tiny")
    assert deltas["requests"] == {"DEADLINE_EXCEEDED": 3, "OK": 100}
    assert deltas["batch_size"]["count"] == 50
    assert deltas["batch_size"]["mean"] == pytest.approx(2.0)
    assert deltas["batch_size"]["p50"] == pytest.approx(1.5)  # linear in (1, 2], as histogram_quantile
    assert deltas["queue_duration_s"] is None  # not exposed by this server: null, not an error
    assert deltas["shed"] is None


def test_parse_handles_escaped_label_values() -> None:
    metrics = parse('m{a="x\\"y",b="z"} 2.5 1700000000\n')
    assert metrics == {"m": [((("a", 'x"y'), ("b", "z")), 2.5)]}


def test_design_flags_parse() -> None:
    config, quiet = parse_load_args(
        [
            "--target",
            "127.0.0.1:8001",
            "--model",
            "m",
            "--version",
            "2",
            "--mode",
            "open",
            "--rate",
            "50,100",
            "--poisson",
            "--duration",
            "3",
            "--requests",
            "40",
            "--rows",
            "8",
            "--timeout-us",
            "20000",
            "--processes",
            "2",
            "--stream",
            "--metrics-url",
            "http://127.0.0.1:8002/metrics",
            "--json",
            "out.json",
            "--plot",
            "plots",
        ]
    )
    assert config.levels == (50.0, 100.0)
    assert config.poisson
    assert config.stream
    assert not quiet
    assert (config.duration_s, config.requests, config.rows, config.processes) == (3.0, 40, 8, 2)
    assert config.budget_ns == 20_000_000
    assert config.version == "2"
    assert config.json_path == Path("out.json")
    assert config.plot_dir == Path("plots")


def test_requests_alone_bound_by_a_duration_cap() -> None:
    config, _ = parse_load_args(["--target", "localhost:1", "--model", "m", "--requests", "5"])
    assert config.duration_s == REQUESTS_ONLY_CAP_S
    assert config.requests == 5


def test_remote_targets_are_the_users_choice() -> None:
    for target in ("10.0.0.1:8001", "gpu-host.example.com:8001", "[2001:db8::1]:8001"):
        config, _ = parse_load_args(["--target", target, "--model", "m"])
        assert config.target == target


@pytest.mark.parametrize(
    "argv",
    [
        "--target example.com --model m",
        "--target 10.0.0.1:0 --model m",
        "--target 127.0.0.1:8001 --model m --mode open",
        "--target 127.0.0.1:8001 --model m --concurrency 0",
        "--target 127.0.0.1:8001 --model m --poisson",
    ],
)
def test_usage_errors(argv: str) -> None:
    with pytest.raises(SystemExit) as raised:
        parse_load_args(argv.split())
    assert raised.value.code == 2


def test_bench_command_lines_reproduce_the_config() -> None:
    config, _ = parse_load_args(
        [
            "--target",
            "127.0.0.1:4242",
            "--model",
            "tiny",
            "--mode",
            "open",
            "--rate",
            "10,20",
            "--poisson",
            "--duration",
            "2",
            "--rows",
            "4",
            "--registry",
            "reg",
            "--timeout-us",
            "500",
            "--metrics-url",
            "http://127.0.0.1:99/metrics",
            "--no-progress",
        ]
    )
    line = command_line(config, "PORT")
    argv = shlex.split(line.replace("$PORT", "4242").replace("$METRICS_PORT", "99"))
    assert argv[0] == "infergate-load"
    again, _ = parse_load_args(argv[1:])
    assert again == config
