"""gateway.deferred: bookkeeping that runs after the request's callback yields, once, in order."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.deferred import defer, settled


async def test_deferred_calls_run_after_the_caller_yields_once_each_in_order() -> None:
    ran: list[int] = []
    defer(ran.append, 1)
    defer(ran.append, 2)
    assert ran == []  # the caller's step is not over
    await asyncio.sleep(0)
    assert ran == [1, 2]
    await asyncio.sleep(0)
    assert ran == [1, 2]  # never twice


async def test_calls_deferred_by_a_deferred_call_run_too_and_settled_waits_for_them() -> None:
    ran: list[str] = []

    def first() -> None:
        ran.append("first")
        defer(ran.append, "second")

    defer(first)
    await settled()
    assert ran == ["first", "second"]


async def test_a_call_that_raises_is_logged_and_the_next_still_runs(caplog: pytest.LogCaptureFixture) -> None:
    ran: list[str] = []

    def broken() -> None:
        raise ValueError("boom")

    defer(broken)
    defer(ran.append, "after")
    with caplog.at_level(logging.ERROR, logger="gateway.deferred"):
        await settled()
    assert ran == ["after"]
    assert "boom" in caplog.text
    assert "broken" in caplog.text


def test_without_a_running_loop_the_call_runs_at_once() -> None:
    ran: list[int] = []
    defer(ran.append, 7)
    assert ran == [7]


def test_each_loop_runs_only_its_own_calls() -> None:
    ran: list[str] = []

    async def on(name: str) -> None:
        defer(ran.append, name)
        await settled()

    asyncio.run(on("a"))
    asyncio.run(on("b"))  # a new loop: its call is scheduled on it, not on the closed one
    assert ran == ["a", "b"]
