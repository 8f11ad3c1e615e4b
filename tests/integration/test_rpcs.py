"""Every non-inference RPC answers correctly to tritonclient; also health, reflection and /metrics."""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from tritonclient.utils import InferenceServerException

from gateway.config import GatewayConfig
from tests.onnx_models import build_registry, dtype_model
from tests.servers import ServerThread


def _fp32(rows: int) -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("x", [rows, 3], "FP32")
    tensor.set_data_from_numpy(np.ones((rows, 3), np.float32))
    return [tensor]


def test_server_live_ready_and_metadata(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "infergate"
    assert meta["version"]
    assert "model_repository" in meta["extensions"]


def test_model_ready(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_model_ready("multi_io")
    assert client.is_model_ready("multi_io", "1")
    assert not client.is_model_ready("multi_io", "2")
    assert not client.is_model_ready("no_such_model")


def test_model_metadata(client: grpcclient.InferenceServerClient) -> None:
    meta = client.get_model_metadata("multi_io", as_json=True)
    assert meta["name"] == "multi_io"
    assert meta["versions"] == ["1"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("a", "FP32", ["-1", "4"]),
        ("b", "INT64", ["-1", "4"]),
    ]
    assert [(t["name"], t["datatype"]) for t in meta["outputs"]] == [
        ("total", "FP32"),
        ("doubled", "INT64"),
        ("rowmax", "FP32"),
    ]
    with pytest.raises(InferenceServerException, match="not found"):
        client.get_model_metadata("no_such_model")


def test_model_config(client: grpcclient.InferenceServerClient) -> None:
    config = client.get_model_config("multi_io", as_json=True)["config"]
    assert config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == 8
    assert config["input"][0] == {"name": "a", "data_type": "TYPE_FP32", "dims": ["4"]}
    assert config["output"][2].get("dims", []) == []  # rowmax is [batch]: no dims beyond the batch
    fixed = client.get_model_config("fixed", as_json=True)["config"]
    assert fixed.get("max_batch_size", 0) == 0
    assert fixed["input"][0]["dims"] == ["2", "3"]
    assert (
        client.get_model_config("dtype_bytes", as_json=True)["config"]["input"][0]["data_type"]
        == "TYPE_STRING"
    )


def test_model_statistics_count_rows_and_executions(client: grpcclient.InferenceServerClient) -> None:
    def current() -> dict[str, object]:
        stats = client.get_inference_statistics("dtype_int32", as_json=True)["model_stats"]
        assert len(stats) == 1
        return stats[0]

    before = current()
    tensor = grpcclient.InferInput("x", [4, 3], "INT32")
    tensor.set_data_from_numpy(np.ones((4, 3), np.int32))
    client.infer("dtype_int32", [tensor])
    client.infer("dtype_int32", [tensor])
    after = current()
    assert int(after.get("inference_count", 0)) - int(before.get("inference_count", 0)) == 8
    assert int(after.get("execution_count", 0)) - int(before.get("execution_count", 0)) == 2
    assert int(after["last_inference"]) > 0
    success = after["inference_stats"]["success"]
    assert int(success["count"]) >= 2
    assert int(success["ns"]) > 0
    assert any(b["batch_size"] == "4" for b in after["batch_stats"])
    everything = client.get_inference_statistics(as_json=True)["model_stats"]
    assert {s["name"] for s in everything} >= {"dtype_int32", "multi_io", "fixed"}


def test_repository_index(client: grpcclient.InferenceServerClient) -> None:
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {"name": "multi_io", "version": "1", "state": "READY"} in index
    assert all(entry["state"] == "READY" for entry in index)


def test_load_unload_and_half_written_versions(tmp_path: Path) -> None:
    """Unload makes a model unavailable; a version dir without READY is invisible until it is complete."""
    root = build_registry(tmp_path / "registry", {"m": dtype_model("FP32")})
    server = ServerThread(
        GatewayConfig(root, sampling=False, port=0, metrics_port=None, model_control="explicit")
    )
    try:
        with grpcclient.InferenceServerClient(server.target) as client:
            assert client.infer("m", _fp32(1)).get_response().model_version == "1"
            client.unload_model("m")
            assert not client.is_model_ready("m")
            with pytest.raises(InferenceServerException, match="unloaded") as info:
                client.infer("m", _fp32(1))
            assert info.value.status() == "StatusCode.UNAVAILABLE"
            index = client.get_model_repository_index(as_json=True)["models"]
            assert index == [{"name": "m", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}]
            # A half-written version 2 (no READY marker) must stay invisible on load.
            half = root / "m" / "2"
            shutil.copytree(root / "m" / "1", half)
            (half / "READY").unlink()
            client.load_model("m")
            assert client.infer("m", _fp32(1)).get_response().model_version == "1"
            (half / "READY").write_text("")
            client.load_model("m")
            assert client.infer("m", _fp32(2)).get_response().model_version == "2"
            assert client.get_model_metadata("m", as_json=True)["versions"] == ["2"]
            with pytest.raises(InferenceServerException, match="not in the registry"):
                client.load_model("absent")
    finally:
        server.stop()


def test_health_service(gateway: ServerThread) -> None:
    with grpc.insecure_channel(gateway.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_server_reflection(gateway: ServerThread) -> None:
    with grpc.insecure_channel(gateway.target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services
        file = database.FindFileContainingSymbol("inference.GRPCInferenceService")
        methods = {m.name for m in file.service[0].method}
        assert {"ModelInfer", "ModelStreamInfer", "RepositoryIndex"} <= methods


def test_metrics_endpoint(gateway: ServerThread, client: grpcclient.InferenceServerClient) -> None:
    client.infer("dtype_fp32", _fp32(3))
    with urllib.request.urlopen(
        f"http://127.0.0.1:{gateway.server.metrics_port}/metrics", timeout=5
    ) as reply:
        text = reply.read().decode()
    assert 'infergate_requests_total{code="OK",model="dtype_fp32",version="1"}' in text
    assert 'infergate_model_ready{model="dtype_fp32",provider="cpu",version="1"} 1.0' in text
    assert "infergate_request_duration_seconds_bucket" in text
