"""Array files that travel with a version: reference/golden rows and training data.

This module owns the contract of ``reference.npz`` and ``golden.npz`` (DESIGN.md §4): keys are
``input:<tensor>`` and ``output:<tensor>`` for tensors of the version's signature, loadable with
``allow_pickle=False``, of the signature's dtype and non-batch dimensions, all with the same number of
rows (dimension 0). :func:`read_npz` is the one place such a file is opened (never with pickles). It
also counts the rows of a training-data file from array headers only.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from registry.errors import NotFoundError, PublishError, RegistryError
from registry.signature import DYNAMIC, Signature, TensorSpec, numpy_dtype

__all__ = ["INPUT_PREFIX", "OUTPUT_PREFIX", "check_arrays", "data_rows", "read_npz", "validate_arrays"]

INPUT_PREFIX = "input:"
OUTPUT_PREFIX = "output:"


def validate_arrays(path: Path, signature: Signature, *, require_outputs: bool = False) -> int:
    """Check the ``.npz`` at ``path`` against ``signature``; return its row count.

    Every signature input must be present; with ``require_outputs`` every output too (golden files,
    whose outputs are compared). PublishError names the file and the key at fault.
    """
    arrays = read_npz(path, PublishError)
    try:
        return check_arrays(arrays, signature, require_outputs=require_outputs)
    except PublishError as exc:
        raise PublishError(f"{path}: {exc}") from None


def read_npz(path: Path, error: type[RegistryError], *, prefix: str = "") -> dict[str, np.ndarray[Any, Any]]:
    """The arrays of the ``.npz`` at ``path`` whose keys start with ``prefix``, loaded without pickles.

    NotFoundError if there is no such file; ``error`` naming the file (and the key, for an object array,
    which would need a pickle) if it is not a readable ``.npz`` of plain arrays.
    """
    if not path.is_file():
        raise NotFoundError(f"{path}: no such file")
    key = None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {}
            for key in npz.files:
                if key.startswith(prefix):
                    arrays[key] = npz[key]
    except ValueError as exc:
        if key is not None and "allow_pickle" in str(exc):
            raise error(
                f"{path}: key {key!r} holds Python objects, which cannot be loaded without pickles "
                "(the registry never loads pickles); store numbers, bools or fixed-width strings"
            ) from None
        raise error(f"{path}: not a readable .npz: {exc}") from None
    except Exception as exc:  # zipfile and format errors all mean "not a usable npz"
        raise error(f"{path}: not a readable .npz: {exc}") from None
    return arrays


def check_arrays(
    arrays: dict[str, np.ndarray[Any, Any]], signature: Signature, *, require_outputs: bool = False
) -> int:
    """Check loaded ``input:``/``output:`` arrays against ``signature``; return their row count.

    The rules of :func:`validate_arrays`; PublishError naming the key at fault (not the file).
    """
    return _check(arrays, signature, require_outputs)


def _check(arrays: dict[str, np.ndarray[Any, Any]], signature: Signature, require_outputs: bool) -> int:
    sides = {INPUT_PREFIX: signature.inputs, OUTPUT_PREFIX: signature.outputs}
    rows: set[int] = set()
    for key, array in arrays.items():
        prefix = next((p for p in sides if key.startswith(p)), None)
        if prefix is None:
            raise PublishError(f"key {key!r}: expected {INPUT_PREFIX}<tensor> or {OUTPUT_PREFIX}<tensor>")
        name = key[len(prefix) :]
        spec = next((s for s in sides[prefix] if s.name == name), None)
        if spec is None:
            known = [s.name for s in sides[prefix]]
            raise PublishError(f"key {key!r}: the model has no {prefix[:-1]} {name!r} (it has {known})")
        _check_array(key, array, spec)
        rows.add(array.shape[0])
    wanted = [INPUT_PREFIX + s.name for s in signature.inputs]
    if require_outputs:
        wanted += [OUTPUT_PREFIX + s.name for s in signature.outputs]
    missing = [k for k in wanted if k not in arrays]
    if missing:
        raise PublishError(f"missing keys {missing}")
    if len(rows) != 1:
        raise PublishError(f"arrays disagree on the number of rows: {sorted(rows)}")
    (count,) = rows
    if count < 1:
        raise PublishError("no rows")
    return count


def _check_array(key: str, array: np.ndarray[Any, Any], spec: TensorSpec) -> None:
    if spec.datatype == "BYTES":
        if array.dtype.kind not in "SU":
            raise PublishError(
                f"key {key!r}: BYTES tensor needs a bytes or str array, got dtype {array.dtype}"
            )
    elif array.dtype != numpy_dtype(spec.datatype):
        raise PublishError(
            f"key {key!r}: dtype {array.dtype}, expected {numpy_dtype(spec.datatype)} ({spec.datatype})"
        )
    if array.ndim != len(spec.shape) or array.ndim == 0:
        raise PublishError(f"key {key!r}: shape {list(array.shape)}, expected rows of {list(spec.shape)}")
    for axis in range(1, array.ndim):
        if spec.shape[axis] not in (DYNAMIC, array.shape[axis]):
            raise PublishError(f"key {key!r}: shape {list(array.shape)}, expected rows of {list(spec.shape)}")


def data_rows(path: Path) -> int | None:
    """Rows of a training-data file, read from array headers without loading the data.

    ``.npy``: its first dimension. ``.npz``: the first dimension shared by all its arrays. None for
    other formats, 0-d arrays, or arrays that disagree.
    """
    try:
        if path.suffix == ".npy":
            with path.open("rb") as f:
                shapes = [_npy_shape(f)]
        elif path.suffix == ".npz":
            with zipfile.ZipFile(path) as zf:
                shapes = []
                for member in zf.namelist():
                    if member.endswith(".npy"):
                        with zf.open(member) as f:
                            shapes.append(_npy_shape(f))
        else:
            return None
    except (OSError, ValueError, zipfile.BadZipFile):
        return None
    firsts = {shape[0] if shape else None for shape in shapes}
    if len(firsts) != 1:
        return None
    (rows,) = firsts
    return rows


def _npy_shape(f: Any) -> tuple[int, ...]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, _ = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, _ = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"unsupported .npy version {version}")
    return tuple(shape)
