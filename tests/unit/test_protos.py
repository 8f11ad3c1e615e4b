"""protos/: generated code is fresh, the inference API is wire-compatible with Triton's, and it coexists with
tritonclient in one process (our descriptors live in a private pool)."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from tritonclient.grpc import model_config_pb2 as triton_config_pb2
from tritonclient.grpc import service_pb2 as triton_pb2

from protos import _pool, generate, inference_pb2, inference_pb2_grpc, monitor_pb2

SERVICE = "inference.GRPCInferenceService"
# DESIGN.md section 3: the RPCs the gateway must serve.
REQUIRED_RPCS = {
    "ServerLive",
    "ServerReady",
    "ServerMetadata",
    "ModelReady",
    "ModelMetadata",
    "ModelInfer",
    "ModelStreamInfer",
    "RepositoryIndex",
    "RepositoryModelLoad",
    "RepositoryModelUnload",
    "ModelStatistics",
}


def _file_proto(file: FileDescriptor) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    return proto


def _walk(
    prefix: str, messages: Iterable[descriptor_pb2.DescriptorProto]
) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto]]:
    for message in messages:
        name = f"{prefix}.{message.name}"
        yield name, message
        yield from _walk(name, message.nested_type)


def _index(
    *files: FileDescriptor,
) -> tuple[dict[str, descriptor_pb2.DescriptorProto], dict[str, descriptor_pb2.EnumDescriptorProto]]:
    """Messages and enums of ``files`` by full name (nested ones included)."""
    messages: dict[str, descriptor_pb2.DescriptorProto] = {}
    enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
    for file in files:
        proto = _file_proto(file)
        enums.update((f"{proto.package}.{e.name}", e) for e in proto.enum_type)
        for name, message in _walk(proto.package, proto.message_type):
            messages[name] = message
            enums.update((f"{name}.{e.name}", e) for e in message.enum_type)
    return messages, enums


OUR_MESSAGES, OUR_ENUMS = _index(inference_pb2.DESCRIPTOR)
TRITON_MESSAGES, TRITON_ENUMS = _index(triton_pb2.DESCRIPTOR, triton_config_pb2.DESCRIPTOR)

#: infergate's documented extensions of Triton's layout: message -> {field name: number}. Their map-entry
#: messages are ours alone; their numbers must not collide with any field Triton defines.
EXTENSION_FIELDS = {"inference.ModelMetadataResponse": {"parameters": 100}}
EXTENSION_MESSAGES = {"inference.ModelMetadataResponse.ParametersEntry"}
for _name in EXTENSION_MESSAGES:
    OUR_MESSAGES.pop(_name)


# --- generated code --------------------------------------------------------------------------------------


def test_generated_code_is_fresh() -> None:
    assert generate.stale() == [], "run `python -m protos.generate`"


def test_check_names_stale_files(tmp_path: Path) -> None:
    for spec in generate.PROTOS:
        for name in spec.outputs:
            shutil.copy(generate.PACKAGE_DIR / name, tmp_path / name)
    (tmp_path / "monitor_pb2.pyi").write_text("# edited by hand\n", encoding="utf-8")
    (tmp_path / "inference_pb2_grpc.py").unlink()
    assert generate.stale(tmp_path) == ["inference_pb2_grpc.py", "monitor_pb2.pyi"]


def test_check_command_passes_on_committed_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert generate.main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_generated_modules_use_the_private_pool() -> None:
    assert inference_pb2.DESCRIPTOR.pool is _pool.POOL
    assert monitor_pb2.DESCRIPTOR.pool is _pool.POOL
    assert inference_pb2.ModelInferRequest.__module__ == "protos.inference_pb2"
    with pytest.raises(KeyError):
        descriptor_pool.Default().FindMessageTypeByName("infergate.monitor.v1.SampleBatch")


# --- wire compatibility with Triton ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OUR_MESSAGES))
def test_message_matches_triton(name: str) -> None:
    ours = OUR_MESSAGES[name]
    theirs = TRITON_MESSAGES.get(name)
    assert theirs is not None, f"Triton has no message {name}"
    assert ours.options.map_entry == theirs.options.map_entry
    their_fields = {field.name: field for field in theirs.field}
    extensions = EXTENSION_FIELDS.get(name, {})
    for field in ours.field:
        if field.name in extensions:
            assert field.number == extensions[field.name]
            assert field.number not in {f.number for f in theirs.field}
            assert field.name not in their_fields
            continue
        their = their_fields.get(field.name)
        assert their is not None, f"Triton's {name} has no field {field.name}"
        assert (field.number, field.type, field.label, field.type_name) == (
            their.number,
            their.type,
            their.label,
            their.type_name,
        ), f"{name}.{field.name}"
        our_oneof = ours.oneof_decl[field.oneof_index].name if field.HasField("oneof_index") else None
        their_oneof = theirs.oneof_decl[their.oneof_index].name if their.HasField("oneof_index") else None
        assert our_oneof == their_oneof, f"{name}.{field.name}"


@pytest.mark.parametrize("name", sorted(OUR_ENUMS))
def test_enum_matches_triton(name: str) -> None:
    theirs = TRITON_ENUMS.get(name)
    assert theirs is not None, f"Triton has no enum {name}"
    their_values = {value.name: value.number for value in theirs.value}
    assert {value.name: value.number for value in OUR_ENUMS[name].value}.items() <= their_values.items()


def test_service_methods_match_triton() -> None:
    ours = _file_proto(inference_pb2.DESCRIPTOR).service
    theirs = _file_proto(triton_pb2.DESCRIPTOR).service
    assert [service.name for service in ours] == ["GRPCInferenceService"]
    their_methods = {method.name: method for method in theirs[0].method}
    methods = ours[0].method
    assert {method.name for method in methods} >= REQUIRED_RPCS
    for method in methods:
        their = their_methods.get(method.name)
        assert their is not None, f"Triton has no RPC {method.name}"
        assert (method.input_type, method.output_type, method.client_streaming, method.server_streaming) == (
            their.input_type,
            their.output_type,
            their.client_streaming,
            their.server_streaming,
        ), method.name


# --- coexistence with tritonclient in one process --------------------------------------------------------

X = np.arange(6, dtype="<f4").reshape(2, 3)


def _fill_request(request: inference_pb2.ModelInferRequest | triton_pb2.ModelInferRequest) -> None:
    request.model_name = "iris"
    request.model_version = "3"
    request.id = "req-1"
    request.parameters["timeout"].int64_param = 250_000
    request.parameters["priority"].int64_param = 1
    request.parameters["tag"].string_param = "canary"
    request.parameters["flag"].bool_param = True
    request.parameters["ratio"].double_param = 0.5
    tensor = request.inputs.add(name="x", datatype="FP32", shape=list(X.shape))
    tensor.parameters["binary_data_size"].int64_param = X.nbytes
    output = request.outputs.add(name="y")
    output.parameters["binary_data"].bool_param = True
    request.raw_input_contents.append(X.tobytes())


def _assert_request(request: inference_pb2.ModelInferRequest | triton_pb2.ModelInferRequest) -> None:
    assert (request.model_name, request.model_version, request.id) == ("iris", "3", "req-1")
    params = request.parameters
    assert params["timeout"].int64_param == 250_000
    assert params["priority"].int64_param == 1
    assert params["tag"].string_param == "canary"
    assert params["flag"].bool_param is True
    assert params["ratio"].double_param == 0.5
    assert params["ratio"].WhichOneof("parameter_choice") == "double_param"
    [tensor] = request.inputs
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("x", "FP32", [2, 3])
    assert tensor.parameters["binary_data_size"].int64_param == X.nbytes
    assert not tensor.HasField("contents")
    [output] = request.outputs
    assert output.name == "y"
    assert output.parameters["binary_data"].bool_param is True
    assert list(request.raw_input_contents) == [X.tobytes()]


def test_triton_request_parses_with_ours() -> None:
    theirs = triton_pb2.ModelInferRequest()
    _fill_request(theirs)
    ours = inference_pb2.ModelInferRequest.FromString(theirs.SerializeToString())
    _assert_request(ours)
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)


def test_our_request_parses_with_triton() -> None:
    ours = inference_pb2.ModelInferRequest()
    _fill_request(ours)
    theirs = triton_pb2.ModelInferRequest.FromString(ours.SerializeToString())
    _assert_request(theirs)
    assert theirs.SerializeToString(deterministic=True) == ours.SerializeToString(deterministic=True)


def test_our_response_reads_with_tritonclient() -> None:
    y = (X * 2).astype("<f4")
    response = inference_pb2.ModelInferResponse(model_name="iris", model_version="3", id="req-1")
    response.outputs.add(name="y", datatype="FP32", shape=list(y.shape))
    response.raw_output_contents.append(y.tobytes())
    result = triton.InferResult(triton_pb2.ModelInferResponse.FromString(response.SerializeToString()))
    np.testing.assert_array_equal(result.as_numpy("y"), y)
    assert result.get_response().id == "req-1"


def test_model_config_subset_is_wire_compatible() -> None:
    theirs = triton_config_pb2.ModelConfig(name="iris", platform="onnxruntime_onnx", backend="onnxruntime")
    theirs.max_batch_size = 64
    theirs.input.add(name="x", data_type=triton_config_pb2.TYPE_FP32, dims=[-1, 4], is_shape_tensor=False)
    theirs.output.add(name="y", data_type=triton_config_pb2.TYPE_INT64, dims=[-1], label_filename="labels")
    theirs.instance_group.add(count=2)
    ours = inference_pb2.ModelConfig.FromString(theirs.SerializeToString())
    assert (ours.name, ours.platform, ours.backend, ours.max_batch_size) == (
        "iris",
        "onnxruntime_onnx",
        "onnxruntime",
        64,
    )
    assert (ours.input[0].name, ours.input[0].data_type, list(ours.input[0].dims)) == (
        "x",
        inference_pb2.TYPE_FP32,
        [-1, 4],
    )
    assert (ours.output[0].name, ours.output[0].data_type) == ("y", inference_pb2.TYPE_INT64)
    response = inference_pb2.ModelConfigResponse(config=ours)
    back = triton_pb2.ModelConfigResponse.FromString(response.SerializeToString())
    assert back.config.input[0].dims == [-1, 4]
    assert back.config.instance_group[0].count == 2  # Unknown to us, kept and passed on.


# --- generated stubs and servicers over a real channel ---------------------------------------------------


class _EchoServicer(inference_pb2_grpc.GRPCInferenceServiceServicer):
    def ServerLive(  # noqa: N802 (gRPC method name)
        self, request: inference_pb2.ServerLiveRequest, context: grpc.ServicerContext
    ) -> inference_pb2.ServerLiveResponse:
        return inference_pb2.ServerLiveResponse(live=True)

    def ModelInfer(  # noqa: N802 (gRPC method name)
        self, request: inference_pb2.ModelInferRequest, context: grpc.ServicerContext
    ) -> inference_pb2.ModelInferResponse:
        x = np.frombuffer(request.raw_input_contents[0], dtype="<f4").reshape(tuple(request.inputs[0].shape))
        response = inference_pb2.ModelInferResponse(
            model_name=request.model_name, model_version="1", id=request.id
        )
        response.outputs.add(name="y", datatype="FP32", shape=list(x.shape))
        response.raw_output_contents.append((x * 2).astype("<f4").tobytes())
        return response


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(_EchoServicer(), server)  # type: ignore[no-untyped-call]
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    _pool.add_files(health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR)
    names = [SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server, pool=_pool.POOL)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None).wait()


def test_our_stub_calls_our_servicer(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        assert stub.ServerLive(inference_pb2.ServerLiveRequest(), timeout=10).live
        with pytest.raises(grpc.RpcError) as caught:
            stub.ServerReady(inference_pb2.ServerReadyRequest(), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_tritonclient_calls_our_servicer(address: str) -> None:
    client = triton.InferenceServerClient(address)
    try:
        assert client.is_server_live()
        tensor = triton.InferInput("x", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X)
        result = client.infer("iris", [tensor], request_id="req-7", client_timeout=10)
        np.testing.assert_array_equal(result.as_numpy("y"), X * 2)
        assert result.get_response().id == "req-7"
    finally:
        client.close()


def test_reflection_serves_our_service(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert set(database.get_services()) == {SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME}
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName(SERVICE)
        assert {method.name for method in service.methods} >= REQUIRED_RPCS
        request = pool.FindMessageTypeByName("inference.ModelInferRequest")
        assert request.fields_by_name["raw_input_contents"].number == 7
        assert pool.FindServiceByName(health.SERVICE_NAME).methods_by_name["Check"]


# --- monitor.proto ---------------------------------------------------------------------------------------


def test_sample_batch_round_trip() -> None:
    raw = np.array([[1.5, -2.0], [0.0, 3.25]], dtype="<f4")
    batch = monitor_pb2.SampleBatch()
    sample = batch.samples.add(
        model="iris", version="3", request_id="req-1", timestamp_ns=1_700_000_000_000_000_000, monotonic_ns=42
    )
    sample.inputs.add(name="x", datatype="FP32", shape=list(raw.shape), raw=raw.tobytes())
    sample.outputs.add(name="y", datatype="INT64", shape=[2], raw=np.array([0, 2], dtype="<i8").tobytes())
    back = monitor_pb2.SampleBatch.FromString(batch.SerializeToString())
    assert back == batch
    [got] = back.samples
    assert (got.model, got.version, got.request_id, got.timestamp_ns, got.monotonic_ns) == (
        "iris",
        "3",
        "req-1",
        1_700_000_000_000_000_000,
        42,
    )
    tensor = got.inputs[0]
    np.testing.assert_array_equal(np.frombuffer(tensor.raw, dtype="<f4").reshape(tuple(tensor.shape)), raw)
    assert np.frombuffer(got.outputs[0].raw, dtype="<i8").tolist() == [0, 2]
