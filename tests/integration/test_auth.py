"""Scoped authorization on a real gateway: every RPC's exact status per credential, health open,
reflection modes, the token file reloaded without a restart, and tokens absent from logs and errors."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from tritonclient.utils import InferenceServerException

from gateway.config import GatewayConfig
from gateway.grants import hash_token
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc
from tests.onnx_models import build_registry, dtype_model
from tests.servers import ServerThread
from tests.tokens import TOKENS, WRONG, write_tokens

UNAUTH = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("auth") / "registry"
    return build_registry(root, {"m": dtype_model("FP32")})


def _serve(registry: Path, tokens: Path, **options: Any) -> ServerThread:
    return ServerThread(
        GatewayConfig(
            registry,
            sampling=False,
            port=0,
            metrics_port=None,
            poll_interval=0,
            auth_tokens=tokens,
            **options,
        )
    )


@pytest.fixture(scope="module")
def secured(auth_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    tokens = write_tokens(tmp_path_factory.mktemp("tokens") / "tokens.toml", TOKENS)
    server = _serve(auth_registry, tokens)
    yield server
    server.stop()


def _infer_request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 3])
    request.raw_input_contents.append(np.ones((1, 3), np.float32).tobytes())
    return request


def _stream(stub: pb_grpc.GRPCInferenceServiceStub, metadata: Any) -> Any:
    return list(stub.ModelStreamInfer(iter([_infer_request()]), metadata=metadata, timeout=30))


# (method, scope, call(stub, metadata)); the repository calls name a model that does not exist, so an
# allowed call reaches the table and fails there, never in the auth check.
RPCS: list[tuple[str, str, Any]] = [
    ("ModelInfer", "infer", lambda s, md: s.ModelInfer(_infer_request(), metadata=md, timeout=30)),
    ("ModelStreamInfer", "infer", _stream),
    ("ServerLive", "metadata", lambda s, md: s.ServerLive(pb.ServerLiveRequest(), metadata=md)),
    ("ServerReady", "metadata", lambda s, md: s.ServerReady(pb.ServerReadyRequest(), metadata=md)),
    ("ServerMetadata", "metadata", lambda s, md: s.ServerMetadata(pb.ServerMetadataRequest(), metadata=md)),
    ("ModelReady", "metadata", lambda s, md: s.ModelReady(pb.ModelReadyRequest(name="m"), metadata=md)),
    (
        "ModelMetadata",
        "metadata",
        lambda s, md: s.ModelMetadata(pb.ModelMetadataRequest(name="m"), metadata=md),
    ),
    ("ModelConfig", "metadata", lambda s, md: s.ModelConfig(pb.ModelConfigRequest(name="m"), metadata=md)),
    (
        "ModelStatistics",
        "metadata",
        lambda s, md: s.ModelStatistics(pb.ModelStatisticsRequest(name="m"), metadata=md),
    ),
    (
        "RepositoryIndex",
        "metadata",
        lambda s, md: s.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=md),
    ),
    (
        "RepositoryModelLoad",
        "repository",
        lambda s, md: s.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="absent"), metadata=md),
    ),
    (
        "RepositoryModelUnload",
        "repository",
        lambda s, md: s.RepositoryModelUnload(
            pb.RepositoryModelUnloadRequest(model_name="absent"), metadata=md
        ),
    ),
]


def _code(call: Any, stub: pb_grpc.GRPCInferenceServiceStub, metadata: Any) -> grpc.StatusCode:
    try:
        call(stub, metadata)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def stub(secured: ServerThread) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(secured.target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.mark.parametrize(("method", "scope", "call"), RPCS, ids=[r[0] for r in RPCS])
def test_every_rpc_exact_status_per_credential(
    stub: pb_grpc.GRPCInferenceServiceStub, method: str, scope: str, call: Any
) -> None:
    assert _code(call, stub, None) == UNAUTH
    assert _code(call, stub, (("authorization", f"Bearer {WRONG}"),)) == UNAUTH
    assert _code(call, stub, (("authorization", "Basic dXNlcjpwYXNz"),)) == UNAUTH
    assert _code(call, stub, (("authorization", "Bearer "),)) == UNAUTH
    for token, (_, scopes) in TOKENS.items():
        got = _code(call, stub, (("authorization", f"Bearer {token}"),))
        if scope in scopes:
            assert got not in (UNAUTH, DENIED), (method, token)
        else:
            assert got == DENIED, (method, token)


def test_allowed_calls_answer(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    infer = (("authorization", "Bearer tok-infer-8c1f0e"),)
    reply = stub.ModelInfer(_infer_request(), metadata=infer, timeout=30)
    assert np.frombuffer(reply.raw_output_contents[0], np.float32).shape == (3,)
    [streamed] = _stream(stub, infer)
    assert streamed.error_message == ""
    meta = (("authorization", "bearer tok-meta-51aa9d"),)  # the scheme is case-insensitive
    assert stub.ServerLive(pb.ServerLiveRequest(), metadata=meta).live


def test_tritonclient_headers(secured: ServerThread) -> None:
    tensor = grpcclient.InferInput("x", [2, 3], "FP32")
    tensor.set_data_from_numpy(np.ones((2, 3), np.float32))
    with grpcclient.InferenceServerClient(secured.target) as client:
        result = client.infer("m", [tensor], headers={"authorization": "Bearer tok-all-93d4c6"})
        np.testing.assert_array_equal(result.as_numpy("y"), np.full((2, 3), 2.0, np.float32))
        with pytest.raises(InferenceServerException) as info:
            client.unload_model("m", headers={"authorization": "Bearer tok-infer-8c1f0e"})
        assert info.value.status() == "StatusCode.PERMISSION_DENIED"
        assert "'infer-only' lacks scope 'repository'" in info.value.message()
        assert client.is_model_ready("m", headers={"authorization": "Bearer tok-all-93d4c6"})


def test_health_stays_open(secured: ServerThread) -> None:
    with grpc.insecure_channel(secured.target) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert status.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_open_by_default(secured: ServerThread) -> None:
    with grpc.insecure_channel(secured.target) as channel:
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "inference.GRPCInferenceService" in services


@pytest.mark.parametrize("mode", ["scoped", "off"])
def test_reflection_scoped_or_off(auth_registry: Path, tmp_path: Path, mode: str) -> None:
    tokens = write_tokens(tmp_path / "tokens.toml", TOKENS)
    server = _serve(auth_registry, tokens, auth_reflection=mode)
    try:
        with grpc.insecure_channel(server.target) as channel:
            with pytest.raises(grpc.RpcError) as info:
                ProtoReflectionDescriptorDatabase(channel).get_services()
            assert info.value.code() == (UNAUTH if mode == "scoped" else grpc.StatusCode.UNIMPLEMENTED)
    finally:
        server.stop()


def test_token_file_reloads_without_restart(auth_registry: Path, tmp_path: Path) -> None:
    path = write_tokens(tmp_path / "tokens.toml", {"tok-old-1": ("old", ["metadata"])})
    server = _serve(auth_registry, path, auth_reload_seconds=0.0)  # stat on every call: no waiting
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            live = RPCS[2][2]
            assert _code(live, stub, (("authorization", "Bearer tok-old-1"),)) == grpc.StatusCode.OK
            assert _code(live, stub, (("authorization", "Bearer tok-new-2"),)) == UNAUTH
            # rotate: the new token in, the old one out, as a Secret update swaps the file
            staged = write_tokens(tmp_path / "tokens.next", {"tok-new-2": ("new", ["metadata"])})
            staged.replace(path)
            assert _code(live, stub, (("authorization", "Bearer tok-new-2"),)) == grpc.StatusCode.OK
            assert _code(live, stub, (("authorization", "Bearer tok-old-1"),)) == UNAUTH
            # a broken file keeps the grants in force
            path.write_text("[[token]]\nname = 'broken'\n")
            assert _code(live, stub, (("authorization", "Bearer tok-new-2"),)) == grpc.StatusCode.OK
    finally:
        server.stop()


def test_tokens_never_logged_nor_echoed(
    secured: ServerThread, stub: pb_grpc.GRPCInferenceServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    messages = []
    for token in (WRONG, "tok-infer-8c1f0e", "tok-meta-51aa9d"):
        for _, _, call in RPCS:
            try:
                call(stub, (("authorization", f"Bearer {token}"),))
            except grpc.RpcError as exc:
                messages.append(exc.details() or "")
    assert messages
    counted = secured.registry.get_sample_value
    assert (counted("infergate_auth_refused_total", {"reason": "unknown_token"}) or 0) >= len(RPCS)
    assert (counted("infergate_auth_refused_total", {"reason": "scope"}) or 0) >= 2
    for token in [WRONG, *TOKENS]:
        assert token not in caplog.text
        assert all(token not in message for message in messages)
        assert hash_token(token) not in caplog.text
