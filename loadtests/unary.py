"""Unary ModelInfer load on a raw gRPC channel: closed loop (fixed concurrency) and open loop (a schedule).

Contracts:

* Requests are the parent's pre-serialized bytes, sent with the generic
  ``channel.unary_unary(MODEL_INFER)`` and no serializers, and responses are not parsed: per request the
  client only starts a call, takes timestamps and calls :meth:`Recorder.add`.
* The channel is synchronous gRPC: ``future()`` calls whose completion callbacks run on the channel's own
  thread. That keeps completion timestamps free of event-loop scheduling, and the open-loop sender sleeps
  with ``time.sleep`` (tens of µs late) instead of an event loop's millisecond timer.
* Closed loop: ``concurrency`` chains; each completion starts the chain's next request at once. A request's
  intended time is its send time. Chains stop at ``end_ns`` or when the measured quota is used up.
* Open loop: one sender thread walks :func:`loadtests.schedule.arrivals` and never waits for responses.
  If ``max_inflight`` requests are outstanding, the due request is recorded as CLIENT_DROPPED instead of
  being sent late, so a stalled server is never hidden.
* Both wait for outstanding requests until ``deadline_s + drain_s`` after the last send; then the channel
  is closed and requests still open are recorded as CLIENT_DRAIN_TIMEOUT.
"""

from __future__ import annotations

import threading
import time
from functools import partial
from typing import Any

import grpc

from loadtests.recorder import Recorder
from loadtests.schedule import arrivals
from loadtests.spec import WorkerTask
from loadtests.status import CLIENT_DRAIN_TIMEOUT, CLIENT_DROPPED, code_of

__all__ = ["MODEL_INFER", "run_unary"]

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
_CANCELLED = code_of(grpc.StatusCode.CANCELLED)


class _Outstanding:
    """Requests in flight and live closed-loop chains, with a condition to wait for both to reach zero.

    The closed-loop quota of measured requests lives here too, so chains on any thread share it.
    """

    def __init__(self, quota: int | None) -> None:
        self.count = 0
        self.chains = 0
        self.left = quota
        self.expired = False
        self.cond = threading.Condition()

    def take(self, now: int, measure_ns: int) -> bool:
        """Counts a closed-loop request about to be sent; False when the quota is used up."""
        with self.cond:
            if now >= measure_ns and self.left is not None:
                if self.left <= 0:
                    return False
                self.left -= 1
            self.count += 1
            return True

    def begin(self) -> None:
        """Counts an open-loop request about to be sent (the schedule already applied the quota)."""
        with self.cond:
            self.count += 1

    def release(self) -> None:
        with self.cond:
            self.count -= 1
            self.cond.notify_all()

    def chain_done(self) -> None:
        with self.cond:
            self.chains -= 1
            self.cond.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.count == 0 and self.chains == 0, timeout=max(timeout_s, 0))


class _UnaryLoad:
    def __init__(self, channel: grpc.Channel, task: WorkerTask, recorder: Recorder) -> None:
        self.task = task
        self.spec = task.spec
        self.recorder = recorder
        self.call = channel.unary_unary(MODEL_INFER, request_serializer=None, response_deserializer=None)
        concurrency, quota = self.spec.share(task.process, task.processes)
        self.concurrency = concurrency
        self.outstanding = _Outstanding(quota)
        self.payloads = self.spec.payloads

    def finished(self, intended: int, sent: int, future: Any) -> None:
        done = time.perf_counter_ns()
        code = code_of(future.code())
        if code == _CANCELLED and self.outstanding.expired:
            code = CLIENT_DRAIN_TIMEOUT
        self.recorder.add(intended, sent, done, code)
        self.outstanding.release()

    # -- closed loop ---------------------------------------------------------------------------------
    def chain(self, index: int) -> None:
        """Sends the chain's next requests; re-entered from completion callbacks (see ``_ChainStep``)."""
        me = threading.get_ident()
        while True:
            now = time.perf_counter_ns()
            if now >= self.task.end_ns or not self.outstanding.take(now, self.task.measure_ns):
                self.outstanding.chain_done()
                return
            future = self.call.future(self.payloads[index % len(self.payloads)], timeout=self.spec.deadline_s)
            step = _ChainStep(self, index, now, me)
            future.add_done_callback(step)
            step.starting = False
            if not step.again:
                return
            index += self.concurrency

    # -- open loop -----------------------------------------------------------------------------------
    def send_schedule(self) -> None:
        spec, task = self.spec, self.task
        _, quota = spec.share(task.process, task.processes)
        limit = spec.max_inflight
        n = len(self.payloads)
        i = task.process
        for times in arrivals(
            rate=spec.rate,
            start_ns=task.start_ns,
            end_ns=task.end_ns,
            measure_ns=task.measure_ns,
            quota=quota,
            poisson=spec.poisson,
            process=task.process,
            processes=task.processes,
            seed=spec.seed,
        ):
            for intended in times.tolist():
                delay = intended - time.perf_counter_ns()
                if delay > 0:
                    time.sleep(delay / 1e9)
                sent = time.perf_counter_ns()
                if self.outstanding.count >= limit:
                    self.recorder.add(intended, sent, sent, CLIENT_DROPPED)
                    continue
                self.outstanding.begin()
                future = self.call.future(self.payloads[i % n], timeout=spec.deadline_s)
                future.add_done_callback(partial(self.finished, intended, sent))
                i += task.processes


class _ChainStep:
    """Completion callback of one closed-loop request; restarts its chain without unbounded recursion.

    A callback that gRPC runs synchronously inside ``add_done_callback`` (the call already finished) only
    sets ``again``, and :meth:`_UnaryLoad.chain` loops; a callback on another thread restarts the chain.
    """

    __slots__ = ("again", "index", "intended", "load", "starting", "thread")

    def __init__(self, load: _UnaryLoad, index: int, intended: int, thread: int) -> None:
        self.load, self.index, self.intended, self.thread = load, index, intended, thread
        self.starting = True
        self.again = False

    def __call__(self, future: Any) -> None:
        self.load.finished(self.intended, self.intended, future)
        if self.starting and threading.get_ident() == self.thread:
            self.again = True
        else:
            self.load.chain(self.index + self.load.concurrency)


def run_unary(channel: grpc.Channel, task: WorkerTask, recorder: Recorder) -> None:
    """Runs this process's share of a unary step, returning once every request is recorded."""
    load = _UnaryLoad(channel, task, recorder)
    _sleep_until(task.start_ns)
    grace_s = task.spec.deadline_s + task.spec.drain_s
    if task.spec.mode == "closed":
        load.outstanding.chains = load.concurrency
        for index in range(load.concurrency):
            load.chain(task.process + index * task.processes)
        grace_s += max(task.end_ns - time.perf_counter_ns(), 0) / 1e9
    else:
        load.send_schedule()
    if not load.outstanding.wait_idle(grace_s):
        load.outstanding.expired = True
        channel.close()
        load.outstanding.wait_idle(5.0)


def _sleep_until(deadline_ns: int) -> None:
    delay = deadline_ns - time.perf_counter_ns()
    if delay > 0:
        time.sleep(delay / 1e9)
