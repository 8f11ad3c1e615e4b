"""Shadow copies batched per event-loop turn, on a real ModelTable (onnxruntime sessions) and the real
rollout controller: the copies made in one turn reach the candidate as one batch and are still judged
copy by copy; a group the candidate fails is re-sent copy by copy, so only the failing copy counts; the
in-flight cap counts groups; and the grouping respects batch keys and the target's batch limit."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from prometheus_client import CollectorRegistry

from gateway.models import ModelTable
from gateway.rollout import RolloutController
from gateway.rollout_copies import Copy, group_copies, run_groups
from gateway.rollout_live import SHADOW_ID_SUFFIX, LiveRollout
from gateway.rollout_metrics import RolloutMetrics
from gateway.sample_offers import SampleOffers
from gateway.sampler import Sampler
from gateway.validate import DecodedRequest
from gateway.version import LoadedVersion
from registry.publish import publish
from tests.rollout_models import FEATURES, classifier

TOML = """\
[rollout]
mode = "shadow"
steps = [100]
step_seconds = 3600.0
min_requests = 1000000000
drift_gate = false
shadow_max_inflight = {cap}
mirror_window_ms = {window}
"""
OUTPUTS = ("logits", "probs")


@dataclass
class Rig:
    table: ModelTable
    live: LiveRollout
    stable: LoadedVersion
    candidate: LoadedVersion
    metrics: RolloutMetrics

    def mirror(self, x: np.ndarray, request_id: str = "", sample: Any = None) -> None:
        """Mirrors one request of rows ``x``, answered by the stable version as the data plane would."""
        feeds = {"x": x}
        outputs = self.stable.runner.run_sync(0, feeds, OUTPUTS)
        decoded = DecodedRequest(feeds, len(x), OUTPUTS)
        self.live.mirror(self.table, self.metrics, self.stable, decoded, outputs, request_id, sample)

    def shadow(self, result: str) -> float:
        value = self.metrics.shadow.labels("m", "2", result)._value.get()
        return float(value)

    def batches(self) -> int:
        """Batches the candidate's profile has observed (warm-up included)."""
        return sum(point.observations for point in self.candidate.batcher.profiles[0].snapshot())


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[Any]:
    made: list[tuple[RolloutController, ModelTable]] = []

    async def make(candidate: onnx.ModelProto, cap: int = 4, window: float = 0.0) -> Rig:
        root = tmp_path / "registry"
        (root / "m").mkdir(parents=True)
        (root / "m" / "model.toml").write_text(TOML.format(cap=cap, window=window))
        for version, model in enumerate((classifier(), candidate), start=1):
            onnx.save(model, tmp_path / f"v{version}.onnx")
        publish(root, "m", tmp_path / "v1.onnx")
        table = ModelTable(root)
        await table.load_all()
        metrics = RolloutMetrics(CollectorRegistry())
        controller = RolloutController(table, metrics)
        made.append((controller, table))
        await controller.tick()  # the baseline: version 1 serves
        publish(root, "m", tmp_path / "v2.onnx")
        await table.load_model("m")
        await controller.tick()
        live = controller.live("m")
        assert live is not None, "the shadow rollout did not start"
        return Rig(table, live, table.resolve("m", "1"), table.resolve("m", "2"), metrics)

    yield make
    for controller, table in made:
        await controller.stop()
        await table.close()


def rows(n: int, first: float = 0.0) -> np.ndarray:
    x = np.full((n, FEATURES), 0.1, dtype=np.float32)
    x[:, 0] = first
    return x


async def test_copies_of_one_loop_turn_reach_the_candidate_as_one_batch_judged_per_copy(make_rig) -> None:
    rig = await make_rig(classifier())
    before = rig.batches()
    for n in (1, 2, 1, 3, 1):  # no await between them: one loop turn, as one stable batch's answers are
        rig.mirror(rows(n))
    await rig.live.settle()
    assert rig.batches() - before == 1  # 8 rows in one candidate batch
    window = rig.live.window
    assert (window.candidate.requests, window.candidate.errors) == (5, 0)
    assert (window.compared, window.rows, window.agreeing) == (5, 8, 8)
    assert (rig.shadow("agree"), rig.shadow("disagree"), rig.shadow("error")) == (5.0, 0.0, 0.0)
    for n in (1, 1):  # separate turns: separate groups
        rig.mirror(rows(n))
        await rig.live.settle()
    assert rig.batches() - before == 3


