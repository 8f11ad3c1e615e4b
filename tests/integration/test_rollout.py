"""Staged rollouts through a real gateway under load (tritonclient on loopback): a good candidate is
promoted through every step, each kind of bad candidate is rolled back by the right gate, and no client
request fails meanwhile; canary assignment is sticky by request id; shadow never changes an answer; a
restarted gateway resumes at the recorded step."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient

from gateway.config import GatewayConfig
from gateway.rollout_live import share_of
from protos import inference_pb2, inference_pb2_grpc
from registry.cli import main as cli
from registry.rollout import read_state
from tests.rollout_models import FEATURES, classifier
from tests.rollout_rig import (
    POLL,
    TICK,
    Hook,
    Traffic,
    check_answers,
    finished,
    infer_version,
    metric,
    publish_model,
    rollout_toml,
    wait_live,
    wait_state,
)
from tests.servers import ServerThread


@pytest.fixture
def hook() -> Iterator[Hook]:
    receiver = Hook()
    yield receiver
    receiver.close()


@pytest.fixture
def make_server(tmp_path: Path, hook: Hook) -> Iterator[Callable[[str], tuple[Path, ServerThread]]]:
    servers: list[ServerThread] = []

    def make(toml: str) -> tuple[Path, ServerThread]:
        root = tmp_path / "registry"
        (root / "m").mkdir(parents=True, exist_ok=True)
        (root / "m" / "model.toml").write_text(toml)
        publish_model(root, classifier(), "stable")
        config = GatewayConfig(
            root,
            sampling=False,
            port=0,
            metrics_port=None,
            poll_interval=POLL,
            rollout_tick_s=TICK,
            rollout_webhook=hook.url,
        )
        servers.append(ServerThread(config))
        wait_state(root, lambda s: s.stable == 1 and s.status == "idle", timeout=10)
        return root, servers[-1]

    yield make
    for server in servers:
        server.stop()


def test_good_candidate_is_promoted_through_every_step_without_a_failed_request(
    make_server, hook: Hook
) -> None:
    root, server = make_server(rollout_toml())
    traffic = Traffic(server.target)
    try:
        publish_model(root, classifier(), "good")
        state = wait_state(root, finished)
        traffic.wait_more(20)
    finally:
        traffic.stop()
    assert state.status == "promoted", state
    assert state.stable == 2
    assert state.candidate == 2
    check_answers(traffic)
    versions = [v for v, _, _ in traffic.answers]
    assert {"1", "2"} <= set(versions)
    assert versions[-1] == "2"  # the candidate is the default now
    # The announcement (event metric, webhook) follows the state file once the table has reloaded.
    (event,) = hook.wait(1)
    assert metric(server, "infergate_rollout_events_total", model="m", event="started") == 1
    assert metric(server, "infergate_rollout_events_total", model="m", event="step") == 2
    assert metric(server, "infergate_rollout_events_total", model="m", event="promoted") == 1
    assert metric(server, "infergate_rollout_gate_total", model="m", result="fail") == 0
    assert metric(server, "infergate_rollout_gate_total", model="m", gate="agreement", result="pass") == 3
    assert metric(server, "infergate_rollout_step", model="m", version="2") == -1
    assert (event["event"], event["model"], event["version"], event["gate"]) == (
        "rollout_promoted",
        "m",
        "2",
        "",
    )
    assert event["report"] == json.loads(state.to_json())


@pytest.mark.parametrize(
    ("bad", "gate", "keys"),
    [
        (classifier(heavy=160), "p99_ratio", {"max_p99_ratio": 3.0}),
        (classifier(heavy=160), "p99_ratio", {"max_p99_ratio": 3.0, "mode": "shadow"}),
        (classifier(failing_above=1.0), "error_ratio", {}),
        (classifier(shuffled=True), "agreement", {}),
    ],
    ids=["slower", "slower-in-shadow", "erroring", "disagreeing"],
)
def test_bad_candidate_is_rolled_back_by_its_gate_without_a_failed_request(
    make_server,
    hook: Hook,
    caplog: pytest.LogCaptureFixture,
    bad: onnx.ModelProto,
    gate: str,
    keys: dict[str, object],
) -> None:
    caplog.set_level(logging.INFO, logger="infergate.rollout")
    root, server = make_server(rollout_toml(**keys))
    traffic = Traffic(server.target)
    try:
        publish_model(root, bad, "bad")
        state = wait_state(root, finished)
        # Rolled back: every request sent from now on is answered by the stable version.
        seen = time.monotonic()
        traffic.wait_more(30)
    finally:
        traffic.stop()
    assert state.status == "rolled_back", state
    assert state.figures["gate"] == gate, state
    assert state.stable == 1
    assert state.candidate == 2
    assert state.candidate_stamp is not None
    assert traffic.versions_sent_after(seen) == {"1"}
    check_answers(traffic, shuffled_version="2" if gate == "agreement" else "")
    # The announcement (event metric, webhook) follows the state file once the table has reloaded.
    (event,) = hook.wait(1)
    assert metric(server, "infergate_rollout_gate_total", model="m", gate=gate, result="fail") == 1
    assert metric(server, "infergate_rollout_events_total", model="m", event="rolled_back") == 1
    assert (event["event"], event["version"], event["gate"]) == ("rollout_rolled_back", "2", gate)
    assert event["reason"] == state.reason
    assert event["report"] == json.loads(state.to_json())
    (line,) = [r for r in caplog.records if r.name == "infergate.rollout"]
    fields = line.fields  # type: ignore[attr-defined]
    assert (line.levelname, line.getMessage()) == ("WARNING", "rollout rolled back")
    assert (fields["event"], fields["model"], fields["candidate"], fields["gate"]) == (
        "rollout_rolled_back",
        "m",
        2,
        gate,
    )
    assert fields["figures"] == dict(state.figures)
    # Not retried while its files are unchanged (the watcher keeps polling meanwhile).
    time.sleep(5 * POLL)
    assert read_state(root / "m") == state


def test_canary_is_sticky_by_request_id_and_an_explicit_version_is_exact(make_server) -> None:
    root, server = make_server(rollout_toml(steps="[50, 100]", step_seconds=3600.0))
    publish_model(root, classifier(), "candidate")
    wait_state(root, lambda s: s.status == "running")
    x = np.ones((1, FEATURES), np.float32)
    tensor = grpcclient.InferInput("x", [1, FEATURES], "FP32")
    tensor.set_data_from_numpy(x)
    wait_live(server, True)
    with grpcclient.InferenceServerClient(server.target) as client:
        seen: dict[str, set[str]] = {}
        for i in range(40):
            rid = f"req-{i % 8}"
            version = client.infer("m", [tensor], request_id=rid).get_response().model_version
            seen.setdefault(rid, set()).add(version)
        for version in ("1", "2"):
            for _ in range(5):
                answer = client.infer("m", [tensor], model_version=version, request_id="req-0")
                assert answer.get_response().model_version == version
    assert all(len(versions) == 1 for versions in seen.values()), seen
    assert set().union(*seen.values()) == {"1", "2"}  # 8 ids at 50 %: both versions answer
    expected = {rid: share_of(rid) < 5000 for rid in seen}
    assert {rid: versions == {"2"} for rid, versions in seen.items()} == expected


def test_rollout_state_is_visible_and_an_operator_can_abort_and_retry(make_server, hook: Hook) -> None:
    root, server = make_server(rollout_toml(steps="[50, 100]", step_seconds=3600.0))
    publish_model(root, classifier(), "candidate")
    wait_state(root, lambda s: s.status == "running")
    wait_live(server, True)
    with grpcclient.InferenceServerClient(server.target) as client:
        reasons = {
            e["version"]: e.get("reason", "")
            for e in client.get_model_repository_index(as_json=True)["models"]
        }
    with grpc.insecure_channel(server.target) as channel:  # our stub: parameters are an infergate extension
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        params = stub.ModelMetadata(inference_pb2.ModelMetadataRequest(name="m"), timeout=10).parameters
    assert reasons["2"] == "rollout candidate against version 1: step 1/2 (50% canary)"
    assert reasons["1"] == "rollout stable; candidate version 2 at step 1/2 (50% canary)"
    assert params["rollout.status"].string_param == "running"
    assert params["rollout.candidate"].int64_param == 2
    assert params["rollout.percent"].double_param == 50.0

    assert cli(["rollout", "abort", "--registry", str(root), "m"]) == 0
    aborted = wait_state(root, lambda s: s.status == "aborted")
    wait_live(server, False)
    ids = [f"abort-{i}" for i in range(12)]
    assert {infer_version(server, rid) for rid in ids} == {"1"}
    assert metric(server, "infergate_rollout_events_total", model="m", event="aborted") == 1
    with grpcclient.InferenceServerClient(server.target) as client:
        entries = client.get_model_repository_index(as_json=True)["models"]
    blocked = next(e for e in entries if e["version"] == "2")
    assert blocked["state"] == "UNAVAILABLE"
    assert blocked["reason"] == "aborted: aborted by an operator; not retried until its files change"
    assert aborted.candidate_stamp is not None
    (event,) = hook.wait(1)
    assert (event["event"], event["version"], event["reason"]) == (
        "rollout_aborted",
        "2",
        "aborted by an operator",
    )

    assert cli(["rollout", "retry", "--registry", str(root), "m"]) == 0
    restarted = wait_state(root, lambda s: s.status == "running")
    assert (restarted.stable, restarted.candidate, restarted.step) == (1, 2, 0)
    wait_live(server, True)
    assert {infer_version(server, rid) for rid in ids} == {"1", "2"}


def test_shadow_never_changes_an_answer_and_rolls_back_a_disagreeing_candidate(make_server) -> None:
    root, server = make_server(rollout_toml("shadow"))
    traffic = Traffic(server.target)
    try:
        publish_model(root, classifier(shuffled=True), "shadowed")
        state = wait_state(root, finished)
    finally:
        traffic.stop()
    assert state.status == "rolled_back", state
    assert state.figures["gate"] == "agreement", state
    assert {v for v, _, _ in traffic.answers} == {"1"}
    check_answers(traffic)
    assert metric(server, "infergate_rollout_shadow_total", model="m", version="2", result="disagree") > 0


def test_a_restarted_gateway_resumes_at_the_recorded_step(make_server, tmp_path: Path) -> None:
    root, server = make_server(rollout_toml(steps="[10, 20, 50, 100]", step_seconds=0.2, min_requests=20))
    traffic = Traffic(server.target)
    try:
        publish_model(root, classifier(), "candidate")
        wait_state(root, lambda s: s.status == "running" and s.step >= 1)
    finally:
        traffic.stop()
    server.stop()
    state = read_state(root / "m")
    assert state is not None
    if state.status != "running":
        pytest.skip("the rollout finished before the gateway stopped")  # pragma: no cover
    config = GatewayConfig(
        root, sampling=False, port=0, metrics_port=None, poll_interval=POLL, rollout_tick_s=TICK
    )
    again = ServerThread(config)
    try:
        live = again.server.rollouts.live("m")
        assert live is not None
        assert (live.stable, live.candidate, live.step) == (1, 2, state.step)
        assert read_state(root / "m") == state  # resumed, not restarted
        assert metric(again, "infergate_rollout_step", model="m", version="2") == state.step
    finally:
        again.stop()
