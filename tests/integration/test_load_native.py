"""infergate-load's native engine against a real gateway: the Python engine's schedule, its codes, its
reports. The engine is compiled here (it needs only g++)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from bench.models import build_bench_registry
from gateway.config import GatewayConfig
from loadtests.config import LoadConfig
from loadtests.native import build, run_native
from loadtests.recorder import Recorder
from loadtests.run import run_load
from loadtests.schedule import arrivals
from loadtests.spec import StepSpec, WorkerTask
from loadtests.status import code_of
from protos import inference_pb2 as pb
from tests.servers import ServerThread

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ (make native-client)")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("native") / "infergate-load-native")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bench_registry(tmp_path_factory.mktemp("native-registry"), models=("tiny",))


@pytest.fixture(scope="module")
def gateway(registry: Path) -> Iterator[str]:
    server = ServerThread(GatewayConfig(registry, port=0, metrics_port=None, sampling=False))
    yield server.target
    server.stop()


def _config(gateway: str, registry: Path, engine: Path, **changes: object) -> LoadConfig:
    base: dict[str, object] = {
        "mode": "open", "poisson": True, "warmup_s": 0.2, "duration_s": 0.6, "seed": 7, "drain_s": 1.0,
        "input_source": "reference", "registry": registry, "progress": False, "native_client": engine,
    }  # fmt: skip
    base.update(changes)
    levels = base.pop("levels", (300.0,))
    return LoadConfig(gateway, "tiny", levels, **base)  # type: ignore[arg-type]


def test_open_loop_sends_the_python_engines_schedule_and_every_call_is_answered(
    gateway: str, registry: Path, engine: Path
) -> None:
    report = run_load(_config(gateway, registry, engine))
    planned = sum(
        chunk.size
        for chunk in arrivals(
            rate=300.0,
            start_ns=0,
            end_ns=800_000_000,
            measure_ns=200_000_000,
            quota=None,
            poisson=True,
            seed=7,
        )
    )
    assert report["requests"] + report["warmup_requests"] == planned
    assert report["errors"] == {}
    assert report["ok"] == report["requests"] > 0
    assert report["latency_ms"]["p50"] is not None
    assert report["steps"][0]["client"]["cpu_s"][0] > 0


def test_closed_loop_keeps_its_chains_busy_for_the_duration(
    gateway: str, registry: Path, engine: Path
) -> None:
    report = run_load(_config(gateway, registry, engine, mode="closed", poisson=False, levels=(4.0,)))
    assert report["errors"] == {}
    assert report["ok"] > 4  # chains went on after their first call


def test_server_errors_come_back_as_their_grpc_codes(gateway: str, engine: Path) -> None:
    wrong = pb.ModelInferRequest(model_name="tiny")  # 15 values where the model takes 16
    wrong.inputs.add(name="input", datatype="FP32", shape=[1, 15])
    wrong.raw_input_contents.append(np.zeros(15, np.float32).tobytes())
    unknown = pb.ModelInferRequest(model_name="no-such-model")
    spec = StepSpec(
        target=gateway, mode="closed", payloads=(wrong.SerializeToString(), unknown.SerializeToString()),
        rows=1, concurrency=2, warmup_s=0.0, duration_s=0.3, drain_s=1.0,
    )  # fmt: skip
    task = WorkerTask(spec, 0, 1, time.perf_counter_ns())
    recorder = Recorder(measure_ns=task.measure_ns, window_ns=spec.window_ns, budget_ns=None)
    run_native(engine, task, recorder)
    recorder.fold()
    totals = recorder.summary.status_totals()
    invalid, missing = (code_of(c) for c in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND))
    assert totals[invalid] > 0
    assert totals[missing] > 0
    assert totals.sum() == totals[invalid] + totals[missing]  # nothing else, no OK
