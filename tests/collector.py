"""A real aiohttp WebSocket server on 127.0.0.1 that collects SampleBatch frames (a stand-in monitor for
gateway-side sampling tests; end-to-end tests use the real monitor). Runs on its own thread and loop.

It keeps one ordinary Sample per request: a packed sample (monitor.proto ``rows``) is split by
:func:`unpacked`, written here from the wire contract alone, so the tests read what a request's sample says
whichever way the gateway sent it."""

from __future__ import annotations

import asyncio
import math
import socket
import struct
import threading

from aiohttp import web

from protos import monitor_pb2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def unpacked(sample: monitor_pb2.Sample) -> list[monitor_pb2.Sample]:
    """The ordinary samples of a packed one, one per request in order (an ordinary one: itself)."""
    if not sample.rows:
        return [sample]
    total, start, out = sum(sample.rows), 0, []
    for k, count in enumerate(sample.rows):
        one = monitor_pb2.Sample(
            model=sample.model,
            version=sample.version,
            request_id=sample.request_ids[k],
            timestamp_ns=sample.timestamps_ns[k],
            monotonic_ns=sample.monotonics_ns[k] if sample.monotonics_ns else 0,
            sample_rate=sample.sample_rate,
        )
        for given, target in ((sample.inputs, one.inputs), (sample.outputs, one.outputs)):
            for t in given:
                raw = _rows(t, start, count, total)
                target.add(name=t.name, datatype=t.datatype, shape=[count, *t.shape[1:]], raw=raw)
        out.append(one)
        start += count
    return out


def _rows(tensor: monitor_pb2.Tensor, start: int, count: int, total: int) -> bytes:
    """Rows ``start`` to ``start + count`` of a tensor of ``total`` rows, as raw bytes."""
    if tensor.datatype != "BYTES":
        width = len(tensor.raw) // total if total else 0
        return tensor.raw[start * width : (start + count) * width]
    per_row = math.prod(tensor.shape[1:])
    bounds, at = [0], 0
    while at < len(tensor.raw):  # each element: a 4-byte little-endian length, then its bytes
        at += 4 + struct.unpack_from("<I", tensor.raw, at)[0]
        bounds.append(at)
    return tensor.raw[bounds[start * per_row] : bounds[(start + count) * per_row]]


class Collector:
    """Accepts WebSockets on ``/v1/samples/stream``; ``stall=True`` accepts and never reads."""

    def __init__(self, port: int, *, stall: bool = False) -> None:
        self.port = port
        self.stall = stall
        self.samples: list[monitor_pb2.Sample] = []  # one per request (packed samples split)
        self.packed = 0  # packed samples received
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
                    for sample in batch.samples:
                        self.packed += bool(sample.rows)
                        self.samples.extend(unpacked(sample))
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
