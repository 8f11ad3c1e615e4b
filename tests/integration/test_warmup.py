"""Warm-up through a real gateway: a model that cannot take synthetic data (Cast STRING->INT32 fails on "")
loads with its own golden or reference rows, or with a warning and no data at all; ``[warmup]`` turns
warm-up off or points it at a file; a version whose own warm-up data fails never replaces the serving one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from gateway.config import GatewayConfig
from registry.publish import publish
from tests.servers import ServerThread

RELAXED = "[batching]\nlatency_budget_ms = 30000.0\n"
WARNING = "warm-up with synthetic data failed"


def cast_model() -> onnx.ModelProto:
    """x BYTES[batch, 2] -> y INT32[batch, 2] = Cast(x): every string must parse as an integer."""
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT32)],
        "cast",
        [helper.make_tensor_value_info("x", TensorProto.STRING, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["batch", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def publish_cast(root: Path, *, toml: str = RELAXED, data: str = "", strings: list[str] | None = None) -> int:
    """Publishes the cast model as the next version of "m"; ``data`` is "", "reference" or "golden"."""
    (root / "m").mkdir(parents=True, exist_ok=True)
    (root / "m" / "model.toml").write_text(toml)
    source = root.parent / "cast.onnx"
    onnx.save(cast_model(), source)
    x = np.array(strings or ["7", "-3", "12", "40"]).reshape(-1, 2)
    arrays: dict[str, Path] = {}
    if data:
        arrays[data] = root.parent / f"{data}.npz"
        y = np.array([int(t) if t.lstrip("-").isdigit() else 0 for t in x.ravel()], np.int32)
        np.savez(arrays[data], **{"input:x": x, "output:y": y.reshape(x.shape)})
    return publish(root, "m", source, **arrays).version


def infer(server: ServerThread, texts: list[str]) -> tuple[str, np.ndarray]:
    x = np.array(texts, dtype=object).reshape(-1, 2)
    tensor = grpcclient.InferInput("x", list(x.shape), "BYTES")
    tensor.set_data_from_numpy(x)
    with grpcclient.InferenceServerClient(server.target) as client:
        result = client.infer("m", [tensor])
    return result.get_response().model_version, result.as_numpy("y")


def index(server: ServerThread) -> list[dict[str, Any]]:
    with grpcclient.InferenceServerClient(server.target) as client:
        models: list[dict[str, Any]] = client.get_model_repository_index(as_json=True)["models"]
        return models


def start(root: Path, poll: float = 0.0) -> ServerThread:
    return ServerThread(GatewayConfig(root, sampling=False, port=0, metrics_port=None, poll_interval=poll))


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and WARNING in r.getMessage()
    ]


@pytest.mark.parametrize("data", ["reference", "golden", ""])
def test_cast_model_loads_and_answers(tmp_path: Path, caplog: pytest.LogCaptureFixture, data: str) -> None:
    root = tmp_path / "registry"
    publish_cast(root, data=data)
    caplog.set_level(logging.WARNING, logger="gateway")
    server = start(root)
    try:
        assert [e["state"] for e in index(server)] == ["READY"]
        version, y = infer(server, ["1", "2", "-5", "300"])
        assert version == "1"
        np.testing.assert_array_equal(y, np.array([[1, 2], [-5, 300]], dtype=np.int32))
    finally:
        server.stop()
    if data:
        assert warnings_of(caplog) == []
    else:
        (line,) = warnings_of(caplog)  # one instance: one warning naming the version and the sizes
        assert line.startswith("m:1 instance 0: ")
        assert "[1, 2, 4, 8, 16, 32, 64]" in line


def test_warmup_off_runs_nothing_and_serves(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "registry"
    publish_cast(root, toml=RELAXED + '[warmup]\nmode = "off"\n')
    caplog.set_level(logging.WARNING, logger="gateway")
    server = start(root)
    try:
        with grpcclient.InferenceServerClient(server.target) as client:
            stats = client.get_inference_statistics("m", as_json=True)["model_stats"][0]
        assert not any(key.startswith("profile:") for key in stats.get("response_stats", {}))
        assert infer(server, ["4", "5"])[1].tolist() == [[4, 5]]
    finally:
        server.stop()
    assert warnings_of(caplog) == []


def test_warmup_file_inside_the_version(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    publish_cast(root, toml=RELAXED + '[warmup]\nmode = "file"\nfile = "warm/rows.npz"\n')
    (root / "m" / "1" / "warm").mkdir()
    np.savez(root / "m" / "1" / "warm" / "rows.npz", **{"input:x": np.array([["8", "9"]])})
    server = start(root)
    try:
        with grpcclient.InferenceServerClient(server.target) as client:
            stats = client.get_inference_statistics("m", as_json=True)["model_stats"][0]
        assert "profile:1" in stats["response_stats"]  # seeded from the file
        assert infer(server, ["10", "11"])[1].tolist() == [[10, 11]]
    finally:
        server.stop()


def test_own_data_that_fails_keeps_the_old_version_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "registry"
    publish_cast(root, data="reference")
    caplog.set_level(logging.ERROR, logger="gateway")
    server = start(root, poll=0.1)
    try:
        assert infer(server, ["1", "1"])[0] == "1"
        publish_cast(root, data="reference", strings=["1", "2", "three", "4"])  # not an integer

        def failed() -> bool:
            return any(e["version"] == "2" and e["state"] == "UNAVAILABLE" for e in index(server))

        assert wait_for(failed)
        (entry,) = [e for e in index(server) if e["version"] == "2"]
        assert "warm-up with reference.npz failed" in entry["reason"]
        version, y = infer(server, ["6", "7"])
        assert (version, y.tolist()) == ("1", [[6, 7]])
        # A missing warm-up file fails the load too, with a message naming the file; v1 still serves.
        (root / "m" / "model.toml").write_text(RELAXED + '[warmup]\nmode = "file"\nfile = "absent.npz"\n')
        assert wait_for(lambda: any("absent.npz" in e.get("reason", "") for e in index(server)))
        assert infer(server, ["6", "7"])[0] == "1"
    finally:
        server.stop()
    lines = [r.getMessage() for r in caplog.records if "failed to load" in r.getMessage()]
    assert lines
    assert all("(version 1 keeps serving)" in line for line in lines)


def test_a_version_that_never_loads_says_nothing_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "registry"
    publish_cast(root, data="golden", strings=["1", "x", "3", "4"])
    caplog.set_level(logging.ERROR, logger="gateway")
    server = start(root)
    try:
        (entry,) = index(server)
        assert entry["state"] == "UNAVAILABLE"
        assert "warm-up with golden.npz failed" in entry["reason"]
        with pytest.raises(InferenceServerException, match="no loaded version"):
            infer(server, ["1", "2"])
    finally:
        server.stop()
    (line,) = [r.getMessage() for r in caplog.records if "failed to load" in r.getMessage()]
    assert "(no version of this model is serving)" in line
    assert "old one" not in line
