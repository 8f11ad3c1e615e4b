"""``model_version`` over the wire: an unparseable one is INVALID_ARGUMENT (as Triton answers), a
well-formed but unknown one NOT_FOUND, in ModelInfer and the metadata RPCs; ModelReady answers false."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from protos import inference_pb2, inference_pb2_grpc
from tests.servers import ServerThread

MALFORMED = ["wrong_specification", "01", "0", "-1", "1.5", " 1", "+1", "\u0661"]


def infer(client: grpcclient.InferenceServerClient, version: str) -> None:
    tensor = grpcclient.InferInput("x", [1, 3], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 3), np.float32))
    client.infer("dtype_fp32", [tensor], model_version=version)


@pytest.mark.parametrize("version", MALFORMED)
def test_unparseable_version_is_invalid_argument(
    client: grpcclient.InferenceServerClient, version: str
) -> None:
    with pytest.raises(InferenceServerException) as caught:
        infer(client, version)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert f"version '{version}' is not a positive integer" in caught.value.message()
    assert client.is_model_ready("dtype_fp32", version) is False
    for call in (client.get_model_metadata, client.get_model_config, client.get_inference_statistics):
        with pytest.raises(InferenceServerException) as caught:
            call("dtype_fp32", version)
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_well_formed_unknown_version_is_not_found(client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        infer(client, "7")
    assert caught.value.status() == "StatusCode.NOT_FOUND"
    assert client.is_model_ready("dtype_fp32", "7") is False
    for call in (client.get_model_metadata, client.get_model_config, client.get_inference_statistics):
        with pytest.raises(InferenceServerException) as caught:
            call("dtype_fp32", "7")
        assert caught.value.status() == "StatusCode.NOT_FOUND"
    assert client.is_model_ready("dtype_fp32", "1") is True
    infer(client, "1")


def test_streaming_answers_invalid_argument_too(gateway: ServerThread) -> None:
    request = inference_pb2.ModelInferRequest(model_name="dtype_fp32", model_version="v1", id="s")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 3])
    tensor.contents.fp32_contents.extend([1.0, 2.0, 3.0])
    with grpc.insecure_channel(gateway.target) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        (answer,) = list(stub.ModelStreamInfer(iter([request]), timeout=30))
    assert "not a positive integer" in answer.error_message
