"""TLS and mTLS on a real gateway with certificates made in the test: tritonclient over TLS, plaintext
refused, mTLS without a client certificate refused, grants from a client certificate's subject and SAN,
and certificate rotation on disk that switches new connections while a stream in flight completes."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from gateway import health
from gateway.config import GatewayConfig
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc
from tests.certs import Pki
from tests.onnx_models import build_registry, dtype_model
from tests.servers import ServerThread
from tests.tokens import TOKENS, write_tokens

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_registry(tmp_path_factory.mktemp("tls") / "registry", {"m": dtype_model("FP32")})


class Tls:
    """A CA and the PEM files of a server, two clients and a stranger (signed by another CA)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.pki = Pki()
        self.ca = self.pki.write_ca(directory)
        self.cert, self.key = self.pki.issue("gateway", server=True).write(directory, "server")
        self.jobs = self.pki.issue("batch-jobs").write(directory, "jobs")
        self.mesh = self.pki.issue("anything", sans=("spiffe://cluster/ns/ops",)).write(directory, "mesh")
        self.nobody = self.pki.issue("nobody").write(directory, "nobody")
        self.stranger = Pki("other CA").issue("batch-jobs").write(directory, "stranger")


def _serve(registry: Path, tls: Tls, **options: Any) -> ServerThread:
    config = GatewayConfig(
        registry,
        sampling=False,
        port=0,
        metrics_port=None,
        poll_interval=0,
        tls_cert=tls.cert,
        tls_key=tls.key,
        **options,
    )
    return ServerThread(config)


def _credentials(ca: bytes, client: tuple[Path, Path] | None = None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(ca)
    return grpc.ssl_channel_credentials(ca, client[1].read_bytes(), client[0].read_bytes())


def _health(target: str, credentials: grpc.ChannelCredentials) -> int:
    with grpc.secure_channel(target, credentials) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return int(reply.status)


def _input(rows: int = 2) -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("x", [rows, 3], "FP32")
    tensor.set_data_from_numpy(np.ones((rows, 3), np.float32))
    return [tensor]


@pytest.fixture(scope="module")
def tls_server(
    registry: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerThread, Tls]]:
    tls = Tls(tmp_path_factory.mktemp("certs"))
    server = _serve(registry, tls)
    yield server, tls
    server.stop()


def test_tritonclient_over_tls(tls_server: tuple[ServerThread, Tls]) -> None:
    server, tls = tls_server
    with grpcclient.InferenceServerClient(server.target, ssl=True, root_certificates=str(tls.ca)) as client:
        assert client.is_server_live()
        result = client.infer("m", _input())
        np.testing.assert_array_equal(result.as_numpy("y"), np.full((2, 3), 2.0, np.float32))


def test_plaintext_to_the_tls_port_fails(tls_server: tuple[ServerThread, Tls]) -> None:
    server, _ = tls_server
    with grpcclient.InferenceServerClient(server.target) as client, pytest.raises(InferenceServerException):
        client.is_server_live(client_timeout=5)


def test_a_client_trusting_another_ca_fails(tls_server: tuple[ServerThread, Tls]) -> None:
    server, _ = tls_server
    with pytest.raises(grpc.RpcError) as info:
        _health(server.target, _credentials(Pki("unrelated").ca_pem))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_health_command_speaks_tls(
    tls_server: tuple[ServerThread, Tls], capsys: pytest.CaptureFixture[str]
) -> None:
    server, tls = tls_server
    assert health.main(["--target", server.target, "--tls-ca", str(tls.ca)]) == 0
    assert "SERVING" in capsys.readouterr().out
    assert health.main(["--target", server.target, "--timeout", "2"]) == 2  # plaintext


def test_mtls_requires_a_client_certificate(registry: Path, tmp_path: Path) -> None:
    tls = Tls(tmp_path)
    server = _serve(registry, tls, tls_client_ca=tls.ca)
    try:
        ca = tls.pki.ca_pem
        assert _health(server.target, _credentials(ca, tls.jobs)) == health_pb2.HealthCheckResponse.SERVING
        for credentials in (_credentials(ca), _credentials(ca, tls.stranger)):
            with pytest.raises(grpc.RpcError) as info:
                _health(server.target, credentials)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        with grpcclient.InferenceServerClient(
            server.target,
            ssl=True,
            root_certificates=str(tls.ca),
            private_key=str(tls.jobs[1]),
            certificate_chain=str(tls.jobs[0]),
        ) as client:
            assert client.infer("m", _input()).as_numpy("y") is not None
        assert (
            health.main(
                [
                    "--target",
                    server.target,
                    "--tls-ca",
                    str(tls.ca),
                    "--tls-cert",
                    str(tls.jobs[0]),
                    "--tls-key",
                    str(tls.jobs[1]),
                ]
            )
            == 0
        )
    finally:
        server.stop()


