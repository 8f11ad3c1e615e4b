"""model.toml: defaults, every section's validation, and error messages that name the full key."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from registry.config import (
    BatchingConfig,
    DriftConfig,
    ModelConfig,
    RuntimeConfig,
    SamplingConfig,
    VersionsConfig,
    load_model_config,
    parse_model_config,
)
from registry.errors import ConfigError, RegistryError

DESIGN_EXAMPLE = """
[batching]
max_batch_size = 64          # rows
max_queue_delay_ms = 2.0
latency_budget_ms = 100.0    # default budget when a request brings none
max_queue_size = 4096        # rows
priority_levels = 1

[runtime]
providers = ["cpu"]          # ordered preference: "tensorrt", "cuda", "cpu"
instances = 1                # parallel sessions per version
intra_op_threads = 0         # 0 = onnxruntime default
require_gpu = false
buckets = []                 # batch-size buckets for padding (GPU); empty = none
[runtime.cuda]               # provider options, passed through
device_id = 0
[runtime.tensorrt]
fp16 = false

[versions]
policy = "latest"            # "latest" | "all" | "specific"
latest = 1                   # how many, for "latest"
specific = []                # which, for "specific"
allow_breaking_signature = false

[sampling]
rate = 0.05
max_rows_per_request = 64

[drift]
window_rows = 1000
window_seconds = 60.0
bins = 10
psi_threshold = 0.2
ks_min_effect = 0.1
alpha = 0.01
consecutive = 2
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "model.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_those_of_the_design() -> None:
    config = ModelConfig()
    assert config.batching == BatchingConfig(64, 2.0, 100.0, 4096, 1)
    assert config.runtime.providers == ("cpu",)
    assert (config.runtime.instances, config.runtime.intra_op_threads) == (1, 0)
    assert config.runtime.require_gpu is False
    assert config.runtime.buckets == ()
    assert dict(config.runtime.cuda) == {"device_id": 0}
    assert dict(config.runtime.tensorrt) == {"fp16": False}
    assert config.versions == VersionsConfig("latest", 1, (), False)
    assert config.sampling == SamplingConfig(0.05, 64)
    assert config.drift == DriftConfig(1000, 60.0, 10, 0.2, 0.1, 0.01, 2)


def test_none_missing_and_empty_files_give_defaults(tmp_path: Path) -> None:
    assert load_model_config(None) == ModelConfig()
    assert load_model_config(tmp_path / "absent.toml") == ModelConfig()
    assert load_model_config(write(tmp_path, "# nothing\n")) == ModelConfig()


def test_design_example_parses_to_the_defaults(tmp_path: Path) -> None:
    assert load_model_config(write(tmp_path, DESIGN_EXAMPLE)) == ModelConfig()


def test_explicit_values_are_read(tmp_path: Path) -> None:
    text = """
[batching]
max_batch_size = 8
latency_budget_ms = 50
[runtime]
providers = ["tensorrt", "cuda", "cpu"]
instances = 2
buckets = [1, 4, 8]
[runtime.cuda]
device_id = 1
gpu_mem_limit = 1073741824
[versions]
policy = "specific"
specific = [3, 1]
[sampling]
rate = 1
[drift]
alpha = 0.05
"""
    config = load_model_config(write(tmp_path, text))
    assert config.batching.max_batch_size == 8
    assert config.batching.latency_budget_ms == 50.0
    assert type(config.batching.latency_budget_ms) is float  # an int is accepted where a float is wanted
    assert config.runtime.providers == ("tensorrt", "cuda", "cpu")
    assert config.runtime.buckets == (1, 4, 8)
    assert dict(config.runtime.cuda) == {"device_id": 1, "gpu_mem_limit": 1073741824}
    assert dict(config.runtime.tensorrt) == {"fp16": False}
    assert config.versions.specific == (3, 1)
    assert config.sampling.rate == 1.0
    assert config.drift.alpha == 0.05


