"""grpc.aio's completion-queue poller thread and gRPC core's transport threads (gateway/poller.py,
gateway/sharing.py): a gateway with its defaults (``auto``) runs them under SCHED_BATCH, and lets its busy
loop yield, exactly while the process may use one core; ``batch`` and ``normal`` set them, and calls are
served under either. The core count is the real threads' policy against a probe's answer."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from gateway import poller
from gateway.background import cancel_and_wait
from gateway.config import GatewayConfig
from gateway.cores import CoreWatch, usable_cores
from gateway.poller import (
    CoreSharing,
    completion_poller,
    follow_cores,
    schedule_completion_poller,
    watch_cores,
)
from gateway.sharing import TRANSPORT, transport_threads
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


def test_a_gateway_with_its_defaults_batches_the_poller_only_on_one_core(gateway: ServerThread) -> None:
    assert gateway.server.config.poller_scheduling == "auto"
    assert _policy() == (os.SCHED_BATCH if usable_cores() <= 1 else os.SCHED_OTHER)


def test_auto_follows_the_core_count_and_calls_are_served_under_either_policy(
    gateway: ServerThread, client: grpcclient.InferenceServerClient
) -> None:
    counts = iter([1, 2])
    watch = CoreWatch(lambda: next(counts), refresh_s=1.0)
    try:
        follow_cores(watch, 0.0)  # one usable core: batch
        assert _policy() == os.SCHED_BATCH
        _infer(client)
        watch.solo(1.0)  # two: the default policy again
        assert _policy() == os.SCHED_OTHER
        _infer(client)
        thread = completion_poller()
        assert thread is not None
        assert schedule_completion_poller("batch") == thread.native_id
        assert _policy() == os.SCHED_BATCH
    finally:
        follow_cores(CoreWatch(usable_cores), 0.0)  # back to what the session's gateway chose
    assert _policy() == (os.SCHED_BATCH if usable_cores() <= 1 else os.SCHED_OTHER)


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


async def test_watch_cores_applies_a_change_without_traffic() -> None:
    counts = itertools.chain([1], itertools.repeat(2))  # one core at subscription, then two
    watch = CoreWatch(lambda: next(counts), refresh_s=1.0)
    follow_cores(watch, 0.0)
    assert _policy() == os.SCHED_BATCH
    heard_two = asyncio.Event()
    watch.subscribe(lambda solo: None if solo else heard_two.set(), 0.0)  # after follow_cores' listener
    task = asyncio.create_task(watch_cores(watch, period_s=0.0, clock=itertools.count(1.0).__next__))
    try:
        await asyncio.wait_for(heard_two.wait(), 30)
        assert _policy() == os.SCHED_OTHER
    finally:
        await cancel_and_wait(task)
        follow_cores(CoreWatch(usable_cores), 0.0)


def _transport_policies() -> set[int]:
    policies = set()
    for tid in transport_threads():
        try:
            policies.add(os.sched_getscheduler(tid))
        except ProcessLookupError:  # gRPC retired the thread meanwhile
            continue
    return policies


async def test_one_core_batches_the_transport_threads_and_lets_the_busy_loop_yield(
    gateway: ServerThread, client: grpcclient.InferenceServerClient
) -> None:
    _infer(client)  # gRPC core's transport threads are running
    assert transport_threads()
    sharing = CoreSharing(asyncio.get_running_loop())
    assert sharing.yielding is not None
    counts = iter([1, 2])
    watch = CoreWatch(lambda: next(counts), refresh_s=1.0)
    try:
        follow_cores(watch, 0.0, sharing)  # one usable core
        assert _transport_policies() == {os.SCHED_BATCH}
        assert sharing.yielding.enabled
        tid = transport_threads()[0]
        os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))  # as a thread gRPC starts later
        sharing.refresh()
        assert os.sched_getscheduler(tid) == os.SCHED_BATCH
        _infer(client)
        watch.solo(1.0)  # two cores: the default policy, no yield
        assert _transport_policies() == {os.SCHED_OTHER}
        assert not sharing.yielding.enabled
        _infer(client)
    finally:
        sharing.yielding.enabled = False
        follow_cores(CoreWatch(usable_cores), 0.0)  # back to what the session's gateway chose


def test_long_compute_makes_the_transport_threads_preemptive_while_it_runs(
    gateway: ServerThread, client: grpcclient.InferenceServerClient
) -> None:
    _infer(client)  # gRPC core's transport threads are running
    # The process's one record, which the gateway's watcher also refreshes every second: a second
    # instance would race with it (a refresh between two lines re-applied the gateway's policy).
    transport = TRANSPORT
    transport.set_batch(False)
    before = _transport_policies()
    try:
        with transport.long_compute():  # batch off: nothing changes
            assert _transport_policies() == before
        transport.set_batch(True)
        assert _transport_policies() == {os.SCHED_BATCH}
        with transport.long_compute():
            assert _transport_policies() == {os.SCHED_OTHER}
            with transport.long_compute():  # overlapping long batches
                assert _transport_policies() == {os.SCHED_OTHER}
            assert _transport_policies() == {os.SCHED_OTHER}  # the outer one still runs
        assert _transport_policies() == {os.SCHED_BATCH}
    finally:
        transport.set_batch(False)
        follow_cores(CoreWatch(usable_cores), 0.0)  # back to what the session's gateway chose
    assert _transport_policies() == ({os.SCHED_BATCH} if usable_cores() <= 1 else {os.SCHED_OTHER})
