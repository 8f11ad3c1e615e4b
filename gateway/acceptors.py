"""Extra call acceptors: Python takes more than one waiting ModelInfer call from gRPC core per turn of the
event loop.

Why: grpc.aio's server loop keeps one request for "the next call" outstanding per registered method (and
one for every other method), and re-arms it only after a call it got has gone through the loop: the
request's task, its completion, the loop's ``asyncio.wait``, the new call's task. Under load Python so
takes about one call per turn of the loop however many wait in gRPC core, and the batcher sees them one
at a time: on one row of the mlp at 64 concurrent calls, batches of about 3 rows, where Triton's C++
front end hands its Python backend 25-27. Each extra acceptor keeps one more request outstanding, so a
turn of the loop takes as many waiting calls as there are requests (README "Overload": measured figures).

How: ModelInfer is a registered method of the server (gRPC core keeps its own queue of calls for it), and
each acceptor task keeps one request for it outstanding and hands every call it gets to grpc.aio's own
call path (``_handle_rpc`` under ``_schedule_rpc_coro``, with the server's interceptors and a method
resolver holding the same handler), so a call an acceptor took is served, cancelled, intercepted and
counted exactly as one grpc.aio's loop took.

Contracts:

* It uses grpcio internals (``AioServer._request_registered_call``, ``cygrpc._handle_rpc``,
  ``cygrpc._schedule_rpc_coro``, ``cygrpc._MethodResolver``). :func:`supported` checks them by name and
  argument names; where they differ, :meth:`Acceptors.start` starts none and logs why once, and the server
  runs as grpc.aio alone runs it.
* :meth:`Acceptors.start` is called after the server started, on its event loop. An acceptor ends when
  gRPC core fails its outstanding request (server shutdown) or the server stops running; calls it took
  run to completion under the server's grace like any other. :meth:`Acceptors.wait_closed` awaits the
  acceptors after the server stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import grpc
from grpc._cython import cygrpc  # type: ignore[attr-defined]

__all__ = ["Acceptors", "supported"]

log = logging.getLogger(__name__)

_HANDLE_RPC_ARGS = (
    "method_name",
    "method_resolver",
    "interceptors",
    "rpc_state",
    "loop",
    "concurrency_exceeded",
)
_SCHEDULE_ARGS = ("rpc_coro", "rpc_state", "loop", "method_name")


def _arguments(function: Any) -> tuple[str, ...]:
    code = getattr(function, "__code__", None)
    return () if code is None else tuple(code.co_varnames[: code.co_argcount])


def supported() -> str | None:
    """None when this grpcio has the internals the acceptors use, else why not."""
    if not hasattr(getattr(cygrpc, "AioServer", None), "_request_registered_call"):
        return "grpcio has no AioServer._request_registered_call"
    if not hasattr(cygrpc, "_MethodResolver"):
        return "grpcio has no _MethodResolver"
    if _arguments(getattr(cygrpc, "_handle_rpc", None)) != _HANDLE_RPC_ARGS:
        return "grpcio's _handle_rpc takes other arguments"
    if _arguments(getattr(cygrpc, "_schedule_rpc_coro", None)) != _SCHEDULE_ARGS:
        return "grpcio's _schedule_rpc_coro takes other arguments"
    return None


class Acceptors:
    """``count`` tasks, each keeping one request for the next call of ``method`` outstanding."""

    def __init__(self) -> None:
        self._acceptors: set[asyncio.Task[None]] = set()
        self._calls: set[asyncio.Task[Any]] = set()
        #: Acceptors :meth:`wait_closed` had to cancel (0 when gRPC core ended them all, as it should).
        self.cancelled = 0

    @property
    def running(self) -> int:
        """Acceptors still taking calls."""
        return sum(1 for task in self._acceptors if not task.done())

    def start(
        self,
        server: grpc.aio.Server,
        method: str,
        handler: grpc.RpcMethodHandler[Any, Any],
        interceptors: Sequence[Any] | None,
        count: int,
    ) -> None:
        """Starts ``count`` acceptors for the registered ``method`` (full path, "/package.Service/Method")
        served by ``handler`` behind ``interceptors`` (the server's own); none where :func:`supported` says
        why not."""
        if count <= 0:
            return
        why = supported()
        if why is not None:
            log.warning("extra call acceptors off: %s; grpc.aio takes one call per loop turn", why)
            return
        aio = server._server  # type: ignore[attr-defined]  # grpc.aio.Server's cygrpc.AioServer
        resolver = cygrpc._MethodResolver([], {method: handler})
        chain = tuple(interceptors) if interceptors else ()
        loop = asyncio.get_running_loop()
        for index in range(count):
            task = loop.create_task(
                self._accept(aio, method, resolver, chain, loop), name=f"acceptor-{index}"
            )
            self._acceptors.add(task)

    async def _accept(self, aio: Any, method: str, resolver: Any, chain: tuple[Any, ...], loop: Any) -> None:
        wanted = method.encode()
        while aio.is_running():
            try:
                rpc_state = await aio._request_registered_call(wanted)
            except Exception as exc:  # gRPC core failed the request: it is shutting down
                if aio.is_running():
                    log.warning("call acceptor stopped: %s", exc)
                return
            call = cygrpc._handle_rpc(method, resolver, chain, rpc_state, loop, False)
            task = loop.create_task(cygrpc._schedule_rpc_coro(call, rpc_state, loop, method), name="rpc_task")
            self._calls.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._calls.discard)

    async def wait_closed(self, patience_s: float = 5.0) -> None:
        """Awaits the acceptors (after the server stopped: gRPC core fails their requests, so they end by
        themselves); any left after ``patience_s`` are cancelled, counted in :attr:`cancelled` and logged."""
        if not self._acceptors:
            return
        _, pending = await asyncio.wait(self._acceptors, timeout=patience_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
            self.cancelled += len(pending)
            log.warning("%d call acceptor(s) had to be cancelled at close", len(pending))