def test_grants_from_client_certificates(registry: Path, tmp_path: Path) -> None:
    tls = Tls(tmp_path)
    tokens = write_tokens(tmp_path / "tokens.toml", TOKENS)
    with tokens.open("a") as file:
        file.write('[[certificate]]\nname = "jobs"\nsubject = "batch-jobs"\nscopes = ["infer"]\n')
        file.write('[[certificate]]\nname = "ops"\nsan = "spiffe://cluster/ns/ops"\nscopes = ["metadata"]\n')
    server = _serve(registry, tls, tls_client_ca=tls.ca, auth_tokens=tokens)
    ca = tls.pki.ca_pem

    def code(client: tuple[Path, Path], call: str, metadata: Any = None) -> grpc.StatusCode:
        with grpc.secure_channel(server.target, _credentials(ca, client)) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            try:
                if call == "infer":
                    request = pb.ModelInferRequest(model_name="m")
                    request.inputs.add(name="x", datatype="FP32", shape=[1, 3])
                    request.raw_input_contents.append(np.ones((1, 3), np.float32).tobytes())
                    stub.ModelInfer(request, metadata=metadata, timeout=30)
                else:
                    stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=metadata, timeout=30)
            except grpc.RpcError as exc:
                return exc.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    try:
        assert code(tls.jobs, "infer") == grpc.StatusCode.OK  # by subject CN
        assert code(tls.jobs, "index") == grpc.StatusCode.PERMISSION_DENIED
        assert code(tls.mesh, "index") == grpc.StatusCode.OK  # by SAN
        assert code(tls.mesh, "infer") == grpc.StatusCode.PERMISSION_DENIED
        assert code(tls.nobody, "infer") == grpc.StatusCode.UNAUTHENTICATED
        # a bearer token, when sent, is the credential
        bearer = (("authorization", "Bearer tok-meta-51aa9d"),)
        assert code(tls.nobody, "index", bearer) == grpc.StatusCode.OK
        assert code(tls.jobs, "infer", bearer) == grpc.StatusCode.PERMISSION_DENIED
    finally:
        server.stop()


def _request() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 3])
    request.raw_input_contents.append(np.ones((1, 3), np.float32).tobytes())
    return request


def test_rotation_switches_new_connections_and_keeps_calls_in_flight(registry: Path, tmp_path: Path) -> None:
    tls = Tls(tmp_path)
    server = _serve(registry, tls)
    old_ca = tls.pki.ca_pem
    serving = health_pb2.HealthCheckResponse.SERVING
    try:
        # a stream opened before the rotation, answered once
        requests: queue.Queue[pb.ModelInferRequest | None] = queue.Queue()
        channel = grpc.secure_channel(server.target, _credentials(old_ca))
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        responses = stub.ModelStreamInfer(iter(requests.get, None), timeout=60)
        requests.put(_request())
        assert next(responses).error_message == ""

        # cert-manager writes a certificate from a new CA: the pair lands as one atomic rename each
        new_pki = Pki("rotated CA")
        issued = new_pki.issue("gateway", server=True)
        staged_cert, staged_key = issued.write(tmp_path / "staged", "server")
        # a half-written state (new certificate, old key) is not picked up: new connections still work
        staged_cert_only = tmp_path / "staged" / "cert-only.crt"
        staged_cert_only.write_bytes(issued.cert)
        staged_cert_only.replace(tls.cert)
        assert _health(server.target, _credentials(old_ca)) == serving
        staged_key.replace(tls.key)
        staged_cert.replace(tls.cert)

        assert _health(server.target, _credentials(new_pki.ca_pem)) == serving  # new connections: new cert
        with pytest.raises(grpc.RpcError) as info:
            _health(server.target, _credentials(old_ca))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE

        # the stream in flight on the old connection still completes
        requests.put(_request())
        assert next(responses).error_message == ""
        requests.put(None)
        assert list(responses) == []
        channel.close()
    finally:
        server.stop()


@pytest.mark.slow
def test_load_generator_speaks_mtls_with_a_token(registry: Path, tmp_path: Path) -> None:
    tls = Tls(tmp_path)
    tokens = write_tokens(tmp_path / "tokens.toml", TOKENS)
    token_file = tmp_path / "client.token"
    token_file.write_text("tok-all-93d4c6\n")
    server = _serve(registry, tls, tls_client_ca=tls.ca, auth_tokens=tokens)
    out = tmp_path / "report.json"
    base = [sys.executable, "-m", "loadtests", "--target", server.target, "--model", "m", "--warmup", "0"]
    base += ["--tls-ca", str(tls.ca), "--tls-cert", str(tls.jobs[0]), "--tls-key", str(tls.jobs[1])]
    try:
        for stream in ([], ["--stream"]):
            command = [
                *base,
                "--requests",
                "20",
                "--token-file",
                str(token_file),
                "--json",
                str(out),
                *stream,
            ]
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
            assert done.returncode == 0, done.stderr
            report = json.loads(out.read_text())
            assert report["requests"] == report["ok"] == 20
            assert report["parameters"]["security"] == {
                "tls": True,
                "client_certificate": True,
                "token": True,
            }
            assert "tok-all-93d4c6" not in out.read_text() + done.stdout + done.stderr
    finally:
        server.stop()
