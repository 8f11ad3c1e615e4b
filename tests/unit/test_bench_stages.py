"""``make profile``'s classifier and table maths (bench/stages.py, bench/profile_table.py), on hand-written
py-spy collapsed stacks: no profiler runs here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.profile_table import Summary, kernel_groups, render, replace_block, summarize, write_block
from bench.stages import RULES, Rule, classify, classify_frames, parse_collapsed, parse_frame

LOOP = (
    "thread (101): MainThread;_run_module_as_main (<frozen runpy>:198);main (gateway/__main__.py:110);"
    "run (asyncio/runners.py:190);BaseEventLoop.run_forever (asyncio/base_events.py:607);"
    "BaseEventLoop._run_once (asyncio/base_events.py:1922);Handle._run (asyncio/events.py:80)"
)
SERVICER = f"{LOOP};InferenceServicer.ModelInfer (gateway/servicer.py:161);_guard (gateway/servicer.py:334)"
RUN = f"{SERVICER};InferenceServicer._run (gateway/servicer.py:265)"
VALIDATE = f"{RUN};decode_request (gateway/validate.py:58)"
EXECUTOR = (
    "thread (102): ort-mlp:1-0_0;Thread._bootstrap (threading.py:1002);Thread.run (threading.py:982);"
    "_worker (concurrent/futures/thread.py:83);_WorkItem.run (concurrent/futures/thread.py:58)"
)


def stage_of(line: str) -> tuple[str, str]:
    (stack,) = parse_collapsed([line])
    return classify(stack)


def test_parse_frames_and_lines() -> None:
    assert parse_frame("Batcher.submit (gateway/batcher.py:170)") == ("Batcher.submit", "gateway/batcher.py")
    assert parse_frame("epoll_wait (libc.so.6)") == ("epoll_wait", "libc.so.6")
    assert parse_frame("stack.<locals>.<dictcomp> (gateway/collate.py:44)") == (
        "stack.<locals>.<dictcomp>",
        "gateway/collate.py",
    )
    stacks = parse_collapsed(
        [
            "thread (0x7f): Thread-1 (_poll_wrapper);Thread.run (threading.py:982) 19\n",
            'process 12:"python -m gateway";thread (7): MainThread;f (a.py:1) 2',
            "f (a.py:1);g (b.py:2) 3",
            "",
            "garbage without a count",
        ]
    )
    assert [(s.thread, s.frames, s.count, s.tid) for s in stacks] == [
        ("Thread-1 (_poll_wrapper)", (("Thread.run", "threading.py"),), 19, "0x7f"),
        ("MainThread", (("f", "a.py"),), 2, "7"),
        ("", (("f", "a.py"), ("g", "b.py")), 3, ""),
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"{SERVICER};InferenceServicer.infer (gateway/servicer.py:229);uuid4 (uuid.py:723) 1", "logging"),
        (
            f"{VALIDATE};decode_raw (gateway/codec.py:80) 1",
            "decode",
        ),
        (f"{VALIDATE} 1", "validate"),
        (f"{SERVICER};InferenceServicer._run (gateway/servicer.py:286);Histogram.observe "
         "(prometheus_client/metrics.py:678) 1", "metrics"),
        (f"{SERVICER};InferenceServicer._run (gateway/servicer.py:281);encode_array (gateway/codec.py:160) 1",
         "encode"),
        (f"{SERVICER};InferenceServicer._run (gateway/servicer.py:270) 1", "dataplane"),
        (f"{SERVICER};Dataplane.infer (gateway/dataplane.py:80) 1", "dataplane"),
        (f"{RUN};Batcher.submit (gateway/batcher.py:174) 1", "enqueue"),
        (f"{LOOP};Batcher._work (gateway/batcher.py:198);Batcher._next_batch (gateway/batcher.py:228);"
         "wait_for (asyncio/tasks.py:476);Event.wait (asyncio/locks.py:210) 1", "wait"),
        (f"{LOOP};Batcher._work (gateway/batcher.py:202);Batcher._execute (gateway/batcher.py:315);"
         "Batcher._run_batch (gateway/batcher.py:340);stack (gateway/collate.py:41) 1", "collate"),
        (f"{LOOP};Batcher._work (gateway/batcher.py:202);Batcher._execute (gateway/batcher.py:315);"
         "Batcher._run_batch (gateway/batcher.py:352);split (gateway/collate.py:70) 1", "split"),
        (f"{LOOP};Batcher._work (gateway/batcher.py:202);Batcher._execute (gateway/batcher.py:315);"
         "Batcher._run_batch (gateway/batcher.py:346);Runner.run (gateway/runner.py:206);"
         "BaseEventLoop.run_in_executor (asyncio/base_events.py:829);"
         "ThreadPoolExecutor.submit (concurrent/futures/thread.py:175) 1", "thread-hop"),
        (f"{LOOP};BaseSelectorEventLoop._read_from_self (asyncio/selector_events.py:119) 1", "thread-hop"),
        (f"{LOOP} 325", "grpc"),  # a C callback under the loop: grpc aio's Cython code
        (f"{LOOP};wait (asyncio/tasks.py:415);iscoroutine (asyncio/coroutines.py:39);"
         "ABCMeta.__instancecheck__ (<frozen abc>:119) 2", "asyncio"),
        ("thread (101): MainThread;_run_module_as_main (<frozen runpy>:198);"
         "BaseEventLoop._run_once (asyncio/base_events.py:1884);EpollSelector.select (selectors.py:468) 62",
         "selector"),
        (f"{RUN};Batcher.submit (gateway/batcher.py:160);Batcher.predict.<locals>.<genexpr> "
         "(gateway/batcher.py:148) 1", "wait"),  # a comprehension counts as its function
        (f"{SERVICER};DataPlane.infer (gateway/dataplane.py:120);ConcurrencyLimit.try_acquire "
         "(gateway/concurrency.py:72) 1", "enqueue"),
        (f"{SERVICER};DataPlane.infer (gateway/dataplane.py:139);DataPlane._count_failure "
         "(gateway/dataplane.py:215) 1", "metrics"),
        (f"{SERVICER};DataPlane.infer (gateway/dataplane.py:149);"
         "DataPlane._access (gateway/dataplane.py:230) 1", "logging"),
        (f"{SERVICER};DataPlane._run (gateway/dataplane.py:180);"
         "DataPlane._sample (gateway/dataplane.py:190) 1", "sampling"),
        (f"{LOOP};Batcher._work (gateway/batcher.py:250);Batcher._next_batch (gateway/batcher.py:270);"
         "EntryQueue.take (gateway/queueing.py:140) 1", "wait"),
        (f"{LOOP};Batcher._work (gateway/batcher.py:250);BatchExecutor.execute (gateway/execution.py:106);"
         "BatchExecutor._run (gateway/execution.py:160) 1", "split"),
        (f"{RUN};Batcher.submit (gateway/batcher.py:170);LoopClock.now (gateway/clock.py:34) 1", "enqueue"),
        (f"{LOOP};something (somewhere.py:1) 1", "other"),  # driver frames above it never claim it
    ],
)  # fmt: skip
def test_event_loop_stages(line: str, expected: str) -> None:
    assert stage_of(line) == ("event loop", expected)


def test_executor_and_other_threads() -> None:
    run = f"{EXECUTOR};Runner.run_sync (gateway/runner.py:176);Session.run (onnxruntime/capi/x.py:406) 38"
    assert stage_of(run) == ("onnxruntime executor", "run")
    assert stage_of(f"{EXECUTOR.rsplit(';', 1)[0]} 79") == ("onnxruntime executor", "thread-hop")
    wake = f"{EXECUTOR};Future.set_result (concurrent/futures/_base.py:1);"
    wake += "_call_set_state (asyncio/futures.py:1);"
    assert stage_of(wake + "BaseSelectorEventLoop._write_to_self (asyncio/selector_events.py:139) 2") == (
        "onnxruntime executor",
        "thread-hop",
    )
    poller = "thread (7): Thread-1 (_poll_wrapper);Thread._bootstrap (threading.py:1002);"
    poller += "Thread.run (threading.py:982) 19"
    assert stage_of(poller) == ("other", "grpc")
    assert stage_of("thread (8): Thread-9;Thread.run (threading.py:982);f (x.py:1) 1") == ("other", "other")


def test_native_frames() -> None:
    cy = "0x7f8db9ee6c3a (grpc/_cython/cygrpc.cpython-311-x86_64-linux-gnu.so)"
    assert stage_of(f"{LOOP};task_step (_asynciomodule.c:2990);{cy};sendmsg (libc.so.6) 55") == (
        "event loop",
        "grpc",
    )
    parse = f"{LOOP};{cy};PyUpb_Message_MergeFromString (_message.abi3.so);upb_Decode (_message.abi3.so) 3"
    assert stage_of(parse) == ("event loop", "decode")
    servicer = f"{SERVICER};InferenceServicer.infer (gateway/servicer.py:221);"
    servicer += "get_running_loop (_asynciomodule.c:274)"
    assert stage_of(f"{servicer};getpid (libc.so.6) 7") == (
        "event loop",
        "dataplane",
    )  # weak asyncio, servicer
    epoll = "select_epoll_poll_impl (selectmodule.c:1598)"
    assert stage_of(f"thread (1): MainThread;EpollSelector.select (selectors.py:468);{epoll} 5") == (
        "event loop",
        "selector",
    )
    assert stage_of(f"thread (1): MainThread;{epoll};epoll_wait (libc.so.6) 215") == ("event loop", "idle")
    poll = "Thread-2 (serve_forever);_PollLikeSelector.select (selectors.py:1);"
    poll += "select_poll_poll_impl (selectmodule.c:1)"
    assert stage_of(f"thread (9): {poll};poll (libc.so.6) 580") == ("other", "idle")
    assert stage_of(f"{LOOP};task_step (_asynciomodule.c:2990) 1") == ("event loop", "asyncio")
    wait = "_queue_SimpleQueue_get (_queuemodule.c.h:1);PyThread_acquire_lock_timed (libpython3.11.so.1.0);"
    assert stage_of(f"{EXECUTOR.rsplit(';', 1)[0]};{wait}0x7ff8 (libc.so.6) 550") == (
        "onnxruntime executor",
        "idle",
    )
    gil = "PyEval_RestoreThread (ceval_gil.c:1);take_gil (ceval_gil.c:2);pthread_cond_timedwait (libc.so.6)"
    assert stage_of(f"{EXECUTOR};Runner.run_sync (gateway/runner.py:176);{gil} 3") == (
        "onnxruntime executor",
        "gil",
    )


def test_innermost_rule_decides_and_order_matters() -> None:
    rules = (Rule("outer", "a.py"), Rule("inner", "b.py"), Rule("first", "c.py"), Rule("second", "c.py"))
    assert classify_frames((("f", "a.py"), ("g", "b.py")), rules) == "inner"
    assert (
        classify_frames((("f", "a.py"), ("g", "z.py")), rules) == "outer"
    )  # unmatched frames are transparent
    assert classify_frames((("h", "c.py"),), rules) == "first"
    assert classify_frames((("x", "z.py"),), rules) == "other"
    driver = (Rule("loop", "l.py", innermost=True), Rule("lib", "lib.py", weak=True), Rule("app", "app.py"))
    assert classify_frames((("run", "l.py"),), driver) == "loop"
    assert classify_frames((("run", "l.py"), ("x", "z.py")), driver) == "other"
    assert classify_frames((("a", "app.py"), ("w", "lib.py"), ("x", "z.py")), driver) == "app"
    assert classify_frames((("run", "l.py"), ("w", "lib.py")), driver) == "lib"


def test_every_rule_names_a_known_stage() -> None:
    from bench.stages import STAGES

    assert {rule.stage for rule in RULES} <= set(STAGES)


def sample_lines() -> list[str]:
    return [
        f"{LOOP} 300",  # grpc
        f"{VALIDATE} 100",
        f"{LOOP};something (somewhere.py:1) 100",  # other
        f"{EXECUTOR};Runner.run_sync (gateway/runner.py:176) 400",
        "thread (7): Thread-1 (_poll_wrapper);Thread.run (threading.py:982) 100",
    ]


def test_idle_samples_are_left_out_of_shares() -> None:
    idle = f"{LOOP};EpollSelector.select (selectors.py:468);epoll_wait (libc.so.6) 900"
    summary = summarize(
        parse_collapsed([*sample_lines(), idle]), interval_s=0.005, seconds=10.0, requests=5000.0
    )
    assert summary.total == 1000
    assert summary.idle == 900
    assert summary.share_in_group("event loop", "grpc") == pytest.approx(0.6)
    assert "Idle samples (blocked waits, left out above): 900." in render(result(summary), "")


def test_summary_maths() -> None:
    summary = summarize(parse_collapsed(sample_lines()), interval_s=0.005, seconds=10.0, requests=5000.0)
    assert summary.total == 1000
    assert summary.group_total("event loop") == 500
    assert summary.share_of_all("event loop") == pytest.approx(0.5)
    assert summary.share_of_all("onnxruntime executor") == pytest.approx(0.4)
    assert summary.share_in_group("event loop", "grpc") == pytest.approx(0.6)
    assert summary.share_in_group("event loop", "validate") == pytest.approx(0.2)
    # 400 samples x 5 ms = 2 thread-seconds over 5000 requests = 400 µs each; over 10 s = 0.2 busy cores
    assert summary.us_per_request(400) == pytest.approx(400.0)
    assert summary.busy_cores(400) == pytest.approx(0.2)
    data = summary.to_json()
    assert data["groups"]["event loop"]["stages"]["grpc"]["us_per_request"] == pytest.approx(300.0)
    assert data["groups"]["other"]["stages"]["grpc"]["samples"] == 100
    assert data["other_innermost_frames"] == {"something somewhere.py": 100}
    empty = summarize([], interval_s=0.005, seconds=0.0, requests=0.0)
    assert empty.share_of_all("event loop") is None
    assert empty.us_per_request(10) is None
    assert empty.busy_cores(10) is None


def result(summary: Summary | None = None) -> dict[str, Any]:
    if summary is None:
        summary = summarize(parse_collapsed(sample_lines()), interval_s=0.005, seconds=10.0, requests=5000.0)
    return {
        "run": "mlp-c64",
        "scenario": "mlp-c64",
        "model": "mlp",
        "concurrency": 64,
        "rows": 1,
        "config": "peers-like model.toml",
        "command": "python -m bench.profiling --scenario mlp-c64",
        "gateway_command": "python -m gateway --registry r",
        "load_command": "python -m loadtests --target 127.0.0.1:$GATEWAY_PORT",
        "py_spy_command": "py-spy record --pid $GATEWAY_PID",
        "environment": {
            "started_at": "2026-12-05T10:00:00+00:00",
            "git_commit": "abc",
            "git_dirty": False,
            "cpu_count": 2,
            "cpu_model": "cpu",
            "python": "3.11",
            "versions": {"grpcio": "1", "onnxruntime": "1"},
        },
        "gateway_revision": None,
        "load_average_before": [1.0, 0.5, 0.25],
        "load_average_after": [1.5, 0.75, 0.5],
        "throughput_rps": 500.0,
        "latency_ms": {"p50": 1.0, "p99": 2.0},
        "errors": {},
        "gateway_requests_in_window": 4990,
        "profile": summary.to_json(),
    }


def test_render_table() -> None:
    table = render(result(), "before")
    assert table.startswith("### mlp-c64 · before\n")
    assert "load average 1.00, 0.50, 0.25 before, 1.50, 0.75, 0.50 after" in table
    assert "| event loop | 500 | 50.0% | 0.25 | 500.0 | - | - |" in table
    assert "| all | 1,000 | 100.0% | 0.50 | 1,000.0 |" in table
    assert "| grpc | 60.0% | 300.0 | - | 100.0 | 400.0 |" in table
    assert "| validate | 20.0% | 100.0 | - | - | 100.0 |" in table
    assert "| run | - | - | 400.0 | - | 400.0 |" in table
    assert "`something somewhere.py` 100" in table


def test_kernel_cpu_by_thread_group() -> None:
    stacks = parse_collapsed(sample_lines())  # thread ids: 101 MainThread, 102 ort-mlp, 7 the grpc poller
    cpu = kernel_groups({"101": 4.0, "102": 2.0, "7": 1.0, "999": 0.5}, stacks)
    assert cpu == {"event loop": 4.0, "onnxruntime executor": 2.0, "other": 1.5}  # 999: never seen at work
    data = result()
    data["kernel_cpu"] = {"seconds": 10.0, "groups": cpu}
    table = render(data, "")
    assert "| event loop | 500 | 50.0% | 0.25 | 500.0 | 0.40 | 800.0 |" in table  # 0.4 x 10 s / 5000
    assert "| all | 1,000 | 100.0% | 0.50 | 1,000.0 | 0.75 | 1,500.0 |" in table


def test_benchmarks_block_keeps_other_tables_and_text(tmp_path: Path) -> None:
    text = "# Benchmarks\n\n<!-- load:start -->\nload\n<!-- load:end -->\n\ntail text\n"
    after = replace_block(text, "mlp-c64", "after", "### mlp-c64 · after\nA1\n")
    both = replace_block(after, "mlp-c64", "before", "### mlp-c64 · before\nB1\n")
    both = replace_block(both, "tiny-c1", "before", "### tiny-c1 · before\nT1\n")
    assert both.startswith(text.rstrip("\n"))  # what was there is kept byte for byte
    order = [both.index(x) for x in ("B1", "A1", "T1")]
    assert order == sorted(order)  # by run, then before before after
    again = replace_block(both, "mlp-c64", "before", "### mlp-c64 · before\nB2\n")
    assert "B1" not in again
    assert all(x in again for x in ("B2", "A1", "T1"))
    assert again.count("<!-- profile:start -->") == 1
    assert replace_block(again, "mlp-c64", "before", "### mlp-c64 · before\nB2\n") == again
    out = tmp_path / "BENCHMARKS.md"
    write_block(out, "tiny-c1", "after", "T2")
    assert out.read_text().startswith("# Benchmarks")
    assert "<!-- profile:tiny-c1:after:start -->\nT2\n<!-- profile:tiny-c1:after:end -->" in out.read_text()
