"""``[rollout]`` validation, the rollout.json record (round trip, compare-and-replace), the plan and the
version policy under a rollout, and the ``infergate-registry rollout`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from registry.cli import main as cli
from registry.config import parse_model_config
from registry.errors import ConfigError
from registry.layout import default_version, scan_model, select_versions
from registry.publish import publish
from registry.rollout import RolloutState, plan_rollout, read_state, replace_state
from registry.rollout_config import RolloutConfig
from registry.serving import serving_default
from tests.rollout_models import classifier

CANARY = '[rollout]\nmode = "canary"\nsteps = [10, 50, 100]\n'


def test_defaults_are_immediate() -> None:
    config = parse_model_config({}).rollout
    assert config == RolloutConfig()
    assert config.mode == "immediate" and not config.staged  # noqa: PT018


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"mdoe": "canary"}, "[rollout].mdoe: unknown key"),
        ({"mode": "blue-green"}, "[rollout].mode: expected one of"),
        ({"steps": [10, 5, 100]}, "[rollout].steps: must be strictly increasing"),
        ({"steps": [10, 10, 100]}, "[rollout].steps: must be strictly increasing"),
        ({"steps": [10, 50]}, "[rollout].steps: the last step must be 100"),
        ({"steps": [0, 100]}, "[rollout].steps[0]: must be > 0.0"),
        ({"steps": [50, 150]}, "[rollout].steps[1]: must be <= 100.0"),
        ({"steps": []}, "[rollout].steps: expected a non-empty list"),
        ({"steps": ["10", 100]}, "[rollout].steps[0]: expected a number"),
        ({"step_seconds": 0}, "[rollout].step_seconds: must be > 0.0"),
        ({"min_requests": 0}, "[rollout].min_requests: must be >= 1"),
        ({"min_requests": 1.5}, "[rollout].min_requests"),
        ({"max_error_ratio": 1.5}, "[rollout].max_error_ratio: must be <= 1.0"),
        ({"min_agreement": -0.1}, "[rollout].min_agreement: must be >= 0.0"),
        ({"max_p99_ratio": 0.5}, "[rollout].max_p99_ratio: must be >= 1.0"),
        ({"agreement": "cosine"}, "[rollout].agreement: expected one of"),
        ({"drift_gate": "yes"}, "[rollout].drift_gate: expected true or false"),
        ({"shadow_max_inflight": 0}, "[rollout].shadow_max_inflight: must be >= 1"),
        ({"mirror_window_ms": -1}, "[rollout].mirror_window_ms: must be >= 0.0"),
        ({"mirror_window_ms": 5000}, "[rollout].mirror_window_ms: must be <= 1000.0"),
        ({"max_drift_psi": -1}, "[rollout].max_drift_psi: must be >= 0.0"),
    ],
)
def test_invalid_rollout_config_names_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match="^model.toml: " + message.replace("[", r"\[").replace(".", r"\.")):
        parse_model_config({"rollout": table})


def test_state_round_trips_and_rejects_bad_files(tmp_path: Path) -> None:
    state = RolloutState(stable=1).replace(candidate=2, step=1, status="running", figures={"p99_ratio": 1.25})
    assert RolloutState.from_json(state.to_json()) == state
    assert state.revision == 1
    for bad, why in [
        (b"[]", "expected a JSON object"),
        (b'{"stable": 1, "colour": 2}', "unknown keys"),
        (b'{"stable": 1, "status": "sideways"}', "status"),
        (b'{"stable": 0}', "stable"),
        (b'{"stable": 1, "status": "running"}', "running rollout needs a candidate"),
        (b'{"stable": 1, "candidate_stamp": [1, 2]}', "candidate_stamp"),
        (b"{", "invalid rollout state"),
    ]:
        with pytest.raises(ConfigError, match=why):
            RolloutState.from_json(bad)


def test_replace_is_compare_and_replace(tmp_path: Path) -> None:
    first = RolloutState(stable=1)
    assert replace_state(tmp_path, None, first)
    assert not replace_state(tmp_path, None, first.replace(stable=2))  # the file is no longer absent
    second = first.replace(candidate=2, step=0, status="running")
    assert replace_state(tmp_path, first, second)
    assert not replace_state(tmp_path, first, first.replace(status="idle"))  # stale expectation
    assert read_state(tmp_path) == second
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".rollout.json.tmp")] == []


def test_plan_follows_the_record() -> None:
    assert plan_rollout((1, 2), None).stable is None  # no record yet: serve as before
    idle = RolloutState(stable=1)
    assert plan_rollout((1, 2, 3), idle) == plan_rollout(
        (1, 2, 3), idle.replace(status="running", candidate=2, step=0)
    )
    assert plan_rollout((1, 2, 3), idle).candidate == 3  # the newest READY version is the candidate
    assert plan_rollout((1,), idle).candidate is None
    stamp = (1, 2, 3)
    rolled = idle.replace(candidate=3, status="rolled_back", candidate_stamp=stamp)
    plan = plan_rollout((1, 2, 3), rolled, lambda v: stamp)
    assert (plan.stable, plan.candidate, plan.blocked) == (1, 2, 3)  # 3 is blocked; 2 is next in line
    plan = plan_rollout((1, 3), rolled, lambda v: (9, 9, 9))
    assert (plan.candidate, plan.blocked) == (3, None)  # its files changed: tried again
    assert plan_rollout((2, 3), idle).stable is None  # the stable version is gone: serve as before


def _registry(tmp_path: Path, toml: str, versions: int) -> Path:
    root = tmp_path / "registry"
    (root / "m").mkdir(parents=True)
    (root / "m" / "model.toml").write_text(toml)
    source = tmp_path / "c.onnx"
    onnx.save(classifier(), source)
    for _ in range(versions):
        publish(root, "m", source)
    return root


def test_version_policy_serves_stable_and_candidate(tmp_path: Path) -> None:
    root = _registry(tmp_path, CANARY, 3)
    info = scan_model(root / "m")
    assert select_versions(info) == (3,) and default_version(info, (3,)) == 3  # noqa: PT018 (no record)
    replace_state(root / "m", None, RolloutState(stable=1))
    info = scan_model(root / "m")
    assert select_versions(info) == (1, 3)
    assert default_version(info, (1, 3)) == 1
    (root / "m" / "pin").write_text("2\n")  # a pin overrides the rollout
    info = scan_model(root / "m")
    assert info.rollout_plan is None and default_version(info, select_versions(info)) == 2  # noqa: PT018


def test_rollout_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _registry(tmp_path, CANARY, 2)
    reg = ["--registry", str(root)]
    assert cli(["rollout", "status", *reg, "m", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "none" and doc["mode"] == "canary" and doc["steps"] == [10, 50, 100]  # noqa: PT018
    assert cli(["rollout", "promote", *reg, "m"]) == 2
    assert "no rollout is running" in capsys.readouterr().err
    running = RolloutState(stable=1).replace(candidate=2, step=1, status="running")
    replace_state(root / "m", None, running)
    assert cli(["rollout", "status", *reg, "m"]) == 0
    out = capsys.readouterr().out
    assert "status: running" in out and "percent: 50.0" in out  # noqa: PT018
    assert cli(["rollout", "abort", *reg, "m"]) == 0
    assert capsys.readouterr().out == "m: aborted (stable 1, candidate 2)\n"
    aborted = read_state(root / "m")
    assert aborted is not None and aborted.candidate_stamp is not None  # noqa: PT018
    assert scan_model(root / "m").rollout_plan.blocked == 2  # type: ignore[union-attr]
    assert cli(["rollout", "retry", *reg, "m"]) == 0
    capsys.readouterr()
    assert scan_model(root / "m").rollout_plan.candidate == 2  # type: ignore[union-attr]
    replace_state(root / "m", read_state(root / "m"), running.replace())
    assert cli(["rollout", "promote", *reg, "m"]) == 0
    promoted = read_state(root / "m")
    assert promoted is not None and (promoted.stable, promoted.status) == (2, "promoted")  # noqa: PT018
    assert cli(["rollout", "retry", *reg, "m"]) == 2
    assert cli(["rollout", "status", *reg, "nope"]) == 2
    assert cli(["rollout", "status", *reg, "../m"]) == 2


def test_serving_default_and_rollback_start_from_the_stable_version_during_a_rollout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _registry(tmp_path, CANARY, 3)
    running = RolloutState(stable=2).replace(candidate=3, step=0, status="running")
    replace_state(root / "m", None, running)
    found = serving_default(root, "m")
    assert (found.version, found.source) == (2, "policy")  # not the candidate, which has only its share
    assert cli(["rollback", "--registry", str(root), "m"]) == 0
    assert capsys.readouterr().out == "1\n"  # below what is served by default, not the stable version itself
