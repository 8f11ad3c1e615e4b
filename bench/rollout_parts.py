"""The measuring half of section ``rollout``: the registry it serves, and the publish-and-watch hook that
times how long a bad candidate lives before its rollback.

Contracts:

* :func:`build_registry` publishes ``mlp-plain`` (the bench MLP, no rollout), ``mlp-10`` and ``mlp-100``
  (the same, ``[rollout] mode = "shadow"`` held at a first step of 10 % or 100 % for the whole run:
  ``min_requests`` is never reached, so the gates never end it) and one
  ``cls-<kind>`` model per bad kind (the classifier of :mod:`tests.rollout_models`, ``mode = "canary"``),
  each with version 1 only; the candidates are published during the run.
* :class:`Watcher` is a :func:`loadtests.run.run_load` progress hook: ``at_s`` seconds into the measured
  part of the run it publishes the candidate, then polls ``rollout.json`` every 10 ms (monotonic clock of
  this process) and records when the rollout started (the candidate loaded and got traffic) and when it
  ended, with the final record. Times are seconds from the publish call's return.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from bench.kit import add_model
from loadtests.config import LoadConfig
from loadtests.pool import START_LEAD_S
from registry.publish import publish
from registry.rollout import read_state

__all__ = ["KINDS", "SHADOWED", "SHADOW_TOML", "Watcher", "build_registry", "candidate", "reference_rows"]

#: Bad candidate kinds, in report order; "drifting" needs the monitor.
KINDS = ("slower", "erroring", "disagreeing", "drifting")

#: The shadowed copies of the bench MLP and their steps (each held at its first step for the run).
SHADOWED = {"mlp-10": "[10, 100]", "mlp-100": "[100]"}
#: ``{steps}``: one of :data:`SHADOWED`'s values.
SHADOW_TOML = """\
[batching]
max_batch_size = 64

[rollout]
mode = "shadow"
steps = {steps}
step_seconds = 3600.0
min_requests = 1000000000
drift_gate = false
"""

CANARY_TOML = """\
[batching]
max_batch_size = 64
latency_budget_ms = 1000.0

[sampling]
rate = 1.0

[drift]
window_rows = 200
window_seconds = 3600.0
consecutive = 1

[rollout]
mode = "canary"
steps = [5, 25, 50, 100]
step_seconds = 10.0
min_requests = 50
max_error_ratio = 0.01
max_p99_ratio = 3.0
min_agreement = 0.95
"""


def reference_rows(path: Path, mean: float, clip0: float | None = None) -> Path:
    """Writes 2000 reference rows of N(``mean``, 1) for the classifier (``input:x``) to ``path``; with
    ``clip0``, column 0 is clipped to at most that (data on which the erroring candidate never fails)."""
    from tests.rollout_models import FEATURES

    rows = np.random.default_rng(7).normal(mean, 1.0, size=(2000, FEATURES)).astype(np.float32)
    if clip0 is not None:
        rows[:, 0] = np.minimum(rows[:, 0], clip0)
    np.savez(path, allow_pickle=False, **{"input:x": rows})
    return path


def candidate(kind: str) -> tuple[onnx.ModelProto, float, float | None]:
    """The bad candidate of ``kind``, the mean of its reference rows (traffic is N(0, 1)) and the clip of
    their column 0 (the erroring candidate's reference, which warm-up runs, holds no failing row)."""
    from tests.rollout_models import classifier

    models: dict[str, tuple[onnx.ModelProto, float, float | None]] = {
        "slower": (classifier(heavy=160), 0.0, None),
        "erroring": (classifier(failing_above=1.0), 0.0, 0.9),
        "disagreeing": (classifier(shuffled=True), 0.0, None),
        "drifting": (classifier(), 4.0, None),
    }
    return models[kind]


def build_registry(registry: Path, staging: Path) -> None:
    from tests.rollout_models import classifier

    add_model(registry, "mlp-plain", "mlp", "[batching]\nmax_batch_size = 64\n")
    for name, steps in SHADOWED.items():
        add_model(registry, name, "mlp", SHADOW_TOML.format(steps=steps))
    staging.mkdir(parents=True, exist_ok=True)
    stable = staging / "cls-stable.onnx"
    onnx.save(classifier(), stable)
    reference = reference_rows(staging / "cls-reference.npz", 0.0)
    for kind in KINDS:
        (registry / f"cls-{kind}").mkdir(parents=True, exist_ok=True)
        (registry / f"cls-{kind}" / "model.toml").write_text(CANARY_TOML)
        publish(registry, f"cls-{kind}", stable, reference=reference, notes="rollout benchmark stable")


class Watcher:
    """Publishes ``publish_one()`` ``at_s`` s into the measured part of the run, then follows the model's
    rollout.json until ``done(status)`` (module docstring)."""

    def __init__(
        self, model_dir: Path, publish_one: Callable[[], None], at_s: float, warmup_s: float, until: str
    ) -> None:
        self.model_dir = model_dir
        self.publish_one = publish_one
        self.at_s = at_s
        self.warmup_s = warmup_s
        self.until = until
        self.times: dict[str, Any] = {}
        self.thread: threading.Thread | None = None

    def __call__(self, index: int, config: LoadConfig, level: float) -> Callable[[float, int], None] | None:
        if index == 0:
            start = time.monotonic() + START_LEAD_S + self.warmup_s + self.at_s
            self.thread = threading.Thread(target=self._run, args=(start, config.duration_s), daemon=True)
            self.thread.start()
        return None

    def _run(self, start: float, duration_s: float) -> None:
        time.sleep(max(0.0, start - time.monotonic()))
        self.publish_one()
        published = time.monotonic()
        self.times["publish_s"] = round(published - start, 3)
        end = start + duration_s
        while time.monotonic() < end:
            state = read_state(self.model_dir)
            now = round(time.monotonic() - published, 3)
            if state is not None and state.status == "running" and "started_s" not in self.times:
                self.times["started_s"] = now
            if state is not None and state.status == self.until:
                self.times["ended_s"] = now
                self.times["state"] = {
                    "status": state.status, "reason": state.reason, "figures": dict(state.figures),
                    "step": state.figures.get("step"),
                }  # fmt: skip
                return
            time.sleep(0.01)
