"""The native engine's HTTP/2 client against real grpcio servers: flow control and frame splitting for
large messages, the server's stream limit (calls wait in the client, never refused), deadlines that
pass while a call waits or runs, and an IPv6 target. The binary is driven directly with its own files."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest

from loadtests.native import build, read_records, write_payloads

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ (make native-client)")

OK, DEADLINE_EXCEEDED = 0, 4
Handler = Callable[[bytes, grpc.ServicerContext], bytes]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("native-wire") / "infergate-load-native")


def _serve(
    handler: Handler, options: list[tuple[str, int]], host: str = "127.0.0.1"
) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=options)
    method = grpc.unary_unary_rpc_method_handler(handler)  # raw bytes in and out
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Wire", {"Call": method}),))
    port = server.add_insecure_port(f"{host}:0")
    server.start()
    return server, (f"[{host}]" if ":" in host else host) + f":{port}"


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    started: list[grpc.Server] = []

    def start(handler: Handler, options: list[tuple[str, int]] | None = None, host: str = "127.0.0.1") -> str:
        server, target = _serve(handler, options or [], host)
        started.append(server)
        return target

    yield start
    for server in started:
        server.stop(0)


def _run(
    engine: Path, folder: Path, target: str, payloads: tuple[bytes, ...], calls: int, deadline_s: float
) -> np.ndarray:
    """Sends ``calls`` calls at once (open loop) and returns their records, in finishing order."""
    write_payloads(folder / "payloads", payloads)
    now = time.perf_counter_ns()
    np.full(calls, now, dtype="<i8").tofile(folder / "schedule")
    command = [
        str(engine), target, "/test.Wire/Call", str(folder / "payloads"), str(int(deadline_s * 1e9)),
        str(now), str(1_000_000_000), "100000", str(folder / "records"), "open", str(folder / "schedule"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    return read_records(folder / "records")


def test_large_messages_cross_windows_and_frames_intact(
    engine: Path, serve: Callable[..., str], tmp_path: Path
) -> None:
    sizes = (300_000, 70_000, 17, 0)  # over the 64 KiB windows, over the 16 KiB frame, small, empty
    expected = {bytes(np.arange(size, dtype=np.uint8)) for size in sizes}

    def check(request: bytes, context: grpc.ServicerContext) -> bytes:
        if request not in expected:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{len(request)} bytes arrived changed")
        return request[:64]

    target = serve(check)
    records = _run(engine, tmp_path, target, tuple(sorted(expected, key=len)), calls=12, deadline_s=10)
    assert records.shape == (12, 4)
    assert (records[:, 3] == OK).all()


def test_calls_beyond_the_servers_stream_limit_wait_in_the_client(
    engine: Path, serve: Callable[..., str], tmp_path: Path
) -> None:
    lock, pair = threading.Lock(), threading.Event()
    active, peak = [0], [0]

    def hold(request: bytes, context: grpc.ServicerContext) -> bytes:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            if active[0] == 2:
                pair.set()
        pair.wait(10)  # the first call waits for a second one to run beside it
        with lock:
            active[0] -= 1
        return b""

    # Only HTTP/2 concurrency counts (no overload protection): a third stream would be refused outright.
    target = serve(hold, [("grpc.max_concurrent_streams", 2), ("grpc.http.overload_protection", 0)])
    records = _run(engine, tmp_path, target, (b"x",), calls=8, deadline_s=20)
    assert (records[:, 3] == OK).all(), np.unique(records[:, 3], return_counts=True)
    assert peak[0] == 2


def test_deadlines_pass_for_running_and_waiting_calls(
    engine: Path, serve: Callable[..., str], tmp_path: Path
) -> None:
    release = threading.Event()

    def stall(request: bytes, context: grpc.ServicerContext) -> bytes:
        while context.is_active() and not release.is_set():
            release.wait(0.01)
        return b""

    target = serve(stall, [("grpc.max_concurrent_streams", 1), ("grpc.http.overload_protection", 0)])
    deadline_ns = 300_000_000
    try:
        records = _run(engine, tmp_path, target, (b"x",), calls=3, deadline_s=deadline_ns / 1e9)
    finally:
        release.set()
    assert (records[:, 3] == DEADLINE_EXCEEDED).all()
    waited = records[:, 2] - records[:, 1]
    assert (waited >= deadline_ns).all()
    assert (waited < deadline_ns + 2_000_000_000).all()  # finished by the client, not left hanging


def test_an_ipv6_target_is_served(engine: Path, serve: Callable[..., str], tmp_path: Path) -> None:
    try:
        target = serve(lambda request, context: request, host="::1")
    except RuntimeError:
        pytest.skip("no IPv6 loopback here")
    records = _run(engine, tmp_path, target, (b"abc",), calls=3, deadline_s=10)
    assert (records[:, 3] == OK).all()
