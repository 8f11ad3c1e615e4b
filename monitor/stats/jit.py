"""What every numba kernel of :mod:`monitor.stats` shares: the one way they are compiled (eager, from an
explicit signature, ``cache=True``, ``nogil=True``), the array types, and the tuning constants.

numba is imported only under ``monitor/stats/`` (DESIGN: numba has one home).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

__all__ = [
    "CELLS",
    "EPS",
    "F64",
    "I64",
    "MAX_STEPS",
    "PARALLEL_MIN_VALUES",
    "THREADED_SORT_VALUES",
    "BLOCK_ROWS",
    "jit",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
_Fn = TypeVar("_Fn", bound=Callable[..., Any])

EPS = 1e-4
"""A zero bin proportion counts as EPS in PSI (no renormalisation)."""
CELLS = 4096
"""Lookup-table cells per feature."""
MAX_STEPS = 8
"""A feature whose fullest lookup cell holds more edges than this bins by binary search within the cell."""
PARALLEL_MIN_VALUES = 1 << 16
"""Ingest batches of at least this many values use the multi-threaded kernel."""
THREADED_SORT_VALUES = 1 << 20
"""Exact-KS windows of at least this many values are sorted by several threads."""
BLOCK_ROWS = 256
"""Rows binned per block in the ingest kernels (a block's cache lines stay warm)."""


def jit(signature: str, *, parallel: bool = False) -> Callable[[_Fn], _Fn]:
    """The kernel compiled eagerly for ``signature`` (``NUMBA_DISABLE_JIT=1``: plain Python)."""
    return cast(Callable[[_Fn], _Fn], numba.njit(signature, cache=True, nogil=True, parallel=parallel))
