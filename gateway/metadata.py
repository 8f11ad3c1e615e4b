"""Builders of the protocol's descriptive responses: server and model metadata, model config,
statistics and the repository index. Pure functions from gateway state to protobuf messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata as package_metadata

from gateway.models import IndexEntry
from gateway.stats import Duration
from gateway.version import LoadedVersion
from protos import inference_pb2 as pb
from registry.signature import TensorSpec

SERVER_NAME = "infergate"
PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"
#: Protocol extensions this server implements (Triton's names).
EXTENSIONS = ("model_repository", "model_configuration", "statistics")

#: V2 datatype -> Triton model-config DataType enum name.
CONFIG_DATATYPES = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING",
}


def server_version() -> str:
    """The installed infergate distribution's version."""
    try:
        return package_metadata.version("infergate")
    except package_metadata.PackageNotFoundError:
        return "0+unknown"


def server_metadata() -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name=SERVER_NAME, version=server_version(), extensions=list(EXTENSIONS))


def model_metadata(
    name: str,
    versions: list[LoadedVersion],
    answering: LoadedVersion,
    rollout: dict[str, str | int | float] | None = None,
) -> pb.ModelMetadataResponse:
    """Metadata of ``answering``; ``versions`` lists every loaded version of the model; ``rollout`` adds
    the model's recorded rollout (``rollout.*`` parameters, :func:`registry.rollout.rollout_facts`)."""
    signature = answering.signature
    response = pb.ModelMetadataResponse(
        name=name,
        versions=[str(lv.version) for lv in versions],
        platform=PLATFORM,
        inputs=[_tensor_metadata(spec) for spec in signature.inputs],
        outputs=[_tensor_metadata(spec) for spec in signature.outputs],
    )
    for key, value in {**lineage(answering), **(rollout or {})}.items():
        parameter = response.parameters[key]
        if isinstance(value, bool):
            parameter.bool_param = value
        elif isinstance(value, int):
            parameter.int64_param = value
        elif isinstance(value, float):
            parameter.double_param = value
        else:
            parameter.string_param = value
    return response


def lineage(loaded: LoadedVersion) -> dict[str, str | int | float | bool]:
    """The answering version's lineage and serving facts, flat (ModelMetadata ``parameters``)."""
    manifest = loaded.manifest
    facts: dict[str, str | int | float | bool] = {
        "version": loaded.version,
        "created_at": manifest.created_at,
        "model_sha256": manifest.model_sha256,
        "provider": loaded.runner.provider,
        "provider_fallback": loaded.runner.fallback_reason,
        "instances": loaded.runner.instances,
        "max_batch_size": loaded.max_batch_size,
    }
    if manifest.parent_version is not None:
        facts["parent_version"] = manifest.parent_version
    training = manifest.training
    for key, value in (
        ("data_uri", training.data_uri),
        ("data_sha256", training.data_sha256),
        ("rows", training.rows),
    ):
        if value is not None:
            facts[f"training.{key}"] = value
    for key, value in sorted(training.params.items()):
        if isinstance(value, str | int | float | bool):
            facts[f"training.params.{key}"] = value
    for key, metric in sorted(manifest.validation.metrics.items()):
        facts[f"validation.{key}"] = float(metric)
    if manifest.notes:
        facts["notes"] = manifest.notes
    return facts


def model_config(loaded: LoadedVersion) -> pb.ModelConfigResponse:
    """Triton-style config: with max_batch_size > 0, dims exclude the batch dimension."""
    batch = loaded.max_batch_size
    skip = 1 if batch > 0 else 0
    config = pb.ModelConfig(
        name=loaded.model,
        platform=PLATFORM,
        backend=BACKEND,
        max_batch_size=batch,
        input=[
            pb.ModelInput(name=s.name, data_type=CONFIG_DATATYPES[s.datatype], dims=s.shape[skip:])
            for s in loaded.signature.inputs
        ],
        output=[
            pb.ModelOutput(name=s.name, data_type=CONFIG_DATATYPES[s.datatype], dims=s.shape[skip:])
            for s in loaded.signature.outputs
        ],
    )
    return pb.ModelConfigResponse(config=config)


def model_statistics(versions: Iterable[LoadedVersion]) -> pb.ModelStatisticsResponse:
    """Cumulative statistics of each given version."""
    response = pb.ModelStatisticsResponse()
    for lv in versions:
        s = lv.stats
        entry = response.model_stats.add(
            name=lv.model,
            version=str(lv.version),
            last_inference=s.last_inference_ms,
            inference_count=s.inference_count,
            execution_count=s.execution_count,
        )
        stats = entry.inference_stats
        for target, source in (
            (stats.success, s.success),
            (stats.fail, s.fail),
            (stats.queue, s.queue),
            (stats.compute_input, s.compute_input),
            (stats.compute_infer, s.compute_infer),
            (stats.compute_output, s.compute_output),
        ):
            _fill(target, source)
        for size in sorted(s.batches):
            batch = entry.batch_stats.add(batch_size=size)
            _fill(batch.compute_infer, s.batches[size])
        for size, predicted_s, observations in latency_profile(lv):
            # infergate extension: the batcher's latency profile, keyed "profile:<batch size>";
            # compute_infer.ns is the predicted batch latency, compute_infer.count the batches behind it.
            point = entry.response_stats[f"profile:{size}"].compute_infer
            point.count = observations
            point.ns = round(predicted_s * 1e9)
    return response


def latency_profile(loaded: LoadedVersion) -> list[tuple[int, float, int]]:
    """(batch size, best predicted seconds over instances, observations over instances) per profiled size."""
    profiles = loaded.batcher.profiles
    observed: dict[int, int] = {}
    for profile in profiles:
        for point in profile.snapshot():
            observed[point.batch_size] = observed.get(point.batch_size, 0) + point.observations
    return [(size, loaded.batcher.predict(size), observed[size]) for size in sorted(observed)]


def repository_index(entries: Iterable[IndexEntry], ready_only: bool) -> pb.RepositoryIndexResponse:
    return pb.RepositoryIndexResponse(
        models=[
            pb.RepositoryIndexResponse.ModelIndex(
                name=e.name, version=e.version, state=e.state, reason=e.reason
            )
            for e in entries
            if not ready_only or e.state == "READY"
        ]
    )


def _tensor_metadata(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=spec.name, datatype=spec.datatype, shape=spec.shape)


def _fill(target: pb.StatisticDuration, source: Duration) -> None:
    target.count = source.count
    target.ns = source.ns
