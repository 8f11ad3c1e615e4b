"""Where a gateway request's time goes: each py-spy stack -> (thread group, stage).

The one table to update when gateway code moves is :data:`RULES` (and :data:`THREAD_GROUPS` for thread
names). Everything here is pure and tested on hand-written collapsed stacks
(``tests/unit/test_bench_stages.py``); :mod:`bench.profiling` records the stacks, :mod:`bench.profile_table`
sums them and prints the tables.

Contracts:

* Input is py-spy's ``--format raw`` output (collapsed stacks), recorded with ``--threads``: one line per
  distinct stack, ``thread (TID): NAME;frame;frame;... COUNT``, outermost frame first. A frame is
  ``function (location:line)`` for Python, ``function (library)`` or ``function (file.c:line)`` for native
  frames (``--native``). A line without a ``thread`` element belongs to the ``other`` group; a leading
  ``process ...`` element (``--subprocesses``) is skipped.
* :func:`classify_frames` walks a stack from the innermost frame outwards. For each frame the first rule of
  :data:`RULES` whose ``module`` is a substring of the frame's location (without the line number) and whose
  ``function`` matches the function name (:func:`fnmatch.fnmatchcase`; ``f.<locals>.g`` also matches as
  ``f``) decides what the frame is, and that rule's stage decides the sample's stage. A rule with
  ``innermost=True`` does so only when it matches the innermost frame; further out the frame is
  transparent, and so is a frame that no rule matches. A ``weak`` rule (library catch-alls: asyncio,
  protobuf) decides only when no frame further out is claimed by another rule, so library code counts
  for the gateway stage that called it. So the innermost frame that a rule claims decides, and the event
  loop's driver frames (``Handle._run``, ``_run_once``), which sit above every callback, take only the
  samples whose own code is innermost (a C callback: grpc's Cython code, a C task step). A stack that no
  rule claims is ``other``. The thread is an outermost pseudo-frame ``(name, "<thread>")``, so a thread
  with no claimed frame can be claimed by its name (grpc's poller thread).
* :func:`thread_group` maps a thread name to ``event loop``, ``onnxruntime executor`` or ``other``.
* Stage ``idle`` holds blocked waits (epoll, an executor waiting for work), which py-spy reports only
  with ``--native``; :mod:`bench.profile_table` leaves it out of every share and total.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

__all__ = [
    "GROUPS",
    "RULES",
    "IDLE",
    "STAGES",
    "Rule",
    "Stack",
    "classify",
    "classify_frames",
    "parse_collapsed",
    "parse_frame",
    "thread_group",
]

EVENT_LOOP, EXECUTOR, OTHER_GROUP = "event loop", "onnxruntime executor", "other"
GROUPS: tuple[str, ...] = (EVENT_LOOP, EXECUTOR, OTHER_GROUP)

# Stage -> what it holds, in the order the tables list them.
STAGES: dict[str, str] = {
    "decode": "tensor bytes -> numpy (codec), protobuf parsing (native frames)",
    "validate": "names, datatypes, shapes against the signature; deadline and priority parameters",
    "enqueue": "admission (concurrency limit, batcher submit, idle fast path), batch key, queue push",
    "wait": "batch former and queue policy: wait for arrivals, shed, pick the batch, latency profile",
    "collate": "stack the requests' feeds into one batch (and pad)",
    "run": "onnxruntime session.run",
    "split": "batch execution's own lines, split outputs per request, answer the futures (fan-out)",
    "encode": "numpy -> response bytes, protobuf serialization (native frames)",
    "metrics": "Prometheus metrics, ModelStatistics counters, batch observer",
    "sampling": "drift sampling decision and hand-off",
    "logging": "access log, request ids (uuid), logging",
    "dataplane": "servicer/data plane own lines: lease, response assembly, error mapping",
    "auth": "authorization interceptor (bearer tokens, scopes)",
    "grpc": "grpc aio: Cython callbacks (C code under the loop), grpc/aio Python, grpc threads",
    "thread-hop": "executor hand-off and back: run_in_executor, call_soon_threadsafe, self-pipe, wake-ups",
    "selector": "event loop's epoll/selector (with --native also its blocking wait)",
    "asyncio": "other event-loop machinery: task steps, futures, events, timers",
    "protobuf": "protobuf object access/creation (native frames)",
    "gil": "waiting to take the GIL (native frames)",
    "idle": "blocked waits: epoll, executor waiting for work (native frames; left out of all shares)",
    "other": "no rule matched",
}


@dataclass(frozen=True)
class Rule:
    """Frames whose location contains ``module`` and whose function matches ``function`` are ``stage``."""

    stage: str
    module: str
    function: str = "*"
    innermost: bool = False
    weak: bool = False


def _rules(
    stage: str, module: str, *functions: str, innermost: bool = False, weak: bool = False
) -> list[Rule]:
    return [Rule(stage, module, f, innermost, weak) for f in functions or ("*",)]


IDLE = "idle"  # blocked waits, seen only with --native (py-spy leaves idle Python threads out)
THREAD = "<thread>"  # the location of the pseudo-frame that stands for the thread, outside its stack

# Order matters only among rules that match the same frame: the first one wins.
RULES: tuple[Rule, ...] = (
    # Event-loop driver frames: above every callback, so they decide only as the innermost frame.
    *_rules("grpc", "asyncio/events.py", "Handle._run", innermost=True),
    *_rules("asyncio", "asyncio/base_events.py", "BaseEventLoop._run_once", innermost=True),
    *_rules("asyncio", "asyncio/base_events.py", "*.run_forever", "*.run_until_complete", innermost=True),
    *_rules("asyncio", "asyncio/runners.py", innermost=True),
    *_rules("asyncio", "_asynciomodule.c", "task_step*", "TaskStepMethWrapper*", innermost=True),
    *_rules("asyncio", "<frozen runpy>", innermost=True),
    *_rules("asyncio", "gateway/__main__.py", "main", "<module>", innermost=True),
    # The gateway's stages (module file names and function names).
    *_rules("decode", "gateway/codec.py", "decode_*", "element_count", "_utf8"),
    *_rules("encode", "gateway/codec.py", "encode_*"),
    *_rules("validate", "gateway/validate.py"),
    *_rules("validate", "gateway/deadlines.py"),
    *_rules("enqueue", "gateway/batcher.py", "Batcher.submit", "Batcher._set_depth", "Batcher._shed"),
    *_rules("enqueue", "gateway/batcher.py", "Batcher._idle_instance", "Batcher._waiting_helps"),
    *_rules("enqueue", "gateway/batcher.py", "Batcher._arrival_likely", "Batcher._run_now", "Batcher._depth"),
    *_rules("enqueue", "gateway/queueing.py", "EntryQueue.push", "EntryQueue.discard", "EntryQueue._rank"),
    *_rules("enqueue", "gateway/queueing.py", "Entry.*"),
    *_rules("enqueue", "gateway/concurrency.py"),
    *_rules("enqueue", "gateway/collate.py", "batch_key"),
    *_rules("wait", "gateway/batcher.py", "Batcher._work", "Batcher._next_batch", "Batcher._take"),
    *_rules(
        "wait", "gateway/batcher.py", "Batcher._head_queue", "Batcher._queued_rows_in", "Batcher.predict"
    ),
    *_rules("wait", "gateway/batcher.py", "Batcher._shed_infeasible"),
    *_rules("wait", "gateway/batcher.py", "Batcher._police", "Batcher._codel"),
    *_rules("wait", "gateway/queueing.py"),
    *_rules("wait", "gateway/clock.py", "*.wait_until"),
    *_rules("wait", "gateway/profile.py"),
    *_rules("collate", "gateway/collate.py", "stack*", "pad*", "bucket_for"),
    *_rules("split", "gateway/collate.py", "split*"),
    *_rules("split", "gateway/batcher.py", "Batcher._run_batch*", "Batcher._execute", "Batcher._fail"),
    *_rules("split", "gateway/execution.py", "BatchExecutor.*", "BatchResult*"),
    *_rules("run", "gateway/runner.py", "Runner.run_sync", "Runner._run_bound"),
    *_rules("run", "onnxruntime"),
    *_rules("thread-hop", "gateway/runner.py", "Runner.run"),
    *_rules("metrics", "gateway/metrics.py"),
    *_rules("metrics", "gateway/stats.py"),
    *_rules("metrics", "gateway/version.py", "VersionObserver.*"),
    *_rules("metrics", "gateway/", "*._count*"),
    *_rules("metrics", "prometheus_client/"),
    *_rules("sampling", "gateway/sampler.py"),
    *_rules("sampling", "gateway/shipper.py"),
    *_rules("sampling", "gateway/", "*._sample", "_sample*", "*.sample"),
    *_rules("logging", "gateway/logs.py"),
    *_rules("logging", "gateway/", "*._access", "_access*"),
    *_rules("logging", "logging/"),
    *_rules("logging", "uuid.py"),
    *_rules("auth", "gateway/auth.py"),
    *_rules("auth", "gateway/grants.py"),
    *_rules("auth", "gateway/security.py"),
    *_rules("dataplane", "gateway/dataplane.py"),
    *_rules("dataplane", "gateway/servicer.py"),
    *_rules("dataplane", "gateway/models.py"),
    # The hop to the executor thread and back, on both sides.
    *_rules("thread-hop", "asyncio/base_events.py", "BaseEventLoop.call_soon_threadsafe"),
    *_rules("thread-hop", "asyncio/base_events.py", "BaseEventLoop.run_in_executor"),
    *_rules("thread-hop", "asyncio/selector_events.py", "*_write_to_self", "*_read_from_self"),
    *_rules("thread-hop", "asyncio/selector_events.py", "*_process_self_data"),
    *_rules("thread-hop", "asyncio/futures.py", "_chain_future*", "_call_set_state", "_copy_future_state"),
    *_rules("thread-hop", "asyncio/futures.py", "_set_concurrent_future_state", "_set_state"),
    *_rules("thread-hop", "concurrent/futures/"),
    *_rules("thread-hop", "queue.py"),
    *_rules(IDLE, "_queuemodule.c", "_queue_SimpleQueue_get*"),  # an executor thread waiting for work
    *_rules("thread-hop", "_queuemodule.c"),
    # The transport.
    *_rules("grpc", "grpc/_cython/"),
    *_rules("grpc", "grpc/aio/"),
    *_rules("grpc", "grpc/"),
    *_rules("grpc", THREAD, "*_poll_wrapper*"),  # grpc aio's poller thread (Cython, under Thread.run)
    *_rules("metrics", THREAD, "*serve_forever*"),  # the /metrics HTTP server thread
    *_rules(IDLE, "", "epoll_wait", "epoll_pwait*"),  # blocked in epoll (loop or grpc poller)
    *_rules(IDLE, "selectmodule.c", "select_poll_poll*"),  # the /metrics server (the loop uses epoll)
    *_rules("gil", "", "take_gil"),
    *_rules("selector", "selectors.py"),
    *_rules("selector", "selectmodule.c"),
    *_rules("decode", "_message", "*MergeFromString*", "*ParseFromString*", "*FromString", "upb_Decode*"),
    *_rules("encode", "_message", "*SerializeToString*", "*SerializePartialToString*", "upb_Encode*"),
    # Library catch-alls (weak): they decide only when no outer frame is claimed by a rule above.
    *_rules("protobuf", "_message", weak=True),
    *_rules("protobuf", "google/protobuf/", weak=True),
    *_rules("asyncio", "asyncio/", weak=True),
    *_rules("asyncio", "_asynciomodule.c", weak=True),
    *_rules("asyncio", "_weakrefset.py", weak=True),
    *_rules(
        "asyncio", "gateway/clock.py", weak=True
    ),  # now()/ns() count for their caller  # the loop's task set dropping finished tasks
)

THREAD_GROUPS: tuple[tuple[str, str], ...] = (
    ("MainThread", EVENT_LOOP),  # asyncio.run in the gateway's main thread
    ("ort-*", EXECUTOR),  # gateway/runner.py names its executor threads ort-<model>:<version>-<instance>
)

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<location>[^()]*)\)$")
_THREAD = re.compile(r"^thread \((?P<tid>[^)]*)\)(?:: ?(?P<name>.*))?$")
_LINE_NUMBER = re.compile(r":\d+$")


@dataclass(frozen=True)
class Stack:
    thread: str  # thread name ("" when the line has none)
    frames: tuple[tuple[str, str], ...]  # (function, location without line), outermost first
    count: int
    tid: str = ""  # the OS thread id py-spy printed ("" when the line has none)


def parse_frame(text: str) -> tuple[str, str]:
    """``"Batcher.submit (gateway/batcher.py:170)"`` -> ``("Batcher.submit", "gateway/batcher.py")``."""
    match = _FRAME.match(text.strip())
    if match is None:
        return text.strip(), ""
    return match["function"], _LINE_NUMBER.sub("", match["location"])


def parse_collapsed(lines: Iterable[str]) -> list[Stack]:
    """The stacks of py-spy's raw output; blank and malformed lines (no trailing count) are skipped."""
    stacks: list[Stack] = []
    for line in lines:
        body, _, count = line.rstrip("\n").rpartition(" ")
        if not body or not count.isdigit():
            continue
        parts = body.split(";")
        if parts and parts[0].startswith("process "):
            parts = parts[1:]
        thread, tid = "", ""
        if parts and (match := _THREAD.match(parts[0])):
            thread, tid = (match["name"] or "").strip(), match["tid"]
            parts = parts[1:]
        stacks.append(Stack(thread, tuple(parse_frame(p) for p in parts if p), int(count), tid))
    return stacks


