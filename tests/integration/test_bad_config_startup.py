"""A model whose model.toml is invalid never keeps the gateway from starting: the other models serve, the
broken one answers UNAVAILABLE, and RepositoryIndex names the bad key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from gateway.config import GatewayConfig
from tests.integration.test_check_providers import publish_add
from tests.servers import ServerThread


def test_an_invalid_model_toml_at_startup_leaves_the_other_models_serving(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    publish_add(root, "good")
    publish_add(root, "bad")
    (root / "bad" / "model.toml").write_text("[batching]\nmax_batch_sise = 8\n")
    server = ServerThread(GatewayConfig(root, sampling=False, port=0, metrics_port=None, poll_interval=0))
    try:
        with grpcclient.InferenceServerClient(server.target) as client:
            x = np.ones((2, 3), np.float32)
            tensor = grpcclient.InferInput("x", [2, 3], "FP32")
            tensor.set_data_from_numpy(x)
            assert client.infer("good", [tensor]).as_numpy("y") is not None
            with pytest.raises(InferenceServerException) as refused:
                client.infer("bad", [tensor])
            assert refused.value.status() == "StatusCode.UNAVAILABLE"
            index = {entry.name: entry for entry in client.get_model_repository_index().models}
            assert index["good"].state == "READY"
            assert index["bad"].state == "UNAVAILABLE"
            assert "[batching].max_batch_sise: unknown key" in index["bad"].reason
    finally:
        server.stop()
