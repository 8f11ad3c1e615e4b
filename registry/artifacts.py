"""Array files that travel with a version: reference/golden rows and training data.

This module owns the contract of ``reference.npz``, ``golden.npz`` and ``training.npz`` (DESIGN.md §4):
keys are ``input:<tensor>`` and ``output:<tensor>`` for tensors of the version's signature, loadable with
``allow_pickle=False``, of the signature's dtype and non-batch dimensions, all with the same number of
rows (dimension 0). Optional ``label:<name>`` keys hold ground truth for those rows (finite numbers,
1-D or ``[n, 1]``): a labelled reference, from which the monitor learns how far the version's
probabilities can be trusted (:func:`read_reference_labels`). :func:`read_npz` is the one place such a
file is opened (never with pickles). It also counts the rows of a training-data file from array headers
only, and picks the model inputs out of a training-data ``.npz`` (:func:`training_inputs`: the rows
``training.npz`` stores, so the monitor can compare serving traffic with what the model was trained
on), and reads the input rows of any such file (:func:`read_inputs`: what the gateway warms a version
up with).
"""

from __future__ import annotations

import zipfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from registry.errors import NotFoundError, PublishError, RegistryError
from registry.signature import DYNAMIC, Signature, TensorSpec, numpy_dtype

__all__ = [
    "INPUT_PREFIX",
    "LABEL_PREFIX",
    "OUTPUT_PREFIX",
    "TRAINING_MAX_BYTES",
    "TRAINING_MAX_ROWS",
    "TRAINING_SEED",
    "check_arrays",
    "data_rows",
    "read_inputs",
    "read_npz",
    "read_reference_labels",
    "training_inputs",
    "validate_arrays",
]

INPUT_PREFIX = "input:"
OUTPUT_PREFIX = "output:"
LABEL_PREFIX = "label:"
TRAINING_MAX_ROWS = 20_000
"""At most this many training rows are kept in ``training.npz`` ..."""
TRAINING_MAX_BYTES = 64 * 1024 * 1024
"""... and at most as many as fit in this many bytes (wide inputs keep fewer rows, at least 1000)."""
TRAINING_SEED = 0
"""Seed of the subsample: ``numpy.random.default_rng(TRAINING_SEED).choice(rows, n, replace=False)``,
in the original order."""


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