async def test_a_group_the_candidate_fails_is_resent_copy_by_copy(make_rig) -> None:
    rig = await make_rig(classifier(failing_above=1.0))
    for first in (0.0, 5.0, 0.0, 0.0):  # the candidate fails any batch holding the 5.0 row
        rig.mirror(rows(2, first))
    await rig.live.settle()
    window = rig.live.window
    assert (window.candidate.requests, window.candidate.errors) == (4, 1)
    assert (window.compared, window.rows, window.agreeing) == (3, 6, 6)
    assert (rig.shadow("agree"), rig.shadow("error")) == (3.0, 1.0)


async def test_the_inflight_cap_counts_groups_and_drops_copies_past_it(make_rig) -> None:
    rig = await make_rig(classifier(), cap=1)
    rig.mirror(rows(1))
    rig.mirror(rows(1))  # same turn: joins the pending group, whatever the cap
    await asyncio.sleep(0)  # the end of the turn: the group is sent
    rig.mirror(rows(1))  # a second group would pass the cap
    assert rig.shadow("dropped") == 1.0
    await rig.live.settle()
    rig.mirror(rows(1))  # the first group is done: room again
    await rig.live.settle()
    assert (rig.live.window.candidate.requests, rig.shadow("agree"), rig.shadow("dropped")) == (3, 3.0, 1.0)


class FakeTimer:
    """``call_later`` for LiveRollout: remembers the window's send; the test ends the window."""

    def __init__(self) -> None:
        self.scheduled: list[tuple[float, Any]] = []
        self.cancelled = 0

    def __call__(self, delay: float, send: Any) -> FakeTimer:
        self.scheduled.append((delay, send))
        return self

    def cancel(self) -> None:
        self.cancelled += 1

    def end_window(self) -> None:
        _, send = self.scheduled.pop()
        send()


async def test_a_mirror_window_gathers_copies_of_several_turns_into_one_group(make_rig) -> None:
    rig = await make_rig(classifier(), cap=1, window=25.0)
    timer = FakeTimer()
    rig.live.call_later = timer
    before = rig.batches()
    rig.mirror(rows(1))
    await asyncio.sleep(0)
    rig.mirror(rows(2))  # a later turn, same window: joins the group (the cap counts groups)
    await asyncio.sleep(0)
    rig.mirror(rows(1))
    assert [delay for delay, _ in timer.scheduled] == [0.025]
    assert (rig.live.window.candidate.requests, rig.shadow("dropped"), rig.batches()) == (0, 0.0, before)
    timer.end_window()
    await rig.live.settle()
    assert rig.batches() == before + 1  # one stacked request of 4 rows
    assert (rig.live.window.candidate.requests, rig.shadow("agree"), rig.shadow("dropped")) == (3, 3.0, 0.0)
    rig.mirror(rows(1))  # a new window
    await rig.live.settle()  # sends it at once, without waiting for the window
    assert (len(timer.scheduled), timer.cancelled, rig.shadow("agree")) == (1, 1, 4.0)


