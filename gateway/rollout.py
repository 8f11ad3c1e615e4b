"""The rollout controller: follows each model's ``rollout.json``, judges the gates, writes transitions.

Contracts (docs/registry.md "Safe rollout"):
- The registry file is the state (registry/rollout.py). Every ``tick_s`` the controller compares each
  model's last scan with what it runs: it writes the baseline record of a staged model that has none,
  starts a rollout at step 0 when the plan names a candidate that is loaded, adopts a step another worker
  (or a restart) left in the file, and ends what the file ended (promote or abort by an operator).
- It judges each running step with :func:`gateway.rollout_window.judge` on the time of its ``clock``
  (monotonic), so the verdict logic never reads wall time. A failed gate stops the candidate's traffic
  in this process at once (in-flight requests finish on it), then records the rollback with the reason,
  the figures and the candidate's file stamp, and reloads the model so the candidate is retired. Passing
  the last step records the promotion and reloads (the candidate becomes the default).
- Writes are compare-and-replace: of several workers only one records a transition; the others adopt it
  from the file. A scan older than the revision this process wrote is ignored.
- Every start, step, promotion and rollback is counted; promotions and rollbacks also write one
  structured log line and one webhook event (:mod:`gateway.rollout_events`), by the process that wrote
  them. An operator's promote or abort (``infergate-registry rollout``) is announced by the processes
  with ``announce_observed`` (worker 0, or the only process).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from gateway.background import cancel_and_wait
from gateway.models import ModelTable
from gateway.rollout_events import RolloutNotifier
from gateway.rollout_live import LiveRollout
from gateway.rollout_metrics import RolloutMetrics
from gateway.rollout_window import GATES, Verdict, judge
from registry.layout import ModelInfo
from registry.rollout import RolloutState, candidate_stamp, read_state, replace_state, utc_now

__all__ = ["DriftProbe", "RolloutController"]

log = logging.getLogger(__name__)

#: ``probe(model, version, max_psi)``: the monitor's drift verdict for a version (None: unknown).
DriftProbe = Callable[[str, int, float], Awaitable[bool | None]]


class RolloutController:
    """Owns the live rollouts of one gateway process. :meth:`start` / :meth:`stop` its background task."""

    def __init__(
        self,
        table: ModelTable,
        metrics: RolloutMetrics | None = None,
        *,
        tick_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        notifier: RolloutNotifier | None = None,
        drift: DriftProbe | None = None,
        announce_observed: bool = True,
        reload: bool = True,
    ) -> None:
        self.table = table
        self.metrics = metrics
        self.tick_s = tick_s
        self.clock = clock
        self.notifier = notifier
        self.drift = drift
        #: Announce transitions this process only observed (an operator's promote or abort); with several
        #: workers only worker 0 does, so each shows once.
        self.announce_observed = announce_observed
        #: Reload the model after each write (so the served versions follow at once); off when nothing
        #: but Repository RPCs may change what serves (``--model-control`` explicit or none, or no polling).
        self.reload = reload
        self._live: dict[str, LiveRollout] = {}
        self._revision: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def live(self, name: str) -> LiveRollout | None:
        """The model's running rollout in this process, or None."""
        return self._live.get(name)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="rollout-controller")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        for name in list(self._live):
            await self._end(name)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                await self.tick()
            except Exception:
                log.exception("rollout controller: tick failed; retrying")

    async def tick(self) -> None:
        """One pass: follow the registry, then judge every running step."""
        names = self.table.model_names()
        for name in set(self._live) - set(names):
            await self._end(name)  # the model left the registry
        for name in names:
            await self.sync(name)
            live = self._live.get(name)
            if live is not None:
                await self._judge(live)

    async def sync(self, name: str) -> None:
        """Brings this process's view of ``name`` in line with its last scan (module docstring)."""
        info = self.table.model_info(name)
        plan = info.rollout_plan if info is not None else None
        if info is None or plan is None:
            await self._end(name)
            return
        state = info.rollout
        if state is not None and state.revision < self._revision.get(name, 0):
            return  # a scan from before our own write
        default, loaded = self.table.serving(name)
        if plan.stable is None:
            await self._end(name)
            if default is not None:
                baseline = RolloutState(stable=default).replace(reason=f"version {default} serves")
                if state is not None:
                    baseline = state.replace(stable=default, candidate=None, step=-1, status="idle")
                await self._write(info, state, baseline)
            return
        candidate = plan.candidate
        live = self._live.get(name)
        if candidate is None or state is None or candidate not in loaded or plan.stable not in loaded:
            if live is not None:
                await self._end(name, announce=state)
            return
        if state.status == "running" and state.candidate == candidate:
            if live is not None and live.candidate == candidate:
                if state.step != live.step:
                    live.set_step(state.step, state, self.clock())
                    self._show(live)
                live.state = state
                return
            await self._end(name)
            self._begin(info, state, plan.stable, candidate)
            return
        started = state.replace(
            stable=plan.stable,
            candidate=candidate,
            step=0,
            status="running",
            step_started=utc_now(),
            reason="",
            figures={},
            candidate_stamp=None,
        )
        await self._end(name)
        if await self._write(info, state, started):
            self._begin(info, started, plan.stable, candidate)
            self._event(name, "started")
            log.info(
                "rollout %s: version %d started (%s) against %d",
                name,
                candidate,
                info.config.rollout.mode,
                plan.stable,
            )

    def _begin(self, info: ModelInfo, state: RolloutState, stable: int, candidate: int) -> None:
        live = LiveRollout(
            model=info.name,
            stable=stable,
            candidate=candidate,
            step=min(state.step, len(info.config.rollout.steps) - 1),
            config=info.config.rollout,
            state=state,
            started=self.clock(),
        )
        live.choose_output(self.table.resolve(info.name, str(candidate)))
        self._live[info.name] = live
        self._show(live)

    async def _judge(self, live: LiveRollout) -> None:
        drift = None
        if live.config.drift_gate and self.drift is not None:
            drift = await self.drift(live.model, live.candidate, live.config.max_drift_psi)
        verdict = judge(
            live.window,
            live.config,
            self.clock() - live.started,
            comparable=bool(live.kind),
            drift=drift,
        )
        if verdict.action == "hold" or self._live.get(live.model) is not live:
            return
        info = self.table.model_info(live.model)
        if info is None:
            return
        self._count_gates(live.model, verdict)
        figures = {"step": live.step, "percent": live.percent, **verdict.figures}
        if verdict.action == "fail":
            await self._roll_back(info, live, verdict, figures)
        elif live.step + 1 < len(live.config.steps):
            nxt = live.state.replace(step=live.step + 1, step_started=utc_now(), figures=figures)
            if await self._write(info, live.state, nxt):
                live.set_step(live.step + 1, nxt, self.clock())
                self._show(live)
                self._event(live.model, "step")
        else:
            done = live.state.replace(
                stable=live.candidate, step=-1, status="promoted", reason="passed every step", figures=figures
            )
            if await self._write(info, live.state, done):
                await self._end(live.model)
                self._announce(live.model, "promoted", done, "")

    async def _roll_back(
        self, info: ModelInfo, live: LiveRollout, verdict: Verdict, figures: dict[str, object]
    ) -> None:
        # Traffic first: from here on this process sends the candidate nothing new.
        await self._end(live.model)
        reason = f"gate {verdict.gate} failed at step {live.step} ({live.percent:g}%)"
        stamp = await asyncio.to_thread(candidate_stamp, info.path, live.candidate)
        expected: RolloutState | None = live.state
        for _ in range(3):
            if expected is None or expected.status != "running" or expected.candidate != live.candidate:
                return  # someone else ended this rollout already
            done = expected.replace(
                step=-1, status="rolled_back", reason=reason, figures={"gate": verdict.gate, **figures},
                candidate_stamp=stamp,
            )  # fmt: skip
            if await self._write(info, expected, done):
                self._announce(live.model, "rolled_back", done, verdict.gate)
                return
            expected = await asyncio.to_thread(read_state, info.path)

    async def _write(self, info: ModelInfo, expected: RolloutState | None, new: RolloutState) -> bool:
        wrote = await asyncio.to_thread(replace_state, info.path, expected, new)
        if wrote:
            self._revision[info.name] = new.revision
            if self.reload:
                # Rescan now (not at the next poll): the served versions and what RepositoryIndex and
                # ModelMetadata show follow the file at once.
                await self.table.load_model(info.name)
        return wrote

    async def _end(self, name: str, *, announce: RolloutState | None = None) -> None:
        live = self._live.pop(name, None)
        if live is None:
            return
        if self.metrics is not None:
            self.metrics.show_step(name, live.candidate, -1, 0.0)
        if (
            announce is not None
            and self.announce_observed
            and announce.actor == "operator"
            and announce.status in ("aborted", "promoted")
            and announce.candidate == live.candidate
        ):
            self._announce(name, announce.status, announce, "")
        await live.close()

    def _show(self, live: LiveRollout) -> None:
        if self.metrics is not None:
            self.metrics.show_step(live.model, live.candidate, live.step, live.percent / 100)

    def _event(self, name: str, event: str) -> None:
        if self.metrics is not None:
            self.metrics.events.labels(name, event).inc()

    def _count_gates(self, name: str, verdict: Verdict) -> None:
        if self.metrics is not None:
            for gate in GATES:
                if gate in verdict.results:
                    self.metrics.gate.labels(name, gate, verdict.results[gate]).inc()

    def _announce(self, name: str, event: str, state: RolloutState, gate: str) -> None:
        self._event(name, event)
        if self.notifier is not None:
            self.notifier.emit(name, event, state, gate)
