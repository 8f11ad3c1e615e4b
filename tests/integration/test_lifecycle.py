"""Registry lifecycle through a real gateway with its watcher: hot swap under load with zero failed
requests, pin/rollback, every failure path keeping the old version serving, and version policies."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper, numpy_helper
from tritonclient.utils import InferenceServerException

from gateway.config import GatewayConfig
from protos import inference_pb2, inference_pb2_grpc
from registry.manifest import sha256_file
from registry.publish import pin, publish, unpin
from tests.servers import ServerThread
from tests.traffic import Traffic

POLL = 0.1
#: A generous budget: these tests are about swaps, not deadlines, and the machine may be busy.
RELAXED = "[batching]\nlatency_budget_ms = 30000.0\n"


def scale_model(factor: float, width: int = 3) -> onnx.ModelProto:
    """x FP32[batch, width] -> y = x * factor."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["y"])],
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        [numpy_helper.from_array(np.array(factor, dtype=np.float32), "k")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def publish_scale(
    root: Path, factor: float, *, width: int = 3, golden: Path | None = None, toml: str = ""
) -> int:
    source = root.parent / f"scale-{factor}-{width}.onnx"
    onnx.save(scale_model(factor, width), source)
    if toml:
        (root / "m").mkdir(parents=True, exist_ok=True)
        (root / "m" / "model.toml").write_text(toml)
    return publish(root, "m", source, golden=golden).version


def scale_traffic(target: str, threads: int = 4) -> Traffic:
    """Traffic to the scale models ("m": ``x`` of 3 columns -> ``y``), without request ids."""
    return Traffic(target, threads, features=3, output="y", request_ids=False)


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    root = tmp_path / "registry"
    publish_scale(root, 2.0, toml=RELAXED)
    return root


@pytest.fixture
def server(registry: Path) -> Iterator[ServerThread]:
    running = ServerThread(
        GatewayConfig(registry, sampling=False, port=0, metrics_port=None, poll_interval=POLL)
    )
    yield running
    running.stop()


def index(server: ServerThread) -> list[dict[str, Any]]:
    with grpcclient.InferenceServerClient(server.target) as client:
        models: list[dict[str, Any]] = client.get_model_repository_index(as_json=True)["models"]
        return models


def state_of(server: ServerThread, version: str) -> dict[str, Any] | None:
    return next((entry for entry in index(server) if entry.get("version") == version), None)


FACTORS = {"1": 2.0, "2": 3.0, "3": 5.0}


def check_answers(traffic: Traffic) -> None:
    assert traffic.errors == []
    for version, x, y in traffic.answers:
        np.testing.assert_allclose(y / x, FACTORS[version], rtol=1e-6)


def test_hot_swap_and_pin_under_load_with_zero_failed_requests(server: ServerThread, registry: Path) -> None:
    traffic = scale_traffic(server.target)
    try:
        assert wait_for(lambda: len(traffic.answers) > 50)
        published_at = time.monotonic()
        assert publish_scale(registry, 3.0) == 2
        assert wait_for(lambda: traffic.versions_sent_after(published_at) >= {"2"})
        switched = time.monotonic()
        assert wait_for(lambda: traffic.versions_sent_after(switched + 0.5) == {"2"})  # old version retired
        pinned_at = time.monotonic()
        pin(registry, "m", 1)
        assert wait_for(lambda: "1" in traffic.versions_sent_after(pinned_at))
        settled = time.monotonic()
        assert wait_for(lambda: traffic.versions_sent_after(settled + 0.5) == {"1"})
        unpin(registry, "m")
        unpinned_at = time.monotonic()
        assert wait_for(lambda: traffic.versions_sent_after(unpinned_at + 0.5) == {"2"})
    finally:
        traffic.stop()
    check_answers(traffic)
    with grpc.insecure_channel(server.target) as channel:  # our stub: field 100 is an infergate extension
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        meta = stub.ModelMetadata(inference_pb2.ModelMetadataRequest(name="m"), timeout=10)
    assert meta.parameters["version"].int64_param == 2
    assert meta.parameters["parent_version"].int64_param == 1
    assert len(meta.parameters["model_sha256"].string_param) == 64


def _tamper_sha(version_dir: Path) -> None:
    with (version_dir / "model.onnx").open("ab") as handle:
        handle.write(b"\0")


def _truncate_and_rehash(version_dir: Path) -> None:
    model = version_dir / "model.onnx"
    model.write_bytes(model.read_bytes()[:40])
    manifest = json.loads((version_dir / "manifest.json").read_text())
    manifest["model_sha256"] = sha256_file(model)
    (version_dir / "manifest.json").write_text(json.dumps(manifest))


def _delete_model(version_dir: Path) -> None:
    (version_dir / "model.onnx").unlink()


def _bad_golden(tmp: Path) -> Path:
    path = tmp / "golden.npz"
    x = np.ones((2, 3), np.float32)
    np.savez(path, **{"input:x": x, "output:y": x * 7})  # the model computes x * 3
    return path


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("sha256", "sha256"),
        ("corrupt", "model.onnx"),
        ("missing", "model.onnx"),
        ("breaking", "breaking"),
        ("golden", "golden"),
    ],
)
def test_a_bad_version_never_replaces_the_serving_one(
    server: ServerThread, registry: Path, tmp_path: Path, case: str, words: str
) -> None:
    traffic = scale_traffic(server.target, threads=2)
    try:
        assert wait_for(lambda: len(traffic.answers) > 20)
        if case == "breaking":
            publish_scale(registry, 3.0, width=4)
        elif case == "golden":
            publish_scale(registry, 3.0, golden=_bad_golden(tmp_path))
        else:
            staging = tmp_path / "staging"
            staging.mkdir()
            shadow = staging / "m"
            publish_scale(staging, 3.0)
            version_dir = shadow / "1"
            {"sha256": _tamper_sha, "corrupt": _truncate_and_rehash, "missing": _delete_model}[case](
                version_dir
            )
            (version_dir / "READY").unlink()
            shutil.copytree(version_dir, registry / "m" / ".tmp-incoming")
            (registry / "m" / ".tmp-incoming" / "READY").write_text("")
            (registry / "m" / ".tmp-incoming").rename(registry / "m" / "2")
        assert wait_for(lambda: (state_of(server, "2") or {}).get("state") == "UNAVAILABLE")
        entry = state_of(server, "2")
        assert entry is not None
        assert words in entry["reason"], entry["reason"]
        time.sleep(5 * POLL)  # several more polls: the failure is not retried while the files stay the same
        failed_loads = server.registry.get_sample_value(
            "infergate_model_loads_total", {"model": "m", "result": "failed"}
        )
        time.sleep(5 * POLL)
        assert (
            server.registry.get_sample_value(
                "infergate_model_loads_total", {"model": "m", "result": "failed"}
            )
            == failed_loads
            == 1
        )
    finally:
        traffic.stop()
    check_answers(traffic)
    assert {version for version, _, _ in traffic.answers} == {"1"}


