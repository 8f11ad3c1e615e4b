"""Fixtures: a registry of onnx.helper models and a real gateway serving it on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from gateway.config import GatewayConfig
from tests.onnx_models import build_registry, fixture_models
from tests.servers import ServerThread


@pytest.fixture(scope="session")
def fixture_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fixtures") / "registry"
    # Generous budgets: these tests are about answers, not deadlines, and CI machines can be busy.
    relaxed = "[batching]\nlatency_budget_ms = 30000.0\n"
    toml = {name: relaxed for name in fixture_models()}
    toml["multi_io"] = "[batching]\nmax_batch_size = 8\nlatency_budget_ms = 30000.0\n"
    return build_registry(root, fixture_models(), toml=toml)


@pytest.fixture(scope="session")
def gateway(fixture_registry: Path) -> Iterator[ServerThread]:
    server = ServerThread(GatewayConfig(fixture_registry, sampling=False, port=0, metrics_port=0))
    yield server
    server.stop()


@pytest.fixture
def client(gateway: ServerThread) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(gateway.target) as triton:
        yield triton
