"""Warm-up: the runs of a freshly loaded version before it is published, which seed its latency profile.

Contracts:
- What it runs (``[warmup].mode`` in ``model.toml``, :func:`warmup_data`): "auto" takes the inputs of the
  version's ``golden.npz``, else the input rows of its ``reference.npz``, else synthetic data (zeros, and
  empty strings for BYTES; dynamic non-batch dimensions 1); "file" takes the ``input:<tensor>`` arrays of
  ``[warmup].file`` inside the version directory; "off" runs nothing, and the profile stays unseeded
  (it predicts 0, so admission lets every request in, until served batches teach it).
- :func:`seed_profiles` runs every instance at each profiled batch size three times: the first run is
  discarded (allocation, kernel selection), the next two seed the profile. The version's own rows are
  taken in order and repeated as needed to fill the batch size.
- A run that fails on the version's own data fails the load (:class:`ModelLoadError` naming the data).
  A run that fails on synthetic data (which may be no valid input: a STRING->INT32 cast cannot parse "")
  is one warning per instance, and that batch size stays unseeded. Outputs of the wrong count or row
  count fail the load whatever the data: the batcher could not split such outputs per request.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.codec import NUMPY_DTYPES
from gateway.errors import ModelLoadError
from gateway.profile import LatencyProfile
from gateway.runner import Runner
from registry.artifacts import read_inputs
from registry.config import WarmupConfig
from registry.errors import RegistryError
from registry.layout import VersionInfo
from registry.signature import Signature

log = logging.getLogger(__name__)

Arrays = dict[str, npt.NDArray[Any]]


@dataclass(frozen=True)
class WarmupData:
    """Where warm-up inputs come from (a file name, or "synthetic data") and the inputs themselves, by
    tensor name; ``inputs`` is None for synthetic data, which is made per batch size."""

    source: str
    inputs: Arrays | None = None


SYNTHETIC = WarmupData("synthetic data")


def warmup_data(where: VersionInfo, config: WarmupConfig, signature: Signature) -> WarmupData | None:
    """The data to warm ``where`` up with under ``config``; None for mode "off". ModelLoadError when the
    version's own data cannot be read (or the file of mode "file" is missing)."""
    if config.mode == "off":
        return None
    if config.mode == "file":
        candidates = [where.path / config.file]
    else:
        candidates = [path for path in (where.golden_path, where.reference_path) if path.is_file()]
    for path in candidates:
        try:
            return WarmupData(path.name, read_inputs(path, signature, RegistryError))
        except RegistryError as exc:
            raise ModelLoadError(f"{where.model}:{where.version}: warm-up data: {exc}") from exc
    return SYNTHETIC


def seed_profiles(
    runner: Runner,
    profiles: list[LatencyProfile],
    signature: Signature,
    limit: int,
    data: WarmupData,
    *,
    label: str,
) -> None:
    """Warm-up (blocking; off the event loop): every instance at each profiled batch size, as above."""
    names = [spec.name for spec in signature.outputs]
    for instance, profile in enumerate(profiles):
        failed: dict[int, str] = {}
        for rows in profile.sizes if limit > 0 else (1,):
            if data.inputs is None:
                feeds = warmup_feeds(signature, rows)
            else:
                feeds = _own_feeds(data.inputs, signature, rows if limit > 0 else None)
            for attempt in range(3):
                begin = time.perf_counter()
                try:
                    outputs = runner.run_sync(instance, feeds, names)
                except Exception as exc:
                    if data.inputs is not None:
                        raise ModelLoadError(
                            f"{label}: warm-up with {data.source} failed at {rows} rows: {exc}"
                        ) from exc
                    failed[rows] = str(exc)
                    break
                elapsed = time.perf_counter() - begin
                if len(outputs) != len(names):
                    raise ModelLoadError(
                        f"{label}: warm-up returned {len(outputs)} outputs, expected {len(names)}"
                    )
                if limit > 0 and any(out.ndim == 0 or out.shape[0] != rows for out in outputs):
                    raise ModelLoadError(
                        f"{label}: warm-up at {rows} rows returned outputs without {rows} rows"
                    )
                if attempt:
                    profile.observe(rows, elapsed)
                    profile.observe_compute(rows, elapsed)
        if failed:
            log.warning(
                "%s instance %d: warm-up with synthetic data failed at batch sizes %s (%s); it serves with "
                "no latency estimate for them (admits every request) until batches are served; ship "
                "golden.npz or reference.npz, or set [warmup] in model.toml",
                label,
                instance,
                sorted(failed),
                next(iter(failed.values())),
            )


def warmup_feeds(signature: Signature, rows: int = 1) -> Arrays:
    """Zeros (empty strings for BYTES) per input: ``rows`` on a dynamic batch dim, other dynamic dims 1."""
    feeds: Arrays = {}
    for spec in signature.inputs:
        shape = tuple((rows if axis == 0 else 1) if d < 0 else d for axis, d in enumerate(spec.shape))
        if spec.datatype == "BYTES":
            feeds[spec.name] = np.full(shape, "", dtype=object)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=NUMPY_DTYPES[spec.datatype])
    return feeds


def _own_feeds(inputs: Arrays, signature: Signature, rows: int | None) -> Arrays:
    """``rows`` rows of each input, repeated in order as needed; with ``rows`` None (no batch dim), as many
    as the input's fixed first dimension (all stored rows when it is dynamic)."""
    feeds: Arrays = {}
    for spec in signature.inputs:
        array = inputs[spec.name]
        count = rows if rows is not None else (spec.shape[0] if spec.shape[0] >= 0 else array.shape[0])
        feeds[spec.name] = onnx_feed(np.take(array, np.arange(count) % array.shape[0], axis=0))
    return feeds


def onnx_feed(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """numpy S/U string arrays from npz become the object arrays of str that onnxruntime expects."""
    if array.dtype.kind in "SU":
        text = np.char.decode(array, "utf-8") if array.dtype.kind == "S" else array
        return text.astype(object)
    return array
