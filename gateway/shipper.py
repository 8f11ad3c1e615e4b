"""Shipper: the background task that streams sampled requests to the monitor over one WebSocket.

Contracts:
- Samples are coalesced into ``SampleBatch`` binary frames (DESIGN.md §3) of at most ``max_samples``
  samples or ``max_bytes`` bytes, or whatever is buffered every ``flush_interval`` seconds. Tensors travel
  as raw little-endian bytes; serialization runs in a worker thread, never on the event loop.
- On a failed connect or send it reconnects with exponential backoff and full jitter. While disconnected,
  the sampler drops (and counts) new samples and whatever was buffered.
- :meth:`Shipper.stop` flushes what is buffered within ``grace`` seconds, then closes; rows it could not
  send are counted as dropped.
- A ``wss://`` URL is verified against ``tls_ca`` (a CA bundle, read at each connect so a rotated CA is
  followed) when given, else against the system's trust store; ``token_file`` likewise at each connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from pathlib import Path

import aiohttp

from gateway.background import cancel_and_wait
from gateway.codec import encode_array
from gateway.sampler import Sample, Sampler
from protos import monitor_pb2

log = logging.getLogger(__name__)


def encode_batch(samples: list[Sample]) -> bytes:
    """One SampleBatch frame (blocking: run it off the event loop)."""
    batch = monitor_pb2.SampleBatch()
    for sample in samples:
        message = batch.samples.add(
            model=sample.model,
            version=sample.version,
            request_id=sample.request_id,
            timestamp_ns=sample.timestamp_ns,
            monotonic_ns=sample.monotonic_ns,
            sample_rate=sample.rate,
        )
        for target, tensors in ((message.inputs, sample.inputs), (message.outputs, sample.outputs)):
            for name, datatype, array in tensors:
                target.add(name=name, datatype=datatype, shape=array.shape, raw=encode_array(array, datatype))
    return batch.SerializeToString()


def bearer_header(token_file: Path | None) -> dict[str, str]:
    """The Authorization header carrying the token in ``token_file`` (none without a file); OSError when
    the file is unreadable or empty, which the shipper treats as a failed connect."""
    if token_file is None:
        return {}
    token = token_file.read_text().strip()
    if not token:
        raise OSError(f"monitor token file {token_file} is empty")
    return {"Authorization": f"Bearer {token}"}


def monitor_ssl(ca_file: Path) -> ssl.SSLContext:
    """A client context that verifies the monitor's certificate (and its name) against ``ca_file`` only;
    OSError (ssl.SSLError included) when the file is unreadable or holds no certificate."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class Shipper:
    """Owns the WebSocket to the monitor; ``start()`` it, ``await stop()`` it."""

    def __init__(
        self,
        sampler: Sampler,
        url: str,
        *,
        max_samples: int = 256,
        max_bytes: int = 4 * 1024 * 1024,
        flush_interval: float = 0.05,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        token_file: Path | None = None,
        tls_ca: Path | None = None,
    ) -> None:
        self.sampler = sampler
        self.url = url
        self.max_samples = max_samples
        self.max_bytes = max_bytes
        self.flush_interval = flush_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.token_file = token_file  # the monitor's ingest token, read at each connect (rotation)
        self.tls_ca = tls_ca  # the CA of a wss:// monitor, read at each connect (rotation)
        self.connects = 0
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sample-shipper")

    async def stop(self, grace: float = 2.0) -> None:
        """Flushes buffered samples for up to ``grace`` seconds, then closes the socket."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), grace)
        except TimeoutError:
            await cancel_and_wait(task)
        self.sampler.drop_all()

    async def _run(self) -> None:
        backoff = self.backoff_initial
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    headers = bearer_header(self.token_file)
                    tls = monitor_ssl(self.tls_ca) if self.tls_ca is not None else True
                    async with session.ws_connect(
                        self.url, heartbeat=10.0, max_msg_size=0, headers=headers, ssl=tls
                    ) as ws:
                        self._ws = ws
                        self.connects += 1
                        self.sampler.connected = True
                        backoff = self.backoff_initial
                        log.info("shipping samples to %s", self.url)
                        if await self._pump(ws):
                            return
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    level = logging.WARNING if self.sampler.connected else logging.DEBUG  # once per outage
                    log.log(
                        level, "monitor at %s unreachable (%s); dropping samples, retrying", self.url, exc
                    )
                finally:
                    self._ws = None
                self.sampler.connected = False
                self.sampler.drop_all()
                if self._stopping.is_set():
                    return
                delay = random.uniform(0, backoff)  # full jitter
                backoff = min(backoff * 2, self.backoff_max)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                if self._stopping.is_set():
                    return

    async def _pump(self, ws: aiohttp.ClientWebSocketResponse) -> bool:
        """Sends frames until the socket fails (False) or the shipper is stopping and empty (True)."""
        while True:
            samples = self.sampler.take(self.max_samples, self.max_bytes)
            if not samples:
                if self._stopping.is_set():
                    await ws.close()
                    return True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.flush_interval)
                if ws.closed:
                    raise aiohttp.ClientConnectionError("monitor closed the socket")
                continue
            frame = await asyncio.to_thread(encode_batch, samples)
            try:
                await ws.send_bytes(frame)
            except Exception:
                for sample in samples:
                    self.sampler.count(sample.model, "dropped", sample.rows)
                raise
            for sample in samples:
                self.sampler.count(sample.model, "sent", sample.rows)
