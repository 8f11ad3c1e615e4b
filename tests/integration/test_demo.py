"""The demo registry end to end: both demo models answer like in-process onnxruntime, and the README's
tritonclient snippet runs against a real gateway."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from gateway.config import GatewayConfig
from gateway.quickstart import snippet
from registry.demo import build_demo
from tests.oracle import assert_bitwise_equal, run_reference
from tests.servers import ServerThread

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, ServerThread]]:
    root = tmp_path_factory.mktemp("demo") / "registry"
    build_demo(root)
    server = ServerThread(GatewayConfig(root, sampling=False, port=0, metrics_port=None))
    yield root, server
    server.stop()


@pytest.mark.parametrize(
    ("model", "version", "features"), [("classifier", "1", 16), ("classifier", "2", 16), ("regressor", "", 8)]
)
def test_demo_models_match_onnxruntime(
    demo: tuple[Path, ServerThread], model: str, version: str, features: int
) -> None:
    root, server = demo
    x = np.random.default_rng(5).normal(size=(20, features)).astype(np.float32)
    tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    with grpcclient.InferenceServerClient(server.target) as client:
        result = client.infer(model, [tensor], model_version=version)
    answered = int(result.get_response().model_version)
    assert answered == (int(version) if version else 1)
    expected = run_reference(root, model, answered, {"input": x})
    for name, array in expected.items():
        assert_bitwise_equal(result.as_numpy(name), array)


def test_classifier_default_is_the_newest_version(demo: tuple[Path, ServerThread]) -> None:
    _, server = demo
    with grpcclient.InferenceServerClient(server.target) as client:
        assert client.get_model_metadata("classifier", as_json=True)["versions"] == ["1", "2"]
        x = np.zeros((1, 16), np.float32)
        tensor = grpcclient.InferInput("input", [1, 16], "FP32")
        tensor.set_data_from_numpy(x)
        assert client.infer("classifier", [tensor]).get_response().model_version == "2"


def test_readme_snippet_is_the_quickstart_and_it_runs(demo: tuple[Path, ServerThread]) -> None:
    """The README shows exactly the quickstart snippet, and running it prints correct predictions."""
    assert snippet("127.0.0.1:8001") in README.read_text()
    root, server = demo
    run = subprocess.run(
        [sys.executable, "-c", snippet(server.target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    printed = {}
    for line in run.stdout.splitlines():
        key, _, value = line.partition(" ")
        printed[key] = value
    assert printed["classifier"] == "version 2"
    x = np.random.default_rng(0).normal(size=(4, 16)).astype(np.float32)
    expected = run_reference(root, "classifier", 2, {"input": x})
    assert ast.literal_eval(printed["probabilities"]) == expected["probabilities"].tolist()
    assert ast.literal_eval(printed["labels"]) == expected["label"].tolist()
    y = np.random.default_rng(1).normal(size=(2, 8)).astype(np.float32)
    expected = run_reference(root, "regressor", 1, {"input": y})
    assert ast.literal_eval(printed["predictions"]) == expected["prediction"].tolist()
