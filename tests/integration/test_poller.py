"""grpc.aio's completion-queue poller thread runs under SCHED_BATCH in a gateway with its defaults
(gateway/poller.py), ``normal`` gives it back the default policy, and calls are served under either."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from gateway import poller
from gateway.config import GatewayConfig
from gateway.poller import completion_poller, schedule_completion_poller
from tests.servers import ServerThread

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policies")


def _policy() -> int:
    thread = completion_poller()
    assert thread is not None
    assert thread.native_id is not None
    return os.sched_getscheduler(thread.native_id)


def _infer(client: grpcclient.InferenceServerClient) -> None:
    tensor = grpcclient.InferInput("x", [2, 3], "FP32")
    tensor.set_data_from_numpy(np.ones((2, 3), np.float32))
    result = client.infer("dtype_fp32", [tensor])
    np.testing.assert_array_equal(result.as_numpy("y"), np.full((2, 3), 2.0, np.float32))


def test_a_gateway_runs_the_poller_under_sched_batch_and_normal_gives_the_default_back(
    gateway: ServerThread, client: grpcclient.InferenceServerClient
) -> None:
    assert gateway.server.config.poller_scheduling == "batch"
    assert _policy() == os.SCHED_BATCH
    _infer(client)
    try:
        thread = completion_poller()
        assert thread is not None
        assert schedule_completion_poller("normal") == thread.native_id
        assert _policy() == os.SCHED_OTHER
        _infer(client)
    finally:
        assert schedule_completion_poller("batch") is not None
    assert _policy() == os.SCHED_BATCH


def test_an_unknown_policy_is_a_configuration_error(fixture_registry: Path) -> None:
    with pytest.raises(ValueError, match="unknown poller scheduling 'fifo'"):
        schedule_completion_poller("fifo")
    with pytest.raises(ValueError, match="poller_scheduling must be one of"):
        GatewayConfig(fixture_registry, poller_scheduling="fifo")


def test_no_poller_thread_leaves_serving_alone_and_warns_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(poller, "_warned", set())
    monkeypatch.setattr(poller.threading, "enumerate", list)  # a process without grpc.aio's poller
    with caplog.at_level(logging.WARNING, logger="gateway.poller"):
        assert schedule_completion_poller("batch") is None
        assert schedule_completion_poller("batch") is None
    assert [r.getMessage() for r in caplog.records] == [
        "grpc.aio's completion poller thread was not found; its policy is unchanged"
    ]