def test_half_written_version_stays_invisible(server: ServerThread, registry: Path) -> None:
    half = registry / "m" / "2"
    shutil.copytree(registry / "m" / "1", half)
    (half / "READY").unlink()
    time.sleep(5 * POLL)
    assert [e["version"] for e in index(server)] == ["1"]
    (half / "READY").write_text("")
    assert wait_for(lambda: (state_of(server, "2") or {}).get("state") == "READY")


def test_version_policies_and_explicit_versions(server: ServerThread, registry: Path) -> None:
    publish_scale(registry, 3.0)
    publish_scale(registry, 5.0, toml='[versions]\npolicy = "latest"\nlatest = 2\n')
    assert wait_for(lambda: [e["version"] for e in index(server) if e["state"] == "READY"] == ["2", "3"])
    with grpcclient.InferenceServerClient(server.target) as client:
        x = np.ones((1, 3), np.float32)
        tensor = grpcclient.InferInput("x", [1, 3], "FP32")
        tensor.set_data_from_numpy(x)
        for version, factor in (("2", 3.0), ("3", 5.0), ("", 5.0)):
            result = client.infer("m", [tensor], model_version=version)
            assert result.as_numpy("y").tolist() == [[factor] * 3]
        with pytest.raises(InferenceServerException, match="not loaded"):
            client.infer("m", [tensor], model_version="1")
        (registry / "m" / "model.toml").write_text('[versions]\npolicy = "specific"\nspecific = [1, 3]\n')
        assert wait_for(lambda: [e["version"] for e in index(server) if e["state"] == "READY"] == ["1", "3"])
        (registry / "m" / "model.toml").write_text('[versions]\npolicy = "all"\n')
        assert wait_for(
            lambda: [e["version"] for e in index(server) if e["state"] == "READY"] == ["1", "2", "3"]
        )
        assert client.infer("m", [tensor]).get_response().model_version == "3"
        pin(registry, "m", 2)
        assert wait_for(lambda: client.infer("m", [tensor]).get_response().model_version == "2")


def test_model_added_and_removed_from_the_registry(
    server: ServerThread, registry: Path, tmp_path: Path
) -> None:
    source = tmp_path / "other.onnx"
    onnx.save(scale_model(4.0), source)
    publish(registry, "other", source)
    with grpcclient.InferenceServerClient(server.target) as client:
        assert wait_for(lambda: client.is_model_ready("other"))
        shutil.rmtree(registry / "other")
        assert wait_for(lambda: not client.is_model_ready("other"))
        assert "other" not in {e["name"] for e in index(server)}


def test_unload_drains_queued_requests_first(tmp_path: Path) -> None:
    from tests.onnx_models import build_registry, slow_model

    toml = "[batching]\nmax_batch_size = 4\nlatency_budget_ms = 30000.0\n[runtime]\nintra_op_threads = 1\n"
    root = build_registry(tmp_path / "registry", {"slow": slow_model()}, toml={"slow": toml})
    running = ServerThread(
        GatewayConfig(
            root, sampling=False, port=0, metrics_port=None, poll_interval=0, model_control="explicit"
        )
    )
    try:
        with grpcclient.InferenceServerClient(running.target) as client:
            answers: list[tuple[object, object]] = []
            done = threading.Event()

            def callback(result: object, error: object) -> None:
                answers.append((result, error))
                if len(answers) == 8:
                    done.set()

            x = np.ones((4, 4), np.float32)
            for _ in range(8):
                tensor = grpcclient.InferInput("x", [4, 4], "FP32")
                tensor.set_data_from_numpy(x)
                client.async_infer("slow", [tensor], callback=callback)
            assert wait_for(lambda: len(answers) >= 1)
            client.unload_model("slow")  # returns once every queued request was answered
            assert done.wait(10)
            assert [error for _, error in answers] == [None] * 8
            assert not client.is_model_ready("slow")
    finally:
        running.stop()