INVALID = [
    # (toml, the key the message must name, a fragment of the problem)
    ("[batchin]\n", "[batchin]", "unknown section"),
    ("batching = 3\n", "[batching]", "expected a table"),
    ("[batching]\nmax_batch_sise = 8\n", "[batching].max_batch_sise", "unknown key"),
    ("[batching]\nmax_batch_size = 0\n", "[batching].max_batch_size", ">= 1"),
    ("[batching]\nmax_batch_size = 8.0\n", "[batching].max_batch_size", "expected an integer"),
    ("[batching]\nmax_batch_size = true\n", "[batching].max_batch_size", "expected an integer"),
    ("[batching]\nmax_queue_delay_ms = -1.0\n", "[batching].max_queue_delay_ms", ">= 0.0"),
    ('[batching]\nmax_queue_delay_ms = "2"\n', "[batching].max_queue_delay_ms", "expected a number"),
    ("[batching]\nlatency_budget_ms = 0\n", "[batching].latency_budget_ms", "> 0.0"),
    ("[batching]\nlatency_budget_ms = inf\n", "[batching].latency_budget_ms", "finite"),
    ("[batching]\nlatency_budget_ms = nan\n", "[batching].latency_budget_ms", "finite"),
    ("[batching]\nmax_queue_size = 0\n", "[batching].max_queue_size", ">= 1"),
    ("[batching]\npriority_levels = 0\n", "[batching].priority_levels", ">= 1"),
    ("[runtime]\nproviders = []\n", "[runtime].providers", "non-empty"),
    ('[runtime]\nproviders = "cpu"\n', "[runtime].providers", "non-empty list"),
    ('[runtime]\nproviders = ["gpu"]\n', "[runtime].providers[0]", "expected one of"),
    ('[runtime]\nproviders = ["cpu", "cpu"]\n', "[runtime].providers", "repeated"),
    ("[runtime]\ninstances = 0\n", "[runtime].instances", ">= 1"),
    ("[runtime]\nintra_op_threads = -1\n", "[runtime].intra_op_threads", ">= 0"),
    ("[runtime]\nrequire_gpu = 1\n", "[runtime].require_gpu", "true or false"),
    ("[runtime]\nbuckets = [8, 4]\n", "[runtime].buckets", "ascending"),
    ("[runtime]\nbuckets = [0]\n", "[runtime].buckets[0]", ">= 1"),
    ("[runtime]\nbuckets = [1.5]\n", "[runtime].buckets[0]", "expected an integer"),
    ("[runtime]\ncuda = 1\n", "[runtime].cuda", "expected a table"),
    ("[runtime.gpu]\nx = 1\n", "[runtime].gpu", "unknown key"),
    ("[runtime.cuda]\ndevice_id = -1\n", "[runtime.cuda].device_id", ">= 0"),
    ('[runtime.cuda]\ndevice_id = "0"\n', "[runtime.cuda].device_id", "expected an integer"),
    ("[runtime.cuda]\nextra = {a = 1}\n", "[runtime.cuda].extra", "string, number or boolean"),
    ('[runtime.tensorrt]\nfp16 = "yes"\n', "[runtime.tensorrt].fp16", "true or false"),
    ('[versions]\npolicy = "newest"\n', "[versions].policy", "expected one of"),
    ("[versions]\nlatest = 0\n", "[versions].latest", ">= 1"),
    ("[versions]\nspecific = [0]\n", "[versions].specific[0]", ">= 1"),
    ("[versions]\nspecific = [2, 2]\n", "[versions].specific", "repeated"),
    ('[versions]\npolicy = "specific"\n', "[versions].specific", "at least one"),
    ('[versions]\nallow_breaking_signature = "no"\n', "[versions].allow_breaking_signature", "true or false"),
    ("[sampling]\nrate = 1.5\n", "[sampling].rate", "<= 1.0"),
    ("[sampling]\nrate = -0.1\n", "[sampling].rate", ">= 0.0"),
    ("[sampling]\nrate = true\n", "[sampling].rate", "expected a number"),
    ("[sampling]\nmax_rows_per_request = 0\n", "[sampling].max_rows_per_request", ">= 1"),
    ("[sampling]\nmax_rows = 1\n", "[sampling].max_rows", "unknown key"),
    ("[drift]\nwindow_rows = 1\n", "[drift].window_rows", ">= 2"),
    ("[drift]\nwindow_seconds = 0.0\n", "[drift].window_seconds", "> 0.0"),
    ("[drift]\nbins = 1\n", "[drift].bins", ">= 2"),
    ("[drift]\npsi_threshold = 0\n", "[drift].psi_threshold", "> 0.0"),
    ("[drift]\nks_min_effect = 2\n", "[drift].ks_min_effect", "<= 1.0"),
    ("[drift]\nalpha = 0\n", "[drift].alpha", "> 0.0"),
    ("[drift]\nalpha = 1.0\n", "[drift].alpha", "< 1.0"),
    ("[drift]\nconsecutive = 0\n", "[drift].consecutive", ">= 1"),
    ("[drift]\nconsecutive = 2.5\n", "[drift].consecutive", "expected an integer"),
]


