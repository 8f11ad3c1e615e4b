"""Execution providers on a CPU-only machine (always in CI): order of preference, explicit fallback with
its reason in metrics, metadata and the index, require_gpu refusing a load while the old version serves,
and batch-size bucket padding giving bit-identical answers."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient

from gateway.config import GatewayConfig
from gateway.errors import InvalidArgumentError
from gateway.loader import batch_buckets, runner_options
from gateway.runner import (
    Runner,
    RunnerOptions,
    _direct_runs,
    _provider_options,
    available_providers,
    onnxruntime_providers,
)
from protos import inference_pb2, inference_pb2_grpc
from registry.layout import scan_registry
from registry.publish import publish
from tests.onnx_models import build_registry, mlp_model
from tests.oracle import assert_bitwise_equal, run_reference
from tests.servers import ServerThread

pytestmark = pytest.mark.skipif(
    "cuda" in available_providers(), reason="these tests describe a machine without CUDA; see tests/gpu"
)


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_preference_order_and_reasons(tmp_path: Path) -> None:
    chosen, skipped = onnxruntime_providers(RunnerOptions(providers=("tensorrt", "cuda", "cpu")))
    assert [name for name, _ in chosen] == ["CPUExecutionProvider"]
    assert [reason.split(":")[0] for reason in skipped] == ["tensorrt", "cuda"]
    path = tmp_path / "m.onnx"
    onnx.save(mlp_model(), path)
    runner = Runner.load(path, RunnerOptions(providers=("cuda", "cpu"), name="m:1"))
    try:
        assert runner.provider == "cpu"
        assert "cuda" in runner.fallback_reason
    finally:
        runner.close()
    with pytest.raises(Exception, match="GPU is required"):
        Runner.load(path, RunnerOptions(providers=("cuda", "cpu"), require_gpu=True, name="m:1"))


def test_provider_options_are_translated() -> None:
    trt = _provider_options(
        "tensorrt", {"fp16": True, "max_workspace_size": 1 << 30, "engine_cache_path": "/c"}
    )
    assert trt == {
        "trt_fp16_enable": "1",
        "trt_max_workspace_size": 1 << 30,
        "trt_engine_cache_path": "/c",
        "trt_engine_cache_enable": "1",
        "trt_int8_enable": "0",
    }
    cuda = _provider_options(
        "cuda", {"device_id": 1, "enable_cuda_graph": False, "arena_extend_strategy": "kSameAsRequested"}
    )
    assert cuda == {"device_id": 1, "enable_cuda_graph": "0", "arena_extend_strategy": "kSameAsRequested"}


def test_device_override_and_trt_cache_outside_the_ready_tree(tmp_path: Path) -> None:
    toml = '[runtime]\nproviders = ["tensorrt", "cuda", "cpu"]\n[runtime.cuda]\ndevice_id = 0\n'
    root = build_registry(tmp_path / "r", {"m": mlp_model()}, toml={"m": toml})
    info = scan_registry(root)["m"]
    options = runner_options(root, info, 1, device=None, require_gpu=False)
    assert options.providers == ("tensorrt", "cuda", "cpu")
    cache = Path(str(options.provider_options["tensorrt"]["engine_cache_path"]))
    assert cache == root / "m" / ".trt-cache" / "1"
    assert root / "m" / "1" not in cache.parents
    assert runner_options(root, info, 1, device="cpu", require_gpu=False).providers == ("cpu",)
    gpu = runner_options(root, info, 1, device="cuda:3", require_gpu=True)
    assert gpu.providers == ("cuda", "cpu")
    assert gpu.provider_options["cuda"]["device_id"] == 3
    assert gpu.require_gpu


def test_default_buckets() -> None:
    assert batch_buckets((), "cpu", 64) == ()
    assert batch_buckets((), "cuda", 48) == (1, 2, 4, 8, 16, 32, 48)
    assert batch_buckets((4, 8), "cpu", 64) == (4, 8)
    assert batch_buckets((), "cuda", 0) == ()


def test_fallback_is_visible_and_require_gpu_keeps_the_old_version(tmp_path: Path) -> None:
    toml = '[runtime]\nproviders = ["cuda", "cpu"]\n[batching]\nlatency_budget_ms = 30000.0\n'
    root = build_registry(tmp_path / "r", {"m": mlp_model()}, toml={"m": toml})
    server = ServerThread(GatewayConfig(root, sampling=False, port=0, metrics_port=0, poll_interval=0.1))
    try:
        ready = server.registry.get_sample_value(
            "infergate_model_ready", {"model": "m", "version": "1", "provider": "cpu"}
        )
        assert ready == 1
        with grpc.insecure_channel(server.target) as channel:
            stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
            meta = stub.ModelMetadata(inference_pb2.ModelMetadataRequest(name="m"), timeout=10)
        assert meta.parameters["provider"].string_param == "cpu"
        assert "cuda" in meta.parameters["provider_fallback"].string_param
        with grpcclient.InferenceServerClient(server.target) as client:
            index = client.get_model_repository_index(as_json=True)["models"]
            assert index[0]["state"] == "READY"
            assert "serving on cpu" in index[0]["reason"]
            gpu_required = toml.replace("[batching]", "require_gpu = true\n[batching]")
            (root / "m" / "model.toml").write_text(gpu_required)
            source = tmp_path / "m2.onnx"
            onnx.save(mlp_model(seed=1), source)
            publish(root, "m", source)

            def refused() -> bool:
                entries = client.get_model_repository_index(as_json=True)["models"]
                return any(e["version"] == "2" and "GPU is required" in e.get("reason", "") for e in entries)

            assert wait_for(refused)
            x = np.ones((2, 16), np.float32)
            tensor = grpcclient.InferInput("x", [2, 16], "FP32")
            tensor.set_data_from_numpy(x)
            assert client.infer("m", [tensor]).get_response().model_version == "1"
    finally:
        server.stop()


def test_bucket_padding_is_bit_identical(tmp_path: Path) -> None:
    toml = (
        "[batching]\nmax_batch_size = 16\nmax_queue_delay_ms = 5.0\nlatency_budget_ms = 30000.0\n"
        "[runtime]\nbuckets = [4, 8, 16]\n"
    )
    root = build_registry(tmp_path / "r", {"m": mlp_model()}, toml={"m": toml})
    server = ServerThread(GatewayConfig(root, sampling=False, port=0, metrics_port=None, poll_interval=0))
    try:

        def call(seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
            x = np.random.default_rng(seed).normal(size=(seed % 7 + 1, 16)).astype(np.float32)
            with grpcclient.InferenceServerClient(server.target) as client:
                tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                result = client.infer("m", [tensor])
                return x, {name: result.as_numpy(name) for name in ("logits", "probs")}

        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(call, range(64)))
        for x, outputs in answers:
            expected = run_reference(root, "m", 1, {"x": x})
            for name, array in expected.items():
                assert_bitwise_equal(outputs[name], array)
        with grpcclient.InferenceServerClient(server.target) as client:
            stats = client.get_inference_statistics("m", as_json=True)["model_stats"][0]
        observed = {
            key: int(value["compute_infer"].get("count", 0)) for key, value in stats["response_stats"].items()
        }
        warmup = 2  # observations per profiled size at load
        assert sum(observed[f"profile:{size}"] - warmup for size in (4, 8, 16)) > 0
        assert observed["profile:1"] == warmup  # no batch ran unpadded below the smallest bucket
        assert observed["profile:2"] == warmup
    finally:
        server.stop()


def test_cpu_runs_match_the_public_run_bit_for_bit_and_fall_back_without_the_binding(tmp_path: Path) -> None:
    """The CPU path calls onnxruntime's binding-level run; its answers equal the public ``run``'s, its
    errors stay INVALID_ARGUMENT, and a session object without the binding gets the public run."""
    path = tmp_path / "m.onnx"
    onnx.save(mlp_model(), path)
    runner = Runner.load(path, RunnerOptions(providers=("cpu",), name="m:1"))
    try:
        assert runner._direct is not None
        session = runner._sessions[0]  # type: ignore[index]
        name = session.get_inputs()[0].name
        x = np.random.default_rng(3).standard_normal((5, session.get_inputs()[0].shape[1])).astype(np.float32)
        outputs = [o.name for o in session.get_outputs()]
        direct = runner.run_sync(0, {name: x}, outputs)
        for got, expected in zip(direct, session.run(outputs, {name: x}), strict=True):
            assert_bitwise_equal(got, expected)
        with pytest.raises(InvalidArgumentError, match="rejected the input"):
            runner.run_sync(0, {name: x[:, :3]}, outputs)

        class _Public:  # what an onnxruntime without ``_sess`` would hand over
            def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
                return session.run(names, feeds)

        assert _direct_runs([_Public()]) is None  # type: ignore[list-item]
        runner._direct = None
        for got, expected in zip(runner.run_sync(0, {name: x}, outputs), direct, strict=True):
            assert_bitwise_equal(got, expected)
    finally:
        runner.close()
