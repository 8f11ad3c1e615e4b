"""``--workers 2``: two processes share the gRPC port (SO_REUSEPORT); requests spread over both, a killed
worker is restarted while clients retry through, and SIGTERM drains both (exit 0). Real subprocesses."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.collector import free_port
from tests.onnx_models import build_registry, mlp_model

READY = re.compile(r"worker (\d+) pid (\d+) listening on 127\.0\.0\.1:(\d+) \(metrics :(\d+)\)")


def _lines(process: subprocess.Popen[str], sink: queue.Queue[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        sink.put(line)


def _next_ready(sink: queue.Queue[str], timeout: float = 60.0) -> tuple[int, int, int, int]:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        try:
            line = sink.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        match = READY.search(line)
        if match:
            index, pid, port, metrics = (int(g) for g in match.groups())
            return index, pid, port, metrics
        seen.append(line)
    raise AssertionError("no worker became ready; the gateway printed:\n" + "".join(seen[-40:]))


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


def test_two_workers_share_the_port_survive_a_crash_and_drain(tmp_path: Path) -> None:
    root = build_registry(tmp_path / "registry", {"mlp": mlp_model()})
    port, metrics = free_port(), free_port()
    command = [
        sys.executable, "-m", "gateway", "--registry", str(root), "--port", str(port),
        "--metrics-port", str(metrics), "--workers", "2", "--no-sampling", "--poll-interval", "0",
        "--log-format", "text",
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,  # its own process group: a failed test kills the workers too
    )
    sink: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_lines, args=(process, sink), daemon=True)
    reader.start()
    try:
        workers = dict(sorted((i, (pid, m)) for i, pid, _, m in (_next_ready(sink), _next_ready(sink))))
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
        index, new_pid, _, _ = _next_ready(sink)
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
    finally:
        # Kill the whole group: workers that outlive a killed supervisor would hold the pipe open, and
        # the reader (and this test) would wait on it forever instead of reporting the failure above.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        reader.join(10)
        assert process.stdout is not None
        process.stdout.close()


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
    command = [
        sys.executable, "-m", "gateway", "--registry", str(root), "--port", "0",
        "--metrics-port", "0", "--workers", "2", "--no-sampling", "--poll-interval", "0",
        "--log-format", "text",
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    sink: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_lines, args=(process, sink), daemon=True)
    reader.start()
    try:
        pids = [_next_ready(sink)[1], _next_ready(sink)[1]]
        process.kill()  # the supervisor only: no signal is forwarded
        process.wait(10)
        assert all(_gone(pid) for pid in pids), "a worker outlived its supervisor"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        reader.join(10)
        assert process.stdout is not None
        process.stdout.close()
