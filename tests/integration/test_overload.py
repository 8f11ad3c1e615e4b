"""Overload protection through a real gateway: the data plane's concurrency limit refuses with a clear
RESOURCE_EXHAUSTED before any work, and gRPC core refuses calls past ``max_pending_calls`` while Python
is busy, without running Python at all. Driven by holding slots and blocking the event loop on events,
never by timing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from gateway.concurrency import ConcurrencyLimit
from gateway.config import GatewayConfig
from gateway.server import server_options
from tests.servers import ServerThread


def _input() -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("x", [2, 3], "FP32")
    tensor.set_data_from_numpy(np.ones((2, 3), np.float32))
    return tensor


def _sample(server: ServerThread, name: str, labels: dict[str, str]) -> float:
    value = server.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def _hold(limit: ConcurrencyLimit, slots: int) -> None:
    """Takes ``slots`` slots of the limit, as inferences in flight would (run on the server's loop)."""
    for _ in range(slots):
        assert limit.try_acquire()


async def _give_back(limit: ConcurrencyLimit, slots: int) -> None:
    for _ in range(slots):
        limit.release(0.0, 1.0)


@pytest.fixture
def limited(fixture_registry: Path) -> Iterator[ServerThread]:
    config = GatewayConfig(
        fixture_registry,
        sampling=False,
        port=0,
        metrics_port=None,
        max_concurrency=2,
        adaptive_concurrency=False,
    )
    server = ServerThread(config)
    yield server
    server.stop()


def test_concurrency_limit_refuses_with_a_clear_message_and_counts_it(limited: ServerThread) -> None:
    limit = limited.server.limit
    assert limit is not None
    assert limit.limit == 2

    with grpcclient.InferenceServerClient(limited.target) as client:
        assert client.infer("dtype_fp32", [_input()]).as_numpy("y") is not None
        limited.call(_hold(limit, 2))  # two inferences "in flight": the limit is reached
        with pytest.raises(InferenceServerException) as refused:
            client.infer("dtype_fp32", [_input()])
        assert refused.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        assert "overloaded" in refused.value.message()
        assert "limit 2" in refused.value.message()
        labels = {"model": "dtype_fp32", "version": "1"}
        assert _sample(limited, "infergate_shed_total", {**labels, "reason": "concurrency_limit"}) == 1
        assert _sample(limited, "infergate_requests_total", {**labels, "code": "RESOURCE_EXHAUSTED"}) == 1
        limited.call(_give_back(limit, 2))
        assert client.infer("dtype_fp32", [_input()]).as_numpy("y") is not None
    assert limit.inflight == 0


def test_the_limit_refuses_before_decoding_and_invalid_input_frees_its_slot(limited: ServerThread) -> None:
    limit = limited.server.limit
    assert limit is not None
    wrong = grpcclient.InferInput("x", [2, 4], "FP32")  # the model takes [-1, 3]
    wrong.set_data_from_numpy(np.ones((2, 4), np.float32))

    with grpcclient.InferenceServerClient(limited.target) as client:
        with pytest.raises(InferenceServerException) as invalid:
            client.infer("dtype_fp32", [wrong])
        assert invalid.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert limit.inflight == 0  # the slot came back, and nothing was judged late
        assert limit.limit == 2
        limited.call(_hold(limit, 2))
        with pytest.raises(InferenceServerException) as refused:
            client.infer("dtype_fp32", [wrong])
        # Refused at the door: the server did not spend decoding and validation on it.
        assert refused.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        limited.call(_give_back(limit, 2))
    assert limit.inflight == 0


def test_server_options_carry_the_transport_limits(fixture_registry: Path) -> None:
    options = dict(
        server_options(GatewayConfig(fixture_registry, max_concurrent_streams=16, max_pending_calls=8))
    )
    assert options["grpc.max_concurrent_streams"] == 16
    assert options["grpc.server.max_pending_requests"] == 8
    assert options["grpc.server.max_pending_requests_hard_limit"] == 8
    defaults = dict(server_options(GatewayConfig(fixture_registry, max_pending_calls=0)))
    assert "grpc.max_concurrent_streams" not in defaults
    assert "grpc.server.max_pending_requests" not in defaults


def test_grpc_core_refuses_calls_past_max_pending_while_python_is_busy(fixture_registry: Path) -> None:
    """With the event loop blocked, Python takes no call; gRPC core keeps at most ``max_pending_calls``
    (besides the calls matched to requests Python made before it blocked: grpc.aio's one and the
    ``accept_ahead`` acceptors') and answers the rest at once. Once the loop runs again every kept call is
    served."""
    pending, ahead = 2, 2
    calls = 12
    config = GatewayConfig(
        fixture_registry, sampling=False, port=0, metrics_port=None, max_pending_calls=pending
    )
    server = ServerThread(replace(config, accept_ahead=ahead))
    # Kept: the calls gRPC core holds (pending), the ones matched to the requests Python had made (grpc.aio's
    # and the acceptors'), plus one more while the limit is checked after a call is queued.
    kept = pending + 1 + ahead + 1
    release = threading.Event()
    blocked = threading.Event()

    def block_loop() -> None:
        blocked.set()
        release.wait(60)

    outcomes: list[str] = []
    done = threading.Condition()

    def answered(result: object, error: InferenceServerException | None) -> None:
        with done:
            outcomes.append("OK" if error is None else str(error.status()))
            done.notify_all()

    try:
        with grpcclient.InferenceServerClient(server.target) as client:
            assert client.is_server_live()  # connected before the loop blocks
            server.loop.call_soon_threadsafe(block_loop)
            assert blocked.wait(30)
            for _ in range(calls):
                client.async_infer("dtype_fp32", [_input()], callback=answered, client_timeout=60)
            with done:  # gRPC core answers the calls it does not keep while Python is still blocked
                assert done.wait_for(lambda: len(outcomes) >= calls - kept, timeout=60)
                refused_while_blocked = len(outcomes)
            release.set()  # Python runs again and serves what gRPC core kept
            with done:
                assert done.wait_for(lambda: len(outcomes) == calls, timeout=60)
    finally:
        release.set()
        server.stop()
    assert refused_while_blocked >= calls - kept
    refused = [code for code in outcomes if code != "OK"]
    assert set(refused) <= {"StatusCode.CANCELLED", "StatusCode.RESOURCE_EXHAUSTED"}, outcomes
    assert len(refused) >= calls - kept
    assert outcomes.count("OK") >= 1
