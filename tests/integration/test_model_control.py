"""The control plane per ``--model-control`` mode on a real gateway: who may load and unload, what the
watcher does, and RepositoryModelLoad ``parameters`` refused rather than ignored."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from gateway.config import GatewayConfig
from tests.onnx_models import build_registry, dtype_model
from tests.servers import ServerThread
from tests.tokens import TOKENS, write_tokens


def _fp32() -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("x", [1, 3], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 3), np.float32))
    return [tensor]


def _status(exc: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(exc.value.status())


def _serve(root: Path, mode: str, **options: Any) -> ServerThread:
    return ServerThread(
        GatewayConfig(root, sampling=False, port=0, metrics_port=None, model_control=mode, **options)
    )


@pytest.mark.parametrize("mode", ["poll", "none"])
def test_load_and_unload_are_refused_outside_explicit_mode(tmp_path: Path, mode: str) -> None:
    root = build_registry(tmp_path / "registry", {"m": dtype_model("FP32")})
    server = _serve(root, mode)
    try:
        assert (server.server.watcher is not None) == (mode == "poll")
        with grpcclient.InferenceServerClient(server.target) as client:
            for call in (client.load_model, client.unload_model):
                with pytest.raises(InferenceServerException) as info:
                    call("m")
                assert _status(info) == "StatusCode.FAILED_PRECONDITION"
                assert f"model control mode is '{mode}'" in info.value.message()
                assert "--model-control explicit" in info.value.message()
            assert client.is_model_ready("m")  # nothing changed
    finally:
        server.stop()


def test_explicit_mode_loads_and_unloads_and_the_watcher_stays_off(tmp_path: Path) -> None:
    root = build_registry(tmp_path / "registry", {"m": dtype_model("FP32")})
    server = _serve(root, "explicit", poll_interval=0.05)
    try:
        assert server.server.watcher is None  # a new version waits for RepositoryModelLoad
        with grpcclient.InferenceServerClient(server.target) as client:
            shutil.copytree(root / "m" / "1", root / "m" / "2")
            assert client.infer("m", _fp32()).get_response().model_version == "1"
            client.load_model("m")
            assert client.infer("m", _fp32()).get_response().model_version == "2"
            client.unload_model("m")
            assert not client.is_model_ready("m")
            client.load_model("m")
            assert client.is_model_ready("m")
    finally:
        server.stop()


def test_load_parameters_are_refused_never_ignored(tmp_path: Path) -> None:
    root = build_registry(tmp_path / "registry", {"m": dtype_model("FP32")})
    server = _serve(root, "explicit")
    try:
        with grpcclient.InferenceServerClient(server.target) as client:
            with pytest.raises(InferenceServerException) as info:
                client.load_model("m", config='{"max_batch_size": "not a number"}')
            assert _status(info) == "StatusCode.INVALID_ARGUMENT"
            assert "'config'" in info.value.message()
            with pytest.raises(InferenceServerException) as info:
                client.load_model("m", config="{}", files={"file:1/model.onnx": b"\x00"})
            assert _status(info) == "StatusCode.INVALID_ARGUMENT"
            assert "'file:1/model.onnx'" in info.value.message()
            client.unload_model("m", unload_dependents=True)  # the one unload parameter there is
            assert not client.is_model_ready("m")
    finally:
        server.stop()


def test_explicit_mode_still_needs_the_repository_scope(tmp_path: Path) -> None:
    root = build_registry(tmp_path / "registry", {"m": dtype_model("FP32")})
    server = _serve(root, "explicit", auth_tokens=write_tokens(tmp_path / "tokens.toml", TOKENS))
    try:
        with grpcclient.InferenceServerClient(server.target) as client:
            with pytest.raises(InferenceServerException) as info:
                client.unload_model("m", headers={"authorization": "Bearer not-a-token"})
            assert _status(info) == "StatusCode.UNAUTHENTICATED"
            with pytest.raises(InferenceServerException) as info:
                client.unload_model("m", headers={"authorization": "Bearer tok-meta-51aa9d"})
            assert _status(info) == "StatusCode.PERMISSION_DENIED"
            client.unload_model("m", headers={"authorization": "Bearer tok-repo-0b77e2"})
            assert not client.is_model_ready("m", headers={"authorization": "Bearer tok-all-93d4c6"})
    finally:
        server.stop()
