"""A real aiohttp WebSocket server on 127.0.0.1 that collects SampleBatch frames (a stand-in monitor for
gateway-side sampling tests; end-to-end tests use the real monitor). Runs on its own thread and loop."""

from __future__ import annotations

import asyncio
import socket
import threading

from aiohttp import web

from protos import monitor_pb2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Collector:
    """Accepts WebSockets on ``/v1/samples/stream``; ``stall=True`` accepts and never reads."""

    def __init__(self, port: int, *, stall: bool = False) -> None:
        self.port = port
        self.stall = stall
        self.samples: list[monitor_pb2.Sample] = []
        self.frames = 0
        self._lock = threading.Lock()
        self._release = asyncio.Event()
        self._sockets: set[web.WebSocketResponse] = set()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._runner = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/samples/stream"

    def rows(self) -> int:
        with self._lock:
            return sum(s.inputs[0].shape[0] for s in self.samples)

    async def _start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/v1/samples/stream", self._socket)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self._sockets.add(ws)
        if self.stall:
            await self._release.wait()
            return ws
        async for message in ws:
            if message.type == web.WSMsgType.BINARY:
                batch = monitor_pb2.SampleBatch.FromString(message.data)
                with self._lock:
                    self.frames += 1
                    self.samples.extend(batch.samples)
        return ws

    def stop(self) -> None:
        async def shutdown() -> None:
            self._release.set()
            for ws in list(self._sockets):
                await ws.close()
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
