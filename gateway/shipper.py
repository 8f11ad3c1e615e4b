"""Shipper: the background task that streams sampled requests to the monitor over one WebSocket.

Contracts:
- Samples are coalesced into ``SampleBatch`` binary frames (DESIGN.md §3) of at most ``max_samples``
  samples or ``max_bytes`` bytes, or whatever is buffered every ``flush_interval`` seconds. Tensors travel
  as raw little-endian bytes, consecutive samples of one layout packed into one Sample
  (:func:`encode_batch`); serialization runs in a worker thread, except for frames of at most
  :data:`INLINE_SAMPLES` samples, whose encoding costs the event loop less than the hop would.
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
import operator
import random
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from gateway.background import cancel_and_wait
from gateway.codec import encode_array
from gateway.sampler import Sample, Sampler
from protos import monitor_pb2

log = logging.getLogger(__name__)


#: Frames of at most this many samples are encoded on the event loop: about 2-5 µs a sample, under the
#: 50-100 µs that handing them to a worker thread and back costs (the GIL hand-offs included). A 5 %
#: sample of a few thousand requests a second makes frames of a few samples every flush interval.
INLINE_SAMPLES = 8


def encode_batch(samples: list[Sample]) -> bytes:
    """One SampleBatch frame (blocking; the shipper runs it off the event loop unless the frame is small,
    see :data:`INLINE_SAMPLES`). Consecutive samples of one model, version, rate and tensor layout go as
    one packed Sample (monitor.proto: ``rows``, ``request_ids``, ``timestamps_ns``, ``monotonics_ns``; each
    tensor the samples' rows joined), a run of one as an ordinary Sample; the order of the rows is the
    samples' order either way."""
    batch = monitor_pb2.SampleBatch()
    start, count = 0, len(samples)
    while start < count:
        first = samples[start]
        layout = _layout(first)
        end = start + 1
        if layout is not None:
            while end < count and _layout(samples[end]) == layout:
                end += 1
        if end - start == 1:
            _add_sample(batch, first)
        else:
            _add_packed(batch, samples[start:end])
        start = end
    return batch.SerializeToString()


def _layout(sample: Sample) -> tuple[Any, ...] | None:
    """What samples must share to be packed; None for one that cannot be (a tensor without a batch
    dimension, or whose first dimension is not the sample's rows)."""
    tensors = sample.inputs + sample.outputs
    for _, _, array in tensors:
        if not array.ndim or len(array) != sample.rows:
            return None
    return (
        sample.model,
        sample.version,
        sample.rate,
        len(sample.inputs),
        [(name, datatype, array.dtype, array.shape[1:]) for name, datatype, array in tensors],
    )


_INPUTS, _OUTPUTS = operator.attrgetter("inputs"), operator.attrgetter("outputs")


def _add_sample(batch: monitor_pb2.SampleBatch, sample: Sample) -> None:
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


def _add_packed(batch: monitor_pb2.SampleBatch, group: list[Sample]) -> None:
    first = group[0]
    message = batch.samples.add(
        model=first.model,
        version=first.version,
        sample_rate=first.rate,
        rows=[sample.rows for sample in group],
        request_ids=[sample.request_id for sample in group],
        timestamps_ns=[sample.timestamp_ns for sample in group],
        monotonics_ns=[sample.monotonic_ns for sample in group],
    )
    for target, tensors_of in ((message.inputs, _INPUTS), (message.outputs, _OUTPUTS)):
        for position, (name, datatype, _) in enumerate(tensors_of(first)):
            joined = np.concatenate([tensors_of(sample)[position][2] for sample in group])
            target.add(name=name, datatype=datatype, shape=joined.shape, raw=encode_array(joined, datatype))


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
            if len(samples) <= INLINE_SAMPLES:
                frame = encode_batch(samples)  # cheaper than the hop to a thread and back
            else:
                frame = await asyncio.to_thread(encode_batch, samples)
            try:
                await ws.send_bytes(frame)
            except Exception:
                for sample in samples:
                    self.sampler.count(sample.model, "dropped", sample.rows)
                raise
            for sample in samples:
                self.sampler.count(sample.model, "sent", sample.rows)