@pytest.mark.parametrize(("text", "key", "problem"), INVALID, ids=[f"{k} {p}" for _, k, p in INVALID])
def test_invalid_values_name_the_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_model_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {key}:"), message
    assert problem in message
    assert "\n" not in message


def test_message_format_for_a_typo() -> None:
    with pytest.raises(ConfigError, match=r"^model\.toml: \[batching\]\.max_batch_sise: unknown key$"):
        parse_model_config({"batching": {"max_batch_sise": 8}})


def test_invalid_toml_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_model_config(write(tmp_path, "[batching\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_model_config(tmp_path)  # a directory
    assert issubclass(ConfigError, RegistryError)


def test_sections_validate_when_built_directly() -> None:
    with pytest.raises(ConfigError, match=r"\[batching\]\.max_batch_size"):
        BatchingConfig(max_batch_size=-1)
    with pytest.raises(ConfigError, match=r"\[runtime\]\.providers\[1\]"):
        RuntimeConfig(providers=("cpu", "npu"))
    with pytest.raises(ConfigError, match=r"\[drift\]"):
        ModelConfig(drift=SamplingConfig())  # type: ignore[arg-type]


def test_configs_are_frozen() -> None:
    config = ModelConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.batching.max_batch_size = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.runtime.cuda["device_id"] = 3  # type: ignore[index]
    assert RuntimeConfig(providers=["cuda", "cpu"]).providers == ("cuda", "cpu")  # type: ignore[arg-type]


def test_float_fields_are_floats_after_validation() -> None:
    drift = DriftConfig(window_seconds=5, psi_threshold=1, ks_min_effect=0, alpha=0.5)
    assert all(type(v) is float for v in (drift.window_seconds, drift.psi_threshold, drift.ks_min_effect))
    assert math.isclose(drift.alpha, 0.5)


MONITOR_DRIFT_INVALID = [
    ('[drift]\npsi_threshold_mode = "adaptive"\n', "[drift].psi_threshold_mode", "expected one of"),
    ("[drift]\nnonfinite_threshold = 0\n", "[drift].nonfinite_threshold", "> 0.0"),
    ("[drift]\nnonfinite_threshold = 1.5\n", "[drift].nonfinite_threshold", "<= 1.0"),
    ("[drift]\naudit_max_rows = -1\n", "[drift].audit_max_rows", ">= 0"),
    ("[drift]\naudit_max_rows = 1e5\n", "[drift].audit_max_rows", "expected an integer"),
    ("[drift]\nsliding_panes = 0\n", "[drift].sliding_panes", ">= 1"),
    ("[drift]\nskew_windows = -1\n", "[drift].skew_windows", ">= 0"),
    ("[drift]\nskew_windows = 1001\n", "[drift].skew_windows", "<= 1000"),
    ("[drift]\nskew_windows = true\n", "[drift].skew_windows", "expected an integer"),
    ('[drift]\nskew_windows = "1"\n', "[drift].skew_windows", "expected an integer"),
    ("[drift]\nskew_window = 1\n", "[drift].skew_window", "unknown key"),
]


@pytest.mark.parametrize(
    ("text", "key", "problem"), MONITOR_DRIFT_INVALID, ids=[f"{k} {p}" for _, k, p in MONITOR_DRIFT_INVALID]
)
def test_monitor_drift_keys_name_the_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_model_config(path)
    assert str(caught.value).startswith(f"{path}: {key}:")
    assert problem in str(caught.value)


def test_monitor_drift_keys_parse_and_default(tmp_path: Path) -> None:
    assert DriftConfig().psi_threshold_mode == "calibrated"
    assert (DriftConfig().nonfinite_threshold, DriftConfig().audit_max_rows) == (0.01, 100_000)
    assert DriftConfig().sliding_panes == 5
    text = (
        '[drift]\npsi_threshold_mode = "fixed"\nnonfinite_threshold = 1\naudit_max_rows = 0\n'
        "sliding_panes = 3\n"
    )
    drift = load_model_config(write(tmp_path, text)).drift
    assert (drift.psi_threshold_mode, drift.audit_max_rows, drift.sliding_panes) == ("fixed", 0, 3)
    assert type(drift.nonfinite_threshold) is float
    assert drift.nonfinite_threshold == 1.0


def test_skew_windows_defaults_to_one_and_zero_turns_the_check_off(tmp_path: Path) -> None:
    assert DriftConfig().skew_windows == 1
    assert load_model_config(write(tmp_path, "[drift]\nskew_windows = 3\n")).drift.skew_windows == 3
    assert load_model_config(write(tmp_path, "[drift]\nskew_windows = 0\n")).drift.skew_windows == 0
