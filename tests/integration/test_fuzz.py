"""Hypothesis sends random well-formed and malformed requests: the server stays healthy, every well-formed
request is answered exactly like in-process onnxruntime, and every malformed one gets INVALID_ARGUMENT."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.oracle import NP_TYPES, assert_bitwise_equal, run_reference, sample
from tests.servers import ServerThread

DATATYPES = sorted(NP_TYPES)
MUTATIONS = [
    "none",
    "rank",
    "dim",
    "datatype",
    "truncate",
    "extend",
    "drop",
    "duplicate",
    "zero_rows",
    "negative",
]


@dataclass
class Case:
    datatype: str
    rows: int
    mutation: str
    other_datatype: str
    seed: int


@pytest.fixture(scope="module")
def stub(gateway: ServerThread) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(gateway.target) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _raw(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        return b"".join(len(item).to_bytes(4, "little") + item for item in array.flat)
    return array.tobytes()


def build(case: Case) -> tuple[service_pb2.ModelInferRequest, np.ndarray]:
    x = sample(case.datatype, (case.rows, 3), np.random.default_rng(case.seed))
    request = service_pb2.ModelInferRequest(
        model_name=f"dtype_{case.datatype.lower()}", id=f"fuzz-{case.seed}"
    )
    shape = [case.rows, 3]
    datatype = case.datatype
    raw = _raw(x, case.datatype)
    if case.mutation == "rank":
        shape = [case.rows * 3]
    elif case.mutation == "dim":
        shape = [case.rows, 4]
    elif case.mutation == "datatype":
        datatype = case.other_datatype
    elif case.mutation == "truncate":
        raw = raw[:-1]
    elif case.mutation == "extend":
        raw = raw + b"\x01"
    elif case.mutation == "zero_rows":
        shape = [0, 3]
    elif case.mutation == "negative":
        shape = [-case.rows, 3]
    if case.mutation != "drop":
        request.inputs.add(name="x", datatype=datatype, shape=shape)
        request.raw_input_contents.append(raw)
    if case.mutation == "duplicate":
        request.inputs.add(name="x", datatype=datatype, shape=shape)
        request.raw_input_contents.append(raw)
    return request, x


cases = st.builds(
    Case,
    datatype=st.sampled_from(DATATYPES),
    rows=st.integers(1, 16),
    mutation=st.sampled_from(MUTATIONS),
    other_datatype=st.sampled_from(DATATYPES),
    seed=st.integers(0, 2**32 - 1),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases)
def test_random_requests(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, fixture_registry: Path, case: Case
) -> None:
    request, x = build(case)
    well_formed = case.mutation == "none" or (
        case.mutation == "datatype" and case.other_datatype == case.datatype
    )
    if well_formed:
        response = stub.ModelInfer(request, timeout=10)
        assert response.id == request.id
        expected = run_reference(fixture_registry, request.model_name, 1, {"x": x})["y"]
        actual = _decode(response, case.datatype, expected.shape)
        assert_bitwise_equal(actual, expected)
    else:
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        assert info.value.details()
    assert stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=5).ready


def _decode(response: service_pb2.ModelInferResponse, datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    raw = response.raw_output_contents[0]
    assert list(response.outputs[0].shape) == list(shape)
    if datatype != "BYTES":
        return np.frombuffer(raw, NP_TYPES[datatype]).reshape(shape)
    items, pos = [], 0
    while pos < len(raw):
        length = int.from_bytes(raw[pos : pos + 4], "little")
        items.append(raw[pos + 4 : pos + 4 + length])
        pos += 4 + length
    return np.array(items, dtype=np.object_).reshape(shape)
