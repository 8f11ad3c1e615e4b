"""``--workers 2``: two processes share the gRPC port (SO_REUSEPORT); requests spread over both, a killed
worker is restarted while clients retry through, and SIGTERM drains both (exit 0). Real subprocesses."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.collector import free_port
from tests.onnx_models import build_registry, mlp_model
from tests.workers_rig import gateway_workers


def _ok_requests(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    pattern = r'infergate_requests_total\{code="OK",model="mlp",version="1"\} ([0-9.e+]+)'
    return sum(float(value) for value in re.findall(pattern, text))


def _infer_with_retry(target: str, deadline_s: float = 30.0) -> str:
    """One request on a fresh connection, retried while a worker is down (UNAVAILABLE)."""
    x = np.ones((2, 16), np.float32)
    end = time.monotonic() + deadline_s
    while True:
        try:
            with grpcclient.InferenceServerClient(target) as client:
                tensor = grpcclient.InferInput("x", [2, 16], "FP32")
                tensor.set_data_from_numpy(x)
                return str(client.infer("mlp", [tensor], client_timeout=10).get_response().model_version)
        except InferenceServerException as exc:
            if time.monotonic() > end or "UNAVAILABLE" not in str(exc.status()):
                raise
            time.sleep(0.05)


def _free_port_pair() -> int:
    """A port P with P and P + 1 both free now (worker i serves /metrics on P + i)."""
    for _ in range(100):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            candidate = int(first.getsockname()[1])
            try:
                second.bind(("127.0.0.1", candidate + 1))
            except OSError:
                continue
            return candidate
    raise AssertionError("no two consecutive free ports on 127.0.0.1")


def test_two_workers_share_the_port_survive_a_crash_and_drain(tmp_path: Path) -> None:
    root = build_registry(tmp_path / "registry", {"mlp": mlp_model()})
    port, metrics = free_port(), _free_port_pair()
    options = ("--port", str(port), "--metrics-port", str(metrics), "--no-sampling", "--poll-interval", "0")
    with gateway_workers(root, 2, *options) as gateway:
        process = gateway.process
        ready = (gateway.next_ready(), gateway.next_ready())
        workers = dict(sorted((i, (pid, m)) for i, pid, _, m in ready))
        assert set(workers) == {0, 1}
        assert {m for _, m in workers.values()} == {metrics, metrics + 1}
        target = f"127.0.0.1:{port}"
        for _ in range(60):  # each on a new connection: the kernel spreads connections over the listeners
            assert _infer_with_retry(target) == "1"
        counts = [_ok_requests(m) for _, m in workers.values()]
        assert sum(counts) == 60
        assert min(counts) > 0, counts

        victim_pid = workers[1][0]
        os.kill(victim_pid, signal.SIGKILL)
        for _ in range(40):  # clients retry through while worker 1 is restarted
            assert _infer_with_retry(target) == "1"
        index, new_pid, _, _ = gateway.next_ready()
        assert index == 1
        assert new_pid != victim_pid
        for _ in range(20):
            assert _infer_with_retry(target) == "1"

        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        with grpc.insecure_channel(target) as channel:  # nobody listens any more
            try:
                grpc.channel_ready_future(channel).result(timeout=1)
                raise AssertionError("a worker is still listening after SIGTERM")
            except grpc.FutureTimeoutError:
                pass


def _gone(pid: int, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie (exited, not reaped by init yet) counts as gone
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as stat:
            if stat.read().split(")")[-1].split()[0] == "Z":
                return True
        time.sleep(0.05)
    return False


def test_workers_exit_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    root = build_registry(tmp_path / "registry", {"mlp": mlp_model()})
    options = ("--port", "0", "--metrics-port", "0", "--no-sampling", "--poll-interval", "0")
    with gateway_workers(root, 2, *options) as gateway:
        pids = [gateway.next_ready()[1], gateway.next_ready()[1]]
        gateway.process.kill()  # the supervisor only: no signal is forwarded
        gateway.process.wait(10)
        assert all(_gone(pid) for pid in pids), "a worker outlived its supervisor"


def test_sigusr1_dumps_every_thread_and_the_worker_keeps_serving(tmp_path: Path) -> None:
    root = build_registry(tmp_path / "registry", {"mlp": mlp_model()})
    options = ("--port", "0", "--metrics-port", "0", "--no-sampling", "--poll-interval", "0")
    with gateway_workers(root, 1, *options) as gateway:  # one worker: the gateway runs in this process
        pid, listening = gateway.process.pid, None
        while listening is None:
            listening = re.search(
                r"infergate gateway listening on 127\.0\.0\.1:(\d+)", gateway.lines.get(timeout=60)
            )
        port = int(listening.group(1))
        os.kill(pid, signal.SIGUSR1)
        dumped: list[str] = []
        while not any("serve" in line and 'File "' in line for line in dumped):
            dumped.append(gateway.lines.get(timeout=30))
        assert any(line.startswith("Thread 0x") or line.startswith("Current thread 0x") for line in dumped)
        assert _infer_with_retry(f"127.0.0.1:{port}") == "1"
        os.kill(pid, 0)  # still the same process: the dump did not end it
