"""The batcher's lone request, driven by tests/batcher_rig.py: a request that finds an instance idle and
nothing else ready on the event loop runs there by itself, inline up to the lone request's cap, without a
coroutine when it comes through :meth:`Batcher.serve`, and with the statistics of any other batch of one."""

from __future__ import annotations

import asyncio

import pytest

from gateway.batcher import INLINE_COMPUTE_S
from gateway.deferred import settled
from gateway.errors import DeadlineExceededError, InvalidArgumentError, ResourceExhaustedError
from gateway.execution import ALONE_INLINE_MAX_S, BatchResult
from tests.batcher_rig import own_rows, request, rig, settle


@pytest.mark.parametrize(
    ("provider", "seed_s", "inline"),
    [
        ("cpu", INLINE_COMPUTE_S / 4, True),
        ("cpu", INLINE_COMPUTE_S * 1.5, True),  # past the queued threshold, within the lone request's cap
        ("cpu", ALONE_INLINE_MAX_S, True),
        ("cpu", ALONE_INLINE_MAX_S * 2, False),
        ("cpu", None, False),
        ("cuda", INLINE_COMPUTE_S / 4, False),
    ],
)
async def test_a_lone_request_on_an_idle_instance_runs_on_the_loop_up_to_its_cap(
    provider: str, seed_s: float | None, inline: bool
) -> None:
    """The idle fast path: nothing waits for the instance, so the hop would only add its round trip."""
    r = rig(gated=False, provider=provider, seed_s=seed_s)
    own_rows(await r.submit(1), 1)
    assert not r.runner.calls[0].task.startswith("batcher-")
    assert r.runner.calls[0].sync is inline
    assert r.observer.batches == [(1, 1_000_000)]


async def test_a_lone_inline_request_completes_without_suspending_and_counts_as_before() -> None:
    """Alone on the loop and inline: the whole request runs in the first step of its coroutine (no future,
    no task switch), with the statistics of any other batch of one, counted once the caller has its answer
    (gateway.deferred)."""
    r = rig(gated=False, provider="cpu", seed_s=INLINE_COMPUTE_S / 2)
    await settle()  # the batch former parks: the instance is idle
    step = r.batcher.submit(request(1), r.clock.now() + 10.0, 1).__await__()
    with pytest.raises(StopIteration) as done:
        step.send(None)  # one step: a suspension would yield here instead
    result = done.value.value
    own_rows(result, 1)
    assert r.runner.calls[0].sync is True
    assert (result.queue_ns, result.compute_ns, result.batch_rows) == (0, 1_000_000, 1)
    assert r.observer.batches == []  # not yet: deferred past the answer
    assert r.batcher.profiles[0].snapshot()[0].observations == 1  # the seed
    await settled()
    assert r.observer.batches == [(1, 1_000_000)]
    assert r.batcher.profiles[0].snapshot()[0].observations == 2  # the seed, then this run


async def test_serve_returns_a_lone_inline_result_itself_and_anything_else_as_a_coroutine() -> None:
    """The data plane's entry: a request that runs alone inline comes back as its result, without a
    coroutine; one that must wait (a busy instance) comes back as the coroutine that queues it."""
    r = rig(gated=False, provider="cpu", seed_s=INLINE_COMPUTE_S / 2)
    await settle()  # the batch former parks: the instance is idle
    result = r.batcher.serve(request(1), r.clock.now() + 10.0, 1)
    assert isinstance(result, BatchResult)
    own_rows(result, 1)
    assert r.runner.calls[0].sync is True
    r.batcher._claimed[0] = True  # the instance is taken: the request must queue
    pending = r.batcher.serve(request(2), r.clock.now() + 10.0, 1)
    assert asyncio.iscoroutine(pending)
    r.batcher._claimed[0] = False
    r.batcher._released[0].set()
    own_rows(await pending, 2)
    await settled()
    assert [rows for rows, _ in r.observer.batches] == [1, 1]


async def test_serve_refuses_at_once_without_a_coroutine() -> None:
    """A refusal (a full queue, a budget below the prediction) is raised by serve itself and counted."""
    r = rig(gated=False, provider="cpu", seed_s=INLINE_COMPUTE_S / 2, max_queue_size=2)
    with pytest.raises(ResourceExhaustedError, match="queue is full"):
        r.batcher.serve(request(1, rows=3), r.clock.now() + 10.0, 1)
    with pytest.raises(DeadlineExceededError, match="below the predicted"):
        r.batcher.serve(request(2), r.clock.now() + INLINE_COMPUTE_S / 100, 1)
    assert r.observer.shed == ["queue_full", "deadline_admission"]
    assert r.runner.calls == []


async def test_a_lone_inline_request_that_fails_gets_its_own_error_and_the_next_one_runs() -> None:
    r = rig(gated=False, provider="cpu", seed_s=INLINE_COMPUTE_S / 2)
    with pytest.raises(InvalidArgumentError, match="negative input"):
        await r.submit(-1)
    assert r.observer.batches == []  # a failed run is no batch
    own_rows(await r.submit(2), 2)
    assert [call.sync for call in r.runner.calls] == [True, True]


async def test_a_request_among_other_ready_work_gets_the_queued_threshold_not_the_lone_cap() -> None:
    """The loop has other callbacks ready (many calls in progress): the request is not alone, so it runs
    inline only under the queued path's threshold."""
    r = rig(gated=False, provider="cpu", seed_s=INLINE_COMPUTE_S * 1.5)
    r.idle[0] = False  # other calls are ready on the loop
    own_rows(await r.submit(1), 1)
    assert not r.runner.calls[0].task.startswith("batcher-")  # still the fast path...
    assert r.runner.calls[0].sync is False  # ...but on the executor
    r.idle[0] = True
    own_rows(await r.submit(2), 2)  # nothing else ready: alone, inline
    assert r.runner.calls[1].sync is True
