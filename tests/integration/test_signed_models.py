"""A gateway with ``trusted_keys``: an unsigned or wrongly signed version is refused while the serving one
keeps answering under load with zero failed requests; the refusal is counted and RepositoryIndex says why;
a properly signed version then replaces it."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from gateway.config import GatewayConfig
from registry.cli import main as registry_main
from registry.publish import publish
from tests.monitor_servers import wait_until
from tests.servers import ServerThread
from tests.unit.test_registry_verify import adder


def _x() -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("x", [1, 3], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3), np.float32))
    return [tensor]


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(trusted signing key, trusted-keys directory, an untrusted signing key)."""
    assert registry_main(["keygen", "--out", str(tmp_path / "publisher")]) == 0
    assert registry_main(["keygen", "--out", str(tmp_path / "stranger")]) == 0
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "publisher.pub").write_bytes((tmp_path / "publisher" / "signing.pub").read_bytes())
    return tmp_path / "publisher" / "signing.key", trusted, tmp_path / "stranger" / "signing.key"


def test_untrusted_versions_are_refused_while_the_old_one_serves_under_load(
    tmp_path: Path, keys: tuple[Path, Path, Path]
) -> None:
    key, trusted, stranger = keys
    root = tmp_path / "registry"
    publish(root, "m", adder(tmp_path / "v1.onnx", 1.0), sign_key=key)
    server = ServerThread(
        GatewayConfig(
            root, sampling=False, port=0, metrics_port=None, poll_interval=0.05, trusted_keys=trusted
        )
    )
    stop = threading.Event()
    answers: dict[str, int] = {}
    failures: list[str] = []

    def load() -> None:
        with grpcclient.InferenceServerClient(server.target) as client:
            while not stop.is_set():
                try:
                    y = client.infer("m", _x()).as_numpy("y")
                except Exception as exc:  # every failure counts against the contract
                    failures.append(repr(exc))
                    continue
                assert y is not None
                answers[str(y[0, 0])] = answers.get(str(y[0, 0]), 0) + 1

    def refused(version: str) -> str | None:
        with grpcclient.InferenceServerClient(server.target) as client:
            index = client.get_model_repository_index(as_json=True)["models"]
        # UNAVAILABLE, not merely "not READY": a version still LOADING has no reason yet
        wanted = (version, "UNAVAILABLE")
        reasons = [e.get("reason", "") for e in index if (e["version"], e["state"]) == wanted]
        return reasons[0] if reasons else None

    def failed_loads() -> float:
        value = server.registry.get_sample_value(
            "infergate_model_loads_total", {"model": "m", "result": "failed"}
        )
        return value or 0.0

    client_thread = threading.Thread(target=load, daemon=True)
    client_thread.start()
    try:
        wait_until("first answers", lambda: answers.get("1.0", 0) > 10)
        # v2: signed by a key the gateway does not trust
        publish(root, "m", adder(tmp_path / "v2.onnx", 2.0), sign_key=stranger)
        assert "not among the trusted keys" in wait_until("v2 refused", lambda: refused("2"))
        # v3: signed by the publisher, then its manifest rewritten (the tampering a signature catches)
        v3 = publish(root, "m", adder(tmp_path / "v3.onnx", 3.0), sign_key=key)
        manifest = json.loads(v3.manifest_path.read_text())
        manifest["notes"] = "tampered"
        v3.manifest_path.write_text(json.dumps(manifest))
        assert "does not match manifest.json" in wait_until("v3 refused", lambda: refused("3"))
        # v4: unsigned
        publish(root, "m", adder(tmp_path / "v4.onnx", 4.0))
        assert "unsigned" in wait_until("v4 refused", lambda: refused("4"))
        served_during = dict(answers)
        assert failed_loads() >= 3
        # v5: properly signed replaces v1
        publish(root, "m", adder(tmp_path / "v5.onnx", 5.0), sign_key=key)
        wait_until("v5 serving", lambda: answers.get("5.0", 0) > 10)
    finally:
        stop.set()
        client_thread.join(30)
        server.stop()
    assert failures == []
    assert set(served_during) == {"1.0"}  # nothing untrusted ever answered
    assert set(answers) == {"1.0", "5.0"}
