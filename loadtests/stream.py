"""ModelStreamInfer load: one bidirectional stream per client process, closed or open loop.

Contracts:

* The stream is opened with the generic ``channel.stream_stream(MODEL_STREAM_INFER)`` and no serializers.
  Each request is the parent's pre-serialized bytes plus a precomputed ``id`` field (protobuf fields may
  be appended; the last ``id`` wins), so nothing is re-serialized. The id names a *slot*: responses may
  come back in any order and are matched to their slot's intended time. Responses are parsed only to read
  ``id`` and ``error_message`` (an error response is recorded as STREAM_ERROR).
* Closed loop: ``concurrency`` slots, each resent as soon as its response arrives. Open loop: up to
  ``max_inflight`` slots; a due request with no free slot is recorded as CLIENT_DROPPED.
* If the stream fails, requests in flight are recorded with its status, due requests are recorded with
  it too (nothing is silently skipped), and the step ends for this process. After ``deadline_s +
  drain_s`` past the last send the stream is cancelled; what is still open is CLIENT_DRAIN_TIMEOUT.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from typing import Any

import grpc

from loadtests.recorder import Recorder
from loadtests.schedule import arrivals
from loadtests.spec import WorkerTask
from loadtests.status import CLIENT_DRAIN_TIMEOUT, CLIENT_DROPPED, OK, STREAM_ERROR, code_of
from protos import inference_pb2 as pb
from protos.fields import field

__all__ = ["MODEL_STREAM_INFER", "id_field", "run_stream"]

MODEL_STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"


def id_field(text: str) -> bytes:
    """The encoded ``ModelInferRequest.id`` field (number 3, length-delimited) holding ``text``."""
    return field(3, text.encode())


class _StreamLoad:
    def __init__(self, channel: grpc.Channel, task: WorkerTask, recorder: Recorder) -> None:
        self.task, self.spec, self.recorder = task, task.spec, recorder
        concurrency, self.quota = self.spec.share(task.process, task.processes)
        self.slots = concurrency if self.spec.mode == "closed" else self.spec.max_inflight
        self.suffix = [id_field(str(slot)) for slot in range(self.slots)]
        self.intended = [0] * self.slots
        self.sent = [0] * self.slots
        self.free: collections.deque[int] = collections.deque(range(self.slots))
        self.requests: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.cond = threading.Condition()
        self.busy = 0
        self.live_chains = concurrency if self.spec.mode == "closed" else 0
        self.broken: int | None = None
        self.expired = False
        lifetime = (task.end_ns - time.perf_counter_ns()) / 1e9 + self.spec.deadline_s + self.spec.drain_s + 5
        method = channel.stream_stream(
            MODEL_STREAM_INFER, request_serializer=None, response_deserializer=None
        )
        self.call: Any = method(iter(self.requests.get, None), timeout=lifetime)
        self.reader = threading.Thread(target=self.read, name="stream-reader", daemon=True)

    def send(self, slot: int, intended: int) -> None:
        with self.cond:
            self.busy += 1
        self.intended[slot] = intended
        self.sent[slot] = time.perf_counter_ns()
        payload = self.spec.payloads[slot % len(self.spec.payloads)]
        self.requests.put(payload + self.suffix[slot])

    def complete(self, slot: int, code: int) -> None:
        intended = self.intended[slot]
        self.intended[slot] = 0
        self.recorder.add(intended, self.sent[slot], time.perf_counter_ns(), code)
        with self.cond:
            self.busy -= 1
            self.cond.notify_all()

    def next_closed(self, slot: int) -> None:
        """Resends ``slot`` (closed loop) unless the step is over."""
        now = time.perf_counter_ns()
        stop = self.broken is not None or now >= self.task.end_ns
        if not stop and now >= self.task.measure_ns and self.quota is not None:
            with self.cond:
                stop = self.quota <= 0
                self.quota -= 0 if stop else 1
        if stop:
            with self.cond:
                self.live_chains -= 1
                self.cond.notify_all()
            return
        self.send(slot, now)

    def read(self) -> None:
        try:
            for raw in self.call:
                response = pb.ModelStreamInferResponse.FromString(raw)
                slot = int(response.infer_response.id)
                self.complete(slot, STREAM_ERROR if response.error_message else OK)
                if self.spec.mode == "closed":
                    self.next_closed(slot)
                else:
                    self.free.append(slot)
        except grpc.RpcError as exc:
            status = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            self.broken = CLIENT_DRAIN_TIMEOUT if self.expired else code_of(status)
            for slot in range(self.slots):
                if self.intended[slot]:
                    self.complete(slot, self.broken)
            with self.cond:
                self.live_chains = 0
                self.cond.notify_all()

    def send_schedule(self) -> None:
        task = self.task
        for times in arrivals(
            rate=self.spec.rate,
            start_ns=task.start_ns,
            end_ns=task.end_ns,
            measure_ns=task.measure_ns,
            quota=self.quota,
            poisson=self.spec.poisson,
            process=task.process,
            processes=task.processes,
            seed=self.spec.seed,
        ):
            for intended in times.tolist():
                delay = intended - time.perf_counter_ns()
                if delay > 0:
                    time.sleep(delay / 1e9)
                if self.broken is not None or not self.free:
                    now = time.perf_counter_ns()
                    self.recorder.add(
                        intended, now, now, CLIENT_DROPPED if self.broken is None else self.broken
                    )
                    continue
                self.send(self.free.popleft(), intended)

    def wait_idle(self, timeout_s: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.busy == 0 and self.live_chains == 0, max(timeout_s, 0))


def run_stream(channel: grpc.Channel, task: WorkerTask, recorder: Recorder) -> None:
    """Runs this process's share of a streaming step, returning once every request is recorded."""
    load = _StreamLoad(channel, task, recorder)
    load.reader.start()
    delay = task.start_ns - time.perf_counter_ns()
    if delay > 0:
        time.sleep(delay / 1e9)
    grace_s = task.spec.deadline_s + task.spec.drain_s
    if task.spec.mode == "closed":
        for slot in range(load.slots):
            load.next_closed(slot)
        grace_s += max(task.end_ns - time.perf_counter_ns(), 0) / 1e9
    else:
        load.send_schedule()
    if not load.wait_idle(grace_s):
        load.expired = True
        load.call.cancel()
    load.requests.put(None)
    load.reader.join(10.0)
