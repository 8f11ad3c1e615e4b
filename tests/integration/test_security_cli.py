"""The security flags from the command line: ``infergate-gateway`` with TLS, scoped tokens and trusted keys
as a process of its own, ``infergate-health`` over TLS against it, and bad security files refused before
any model loads (exit 2, the file and the problem named)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from bench.servers import GATEWAY_READY, ServerProcess, gateway_command
from gateway import health
from registry.cli import main as registry_main
from registry.publish import publish
from tests.certs import Pki
from tests.tokens import TOKENS, write_tokens
from tests.unit.test_registry_verify import adder

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_gateway_process_with_tls_tokens_and_trusted_keys(tmp_path: Path) -> None:
    assert registry_main(["keygen", "--out", str(tmp_path / "keys")]) == 0
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "k.pub").write_bytes((tmp_path / "keys" / "signing.pub").read_bytes())
    root = tmp_path / "registry"
    publish(root, "m", adder(tmp_path / "m.onnx", 1.0), sign_key=tmp_path / "keys" / "signing.key")
    pki = Pki()
    ca = pki.write_ca(tmp_path / "certs")
    cert, key = pki.issue("gateway", server=True).write(tmp_path / "certs", "server")
    tokens = write_tokens(tmp_path / "tokens.toml", TOKENS)
    command = [
        *gateway_command(root), "--no-sampling", "--poll-interval", "0", "--tls-cert", str(cert),
        "--tls-key", str(key), "--auth-tokens", str(tokens), "--trusted-keys", str(trusted),
        "--model-control", "explicit",
    ]  # fmt: skip
    with ServerProcess(command, GATEWAY_READY, tmp_path / "gateway.log", "gateway") as process:
        port, _ = process.start(timeout_s=120)
        target = f"127.0.0.1:{port}"
        assert health.main(["--target", target, "--tls-ca", str(ca)]) == 0
        tensor = grpcclient.InferInput("x", [1, 3], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 3), np.float32))
        with grpcclient.InferenceServerClient(target, ssl=True, root_certificates=str(ca)) as client:
            result = client.infer("m", [tensor], headers={"authorization": "Bearer tok-infer-8c1f0e"})
            np.testing.assert_array_equal(result.as_numpy("y"), np.ones((1, 3), np.float32))
            with pytest.raises(InferenceServerException) as info:
                client.infer("m", [tensor])
            assert info.value.status() == str(grpc.StatusCode.UNAUTHENTICATED)
    assert "tok-infer-8c1f0e" not in (tmp_path / "gateway.log").read_text()


@pytest.mark.parametrize("problem", ["tokens", "pair", "keys", "monitor-ca"])
def test_bad_security_files_stop_the_command_line(tmp_path: Path, problem: str) -> None:
    root = tmp_path / "registry"
    publish(root, "m", adder(tmp_path / "m.onnx", 1.0))
    pki = Pki()
    cert, _ = pki.issue("gateway", server=True).write(tmp_path, "server")
    _, other_key = pki.issue("other", server=True).write(tmp_path, "other")
    flags = {
        "tokens": (["--auth-tokens", str(tmp_path / "t.toml")], "unknown scope 'admin'"),
        "pair": (["--tls-cert", str(cert), "--tls-key", str(other_key)], ""),
        "keys": (["--trusted-keys", str(tmp_path)], "holds no"),
        "monitor-ca": (["--monitor-tls-ca", str(tmp_path / "t.toml")], ""),  # not a certificate
    }
    (tmp_path / "t.toml").write_text(
        '[[token]]\nname = "x"\nsha256 = "' + "0" * 64 + '"\nscopes = ["admin"]\n'
    )
    args, message = flags[problem]
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "--registry", str(root), "--port", "0", "--no-metrics", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("infergate-gateway: ")
    assert message in done.stderr
    assert "Traceback" not in done.stderr
