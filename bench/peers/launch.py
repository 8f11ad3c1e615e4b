"""The servers of the peers benchmark: what each one runs, with which settings, on which ports.

Contracts:

* :data:`SERVERS` lists every server key in the order they are measured: ``infergate`` (configured as the
  peers are), ``infergate-defaults`` (no model.toml), ``pytriton``, ``mlserver`` (default
  ``parallel_workers``) and ``mlserver-pw0`` (``parallel_workers = 0``). ``echo`` (:data:`REFERENCE`) is
  not a peer: the bare grpc.aio echo server (``infergate-load echo-server``, no model), the Python gRPC
  ceiling that the head-to-head rounds measure beside the servers.
* :func:`server_spec` returns the :class:`ServerSpec` of one key for three fresh ports (gRPC, metrics,
  HTTP); every server binds 127.0.0.1 only and serves the same ``tiny`` and ``mlp`` ONNX files.
* Same settings everywhere: max batch 128, 0.5 ms queue delay (Triton ``max_queue_delay_microseconds =
  500``, MLServer ``max_batch_time = 0.0005``), onnxruntime with one intra-op thread and no spinning.
  infergate's runner takes ``intra_op_threads = 1`` from model.toml; with one intra-op thread onnxruntime
  has no pool threads that could spin. Sampling is off in both infergate rows (``--no-sampling``).
* The PyTriton server gets the peer interpreter's ``LIBDIR`` first in ``LD_LIBRARY_PATH`` (the Python
  backend stub loads ``libpython3.11.so`` from it). MLServer gets ``bench/peers`` on ``PYTHONPATH`` for its
  runtime module, and ``debug = false``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CONFIGS",
    "LABELS",
    "MODELS",
    "REFERENCE",
    "SERVERS",
    "TUNED_TOML",
    "ServerSpec",
    "peer_libdir",
    "server_spec",
]

SERVERS = ("infergate", "infergate-defaults", "pytriton", "mlserver", "mlserver-pw0")
#: The reference the head-to-head rounds add (bench/peers/rounds.py); never part of the sweep.
REFERENCE = "echo"
MODELS = ("tiny", "mlp")
MAX_BATCH = 128
QUEUE_DELAY_S = 0.0005
TUNED_TOML = (
    "[batching]\nmax_batch_size = 128\nmax_queue_delay_ms = 0.5\n\n[runtime]\nintra_op_threads = 1\n\n"
    "[sampling]\nrate = 0.0\n"
)
_HERE = Path(__file__).resolve().parent
LABELS = {
    "infergate": "infergate (as the peers)",
    "infergate-defaults": "infergate (defaults)",
    "pytriton": "PyTriton 0.7.0",
    "mlserver": "MLServer 1.7.1",
    "mlserver-pw0": "MLServer 1.7.1 (parallel_workers=0)",
    REFERENCE: "echo (bare grpc.aio, no model)",
}
CONFIGS = {
    "infergate": "model.toml: max_batch_size 128, max_queue_delay_ms 0.5, intra_op_threads 1; --no-sampling",
    "infergate-defaults": "no model.toml (every default); --no-sampling",
    "pytriton": "tritonserver 2.51, Python backend, dynamic batcher max batch 128, "
    "max_queue_delay_microseconds 500",
    "mlserver": "adaptive batching max_batch_size 128, max_batch_time 0.0005, default parallel_workers",
    "mlserver-pw0": "adaptive batching max_batch_size 128, max_batch_time 0.0005, parallel_workers 0",
    REFERENCE: "infergate-load echo-server: answers every request from cached bytes, runs no model",
}


@dataclass(frozen=True)
class ServerSpec:
    key: str
    label: str
    kind: str  # "infergate" | "triton" | "mlserver" | "echo": whose metrics give the batch size
    command: list[str]
    target: str
    metrics_url: str
    config: str
    env: dict[str, str] | None = None
    cwd: Path | None = None
    files: dict[str, str] = field(default_factory=dict)


def peer_libdir(python: Path) -> str:
    """``sysconfig.get_config_var("LIBDIR")`` of interpreter ``python``."""
    return subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip


def _mlserver_files(
    root: Path, onnx: dict[str, Path], ports: list[int], parallel_workers: int | None
) -> dict[str, str]:
    """settings.json and one model-settings.json per model, relative path -> JSON text."""
    grpc_port, metrics_port, http_port = ports
    settings: dict[str, object] = {
        "host": "127.0.0.1",
        "grpc_port": grpc_port,
        "http_port": http_port,
        "metrics_port": metrics_port,
        "metrics_dir": str(root / ".metrics"),
        "debug": False,
    }
    if parallel_workers is not None:
        settings["parallel_workers"] = parallel_workers
    files = {"settings.json": json.dumps(settings, indent=2)}
    for name, path in onnx.items():
        width = 16 if name == "tiny" else 256
        model = {
            "name": name,
            "implementation": "mlserver_runtime.OnnxRuntimeModel",
            "parameters": {"uri": str(path.resolve())},
            "max_batch_size": MAX_BATCH,
            "max_batch_time": QUEUE_DELAY_S,
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, width]}],
        }
        files[f"{name}/model-settings.json"] = json.dumps(model, indent=2)
    return files


def server_spec(
    key: str, ports: list[int], *, registries: dict[str, Path], venvs: Path, work: Path
) -> ServerSpec:
    """The spec of server ``key`` (see the module contract). ``registries`` has ``tuned`` and ``defaults``;
    the peers read the ONNX files of ``tuned``."""
    grpc_port, metrics_port, http_port = ports
    venvs, work = venvs.resolve(), work.resolve()
    target, metrics = f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{metrics_port}/metrics"
    onnx = {name: registries["tuned"] / name / "1" / "model.onnx" for name in MODELS}
    label, config = LABELS[key], CONFIGS[key]
    if key.startswith("infergate"):
        registry = registries["tuned" if key == "infergate" else "defaults"]
        command = [
            sys.executable, "-m", "gateway", "--registry", str(registry.resolve()), "--host", "127.0.0.1",
            "--port", str(grpc_port), "--metrics-port", str(metrics_port), "--no-sampling",
            "--grace-seconds", "5",
        ]  # fmt: skip
        return ServerSpec(key, label, "infergate", command, target, metrics, config)
    if key == REFERENCE:
        command = [
            sys.executable, "-m", "loadtests", "echo-server", "--registry",
            str(registries["tuned"].resolve()), "--host", "127.0.0.1", "--port", str(grpc_port),
        ]  # fmt: skip
        return ServerSpec(key, label, "echo", command, target, metrics, config)
    if key == "pytriton":
        python = venvs / "venv-pytriton" / "bin" / "python"
        libdir = peer_libdir(python)
        env = {
            **os.environ,
            "LD_LIBRARY_PATH": ":".join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p),
        }
        command = [
            str(python), str(_HERE / "pytriton_server.py"), "--grpc-port", str(grpc_port),
            "--http-port", str(http_port), "--metrics-port", str(metrics_port),
            *(f"{name}={path.resolve()}" for name, path in onnx.items()),
        ]  # fmt: skip
        return ServerSpec(key, label, "triton", command, target, metrics, config, env, work)
    if key in ("mlserver", "mlserver-pw0"):
        root = (work / key).resolve()
        files = _mlserver_files(root, onnx, ports, 0 if key == "mlserver-pw0" else None)
        env = {**os.environ, "PYTHONPATH": str(_HERE)}
        command = [str(venvs / "venv-mlserver" / "bin" / "mlserver"), "start", str(root)]
        return ServerSpec(key, label, "mlserver", command, target, metrics, config, env, root, files)
    raise ValueError(f"unknown server {key!r} (known: {', '.join(SERVERS)})")


def write_files(spec: ServerSpec) -> None:
    """Writes the spec's configuration files under its working directory."""
    if spec.cwd is None:
        return
    spec.cwd.mkdir(parents=True, exist_ok=True)
    for relative, text in spec.files.items():
        path = spec.cwd / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