def thread_group(name: str) -> str:
    for pattern, group in THREAD_GROUPS:
        if fnmatchcase(name, pattern):
            return group
    return OTHER_GROUP


def _rule_for(function: str, location: str, rules: tuple[Rule, ...]) -> Rule | None:
    outer = function.split(".<locals>.", 1)[0]  # a comprehension or closure counts as its function
    for rule in rules:
        if rule.module in location and (
            fnmatchcase(function, rule.function) or fnmatchcase(outer, rule.function)
        ):
            return rule
    return None


def classify_frames(frames: tuple[tuple[str, str], ...], rules: tuple[Rule, ...] = RULES) -> str:
    """The stage of one stack (outermost frame first); see the module contract."""
    weak: str | None = None
    for depth, (function, location) in enumerate(reversed(frames)):
        rule = _rule_for(function, location, rules)
        if rule is None or (rule.innermost and depth > 0):
            continue
        if not rule.weak:
            return rule.stage
        weak = weak or rule.stage
    return weak or "other"


def classify(stack: Stack, rules: tuple[Rule, ...] = RULES) -> tuple[str, str]:
    """(thread group, stage) of a stack; the thread is an outermost pseudo-frame ``(name, "<thread>")``."""
    frames = ((stack.thread, THREAD), *stack.frames)
    return thread_group(stack.thread), classify_frames(frames, rules)