def record_runs(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """The candidate's session runs from now on, as (thread name, rows); they still run."""
    runs: list[tuple[str, int]] = []
    run_sync = rig.candidate.runner.run_sync

    def spy(instance: int, feeds: Any, names: Any) -> Any:
        runs.append((threading.current_thread().name, len(feeds["x"])))
        return run_sync(instance, feeds, names)

    monkeypatch.setattr(rig.candidate.runner, "run_sync", spy)
    return runs


async def test_a_window_runs_on_the_candidates_executor_thread_and_counts_in_its_batches(
    make_rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = await make_rig(classifier())
    runs = record_runs(rig, monkeypatch)
    stats = rig.candidate.stats
    rows_before, batches_before = stats.inference_count, stats.execution_count
    for n in (2, 3):
        rig.mirror(rows(n))
    await rig.live.settle()
    # One stacked run of 5 rows, off the event loop (the loop's thread is this test's).
    ((thread, stacked),) = runs
    assert stacked == 5
    assert thread != threading.current_thread().name
    assert thread.startswith("ort-")
    assert (stats.inference_count - rows_before, stats.execution_count - batches_before) == (5, 1)
    window = rig.live.window
    assert (window.compared, window.rows, window.agreeing) == (2, 5, 5)
    # Latency like for like: each copy pairs the candidate's run with the stable version's typical
    # latency for a batch of the same size (bucket 8 holds the 5 stacked rows).
    assert (window.candidate.requests, window.paired.requests) == (2, 2)
    assert window.paired.p99() == rig.stable.batcher.profiles[0].typical(5)
    assert window.candidate.p99() > 0


async def test_a_window_whose_version_closed_counts_every_copy_as_an_error(make_rig) -> None:
    rig = await make_rig(classifier())
    rig.candidate.runner.close()  # its sessions are gone: the window's hop is refused
    rig.mirror(rows(1))
    rig.mirror(rows(2))
    await rig.live.settle()
    assert (rig.live.window.candidate.requests, rig.live.window.candidate.errors) == (2, 2)
    assert (rig.shadow("error"), rig.shadow("agree")) == (2.0, 0.0)


async def test_groups_left_once_the_rollout_ended_are_not_run(
    make_rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = await make_rig(classifier())
    runs = record_runs(rig, monkeypatch)
    groups = [[Copy({"x": rows(2)}, 2, None)], [Copy({"x": rows(3)}, 3, None)]]
    calls = iter([False, True])  # ends after the first group
    results = run_groups(rig.candidate, 0, groups, OUTPUTS, None, lambda: next(calls))
    assert [rows for _, rows in runs] == [2]
    assert [type(o).__name__ for r in results for o in r.outcomes] == ["list", "UnavailableError"]
    assert results[1].runs == []


def test_groups_keep_batch_keys_apart_and_respect_the_row_limit() -> None:
    def copy(n: int, width: int = FEATURES) -> Copy:
        return Copy({"x": np.zeros((n, width), np.float32)}, n, None)

    a, b, c, d = copy(3), copy(2), copy(2, width=5), copy(4)
    # groups in the order they were opened: [a, b] (key 1), [c] (key 2), [d] (key 1, past the limit)
    assert [[x.rows for x in g] for g in group_copies([a, b, c, d], 5)] == [[3, 2], [2], [4]]
    assert group_copies([a, c], 0) == [[a], [c]]  # a model that does not batch: one copy per request
    big = copy(7)
    assert group_copies([big, b], 5) == [
        [big],
        [b],
    ]  # a copy over the limit goes alone (the target judges it)


async def test_shadow_answers_reach_sampling_under_the_candidate_with_a_shadow_id(make_rig) -> None:
    """Through the data plane's hook (SampleOffers.shadow) and a real Sampler: the candidate's answer to
    each copy is offered under version 2, with the copy's rows of every output, as ``<id>#shadow``."""
    rig = await make_rig(classifier())
    sampler = Sampler(rate_override=1.0)
    offers = SampleOffers(sampler)
    for ident, n in (("a", 1), ("b", 2), ("c", 1)):
        rig.mirror(rows(n), ident, offers.shadow)
    await rig.live.settle()
    samples = sampler.take(100, 1 << 30)
    assert [(s.version, s.request_id) for s in samples] == [("2", f"{i}{SHADOW_ID_SUFFIX}") for i in "abc"]
    for sample, n in zip(samples, (1, 2, 1), strict=True):
        expected = rig.candidate.runner.run_sync(0, {"x": rows(n)}, OUTPUTS)
        assert [(name, datatype) for name, datatype, _ in sample.outputs] == [(n, "FP32") for n in OUTPUTS]
        for (_, _, got), want in zip(sample.outputs, expected, strict=True):
            np.testing.assert_array_equal(got, want)