def read_npz(
    path: Path, error: type[RegistryError], *, prefix: str = "", keys: Collection[str] | None = None
) -> dict[str, np.ndarray[Any, Any]]:
    """The arrays of the ``.npz`` at ``path`` whose keys start with ``prefix`` (and are in ``keys``, when
    given), loaded without pickles.

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
                if key.startswith(prefix) and (keys is None or key in keys):
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


def read_inputs(
    path: Path, signature: Signature, error: type[RegistryError]
) -> dict[str, np.ndarray[Any, Any]]:
    """The ``input:<tensor>`` arrays of the ``.npz`` at ``path``, keyed by tensor name.

    Every signature input must be there, checked as in :func:`check_arrays` (``output:`` keys are not
    read). NotFoundError if there is no such file; ``error`` naming the file and the key at fault.
    """
    arrays = read_npz(path, error, prefix=INPUT_PREFIX)
    try:
        check_arrays(arrays, signature)
    except PublishError as exc:
        raise error(f"{path}: {exc}") from None
    return {key[len(INPUT_PREFIX) :]: array for key, array in arrays.items()}


def check_arrays(
    arrays: dict[str, np.ndarray[Any, Any]], signature: Signature, *, require_outputs: bool = False
) -> int:
    """Check loaded ``input:``/``output:`` (and ``label:``) arrays against ``signature``; return their row
    count.

    The rules of :func:`validate_arrays`; PublishError naming the key at fault (not the file). A
    ``label:<name>`` array needs a non-empty name, finite numbers (bool, integer or float) and shape
    ``[n]`` or ``[n, 1]``, with the same ``n`` as every other array.
    """
    return _check(arrays, signature, require_outputs)


def _check(arrays: dict[str, np.ndarray[Any, Any]], signature: Signature, require_outputs: bool) -> int:
    sides = {INPUT_PREFIX: signature.inputs, OUTPUT_PREFIX: signature.outputs}
    rows: set[int] = set()
    for key, array in arrays.items():
        if key.startswith(LABEL_PREFIX):
            _check_label(key, array)
            rows.add(array.shape[0])
            continue
        prefix = next((p for p in sides if key.startswith(p)), None)
        if prefix is None:
            expected = f"{INPUT_PREFIX}<tensor>, {OUTPUT_PREFIX}<tensor> or {LABEL_PREFIX}<name>"
            raise PublishError(f"key {key!r}: expected {expected}")
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


def _check_label(key: str, array: np.ndarray[Any, Any]) -> None:
    if key == LABEL_PREFIX:
        raise PublishError(f"key {key!r}: a label needs a name ({LABEL_PREFIX}<name>)")
    if array.dtype.kind not in "biuf":
        raise PublishError(
            f"key {key!r}: labels must be numbers (bool, integer or float), got dtype {array.dtype}"
        )
    if not (array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1)):
        raise PublishError(f"key {key!r}: shape {list(array.shape)}, expected [rows] or [rows, 1]")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise PublishError(f"key {key!r}: labels must be finite (NaN or infinity found)")


def read_reference_labels(
    path: Path, signature: Signature | None = None, error: type[RegistryError] = RegistryError
) -> dict[str, np.ndarray[Any, Any]]:
    """The ``label:<name>`` arrays of the reference file at ``path``, keyed by ``name``, each 1-D (a
    ``[n, 1]`` array is flattened); ``{}`` when it has none.

    With ``signature`` the whole file is checked as at publish (:func:`check_arrays`); without, the
    labels are checked and every array must share their row count. NotFoundError if there is no such
    file; ``error`` naming the file and the key at fault if it is unreadable or invalid.
    """
    arrays = read_npz(path, error)
    labels = {key: array for key, array in arrays.items() if key.startswith(LABEL_PREFIX)}
    try:
        if signature is not None:
            check_arrays(arrays, signature)
        for key, array in labels.items():
            _check_label(key, array)
        rows = {array.shape[0] if array.ndim else -1 for array in arrays.values()}
        if labels and len(rows) != 1:
            raise PublishError(f"arrays disagree on the number of rows: {sorted(rows)}")
    except PublishError as exc:
        raise error(f"{path}: {exc}") from None
    return {key[len(LABEL_PREFIX) :]: array.reshape(-1) for key, array in labels.items()}


def training_inputs(path: Path, signature: Signature) -> dict[str, np.ndarray[Any, Any]] | None:
    """The model inputs in the training-data file at ``path``, as ``input:<tensor>`` arrays, subsampled to
    at most :data:`TRAINING_MAX_ROWS` rows (and :data:`TRAINING_MAX_BYTES`); None when it holds none.

    Only an ``.npz`` can hold them: under ``input:<tensor>`` keys (then exactly the signature's inputs),
    or, with no such key, under the bare name ``<tensor>`` of every input (other keys, such as labels,
    are ignored). Numbers are cast to the input's dtype when numpy calls that a same-kind cast (float64
    to FP32); anything else must match as in :func:`check_arrays`. PublishError names the file and the
    key at fault.
    """
    if path.suffix != ".npz":
        return None
    arrays = read_npz(path, PublishError, prefix=INPUT_PREFIX)
    if not arrays:
        names = [spec.name for spec in signature.inputs]
        bare = read_npz(path, PublishError, keys=set(names))
        if not names or len(bare) != len(names):
            return None
        arrays = {INPUT_PREFIX + name: bare[name] for name in names}
    specs = {INPUT_PREFIX + spec.name: spec for spec in signature.inputs}
    for key, array in arrays.items():
        spec = specs.get(key)
        if spec is None or spec.datatype == "BYTES" or array.dtype.kind not in "biuf":
            continue
        target = numpy_dtype(spec.datatype)
        if array.dtype != target and np.can_cast(array.dtype, target, casting="same_kind"):
            arrays[key] = array.astype(target)
    try:
        rows = check_arrays(arrays, signature)
    except PublishError as exc:
        raise PublishError(f"{path}: training inputs: {exc}") from None
    row_bytes = sum(array[:1].nbytes for array in arrays.values())
    keep = min(TRAINING_MAX_ROWS, max(1000, TRAINING_MAX_BYTES // max(row_bytes, 1)))
    if rows > keep:
        pick = np.sort(np.random.default_rng(TRAINING_SEED).choice(rows, keep, replace=False))
        arrays = {key: array[pick] for key, array in arrays.items()}
    return arrays


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
