"""Writing to the registry: publish a version, pin, unpin, roll back.

This module owns every change to a registry directory, and the crash-safety of each:

* :func:`publish` validates its inputs, writes everything into ``<model>/.tmp-<random>/`` (each file
  fsynced, ``READY`` last), reserves the next version number with an exclusive ``mkdir`` and renames the
  temp directory onto that (empty) reservation. A crash leaves a ``.tmp-*`` directory or an empty
  numeric directory, both invisible to :func:`registry.layout.scan_registry`; concurrent publishers get
  distinct numbers because ``mkdir`` succeeds for one of them only.
* :func:`pin` writes ``<model>/pin`` with temp file + ``os.replace``; :func:`unpin` removes it;
  :func:`rollback` pins the highest READY version below the one the gateway serves by default
  (:func:`registry.serving.serving_default`) that a gateway would load.

Deleting versions is :mod:`registry.retention`'s job.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from registry.artifacts import data_rows, training_inputs, validate_arrays
from registry.checks import check_int
from registry.errors import ConfigError, NotFoundError, PublishError
from registry.fsutil import copy_durable, fsync_dir, replace_atomic, write_durable
from registry.layout import (
    GOLDEN_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    PIN_FILE,
    READY,
    REFERENCE_FILE,
    TMP_PREFIX,
    TRAINING_FILE,
    ModelInfo,
    VersionInfo,
    check_model_name,
    numeric_dirs,
    read_pin,
    ready_versions,
    scan_model,
    version_info,
)
from registry.manifest import (
    Manifest,
    TrainingInfo,
    ValidationInfo,
    dump_manifest,
    load_manifest,
    sha256_file,
    utc_now,
)
from registry.serving import IntegrityCache, ServingDefault, serving_default_of
from registry.signature import breaking_changes, read_signature
from registry.signing import TrustedKeys, sign_version

__all__ = ["Rollback", "pin", "publish", "rollback", "unpin"]

_MAX_CLAIMS = 1000


def publish(
    root: Path,
    model: str,
    onnx_path: Path,
    *,
    reference: Path | None = None,
    golden: Path | None = None,
    train_data: Path | None = None,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    notes: str = "",
    parent_version: int | None = None,
    sign_key: Path | None = None,
) -> VersionInfo:
    """Publish ``onnx_path`` as the next version of ``model`` under ``root``; return the READY version.

    The signature is read from the ONNX file; ``reference``/``golden`` must match it (see
    :func:`registry.artifacts.validate_arrays`; golden needs every output too; optional ``label:<name>``
    keys, the ground truth of the rows, are checked there too). ``train_data`` is hashed
    and its rows counted (``.npy``/``.npz``); its ``file://`` URI is recorded, the file is not copied.
    When it is an ``.npz`` holding the model inputs (:func:`registry.artifacts.training_inputs`), a
    deterministic subsample of them is stored as ``training.npz`` (keys ``input:<tensor>``) and recorded
    in the manifest's artifacts: the training profile of the monitor's skew check.
    ``sign_key`` (an Ed25519 private key, :mod:`registry.signing`) signs the manifest before READY.
    ``parent_version`` defaults to the highest READY version, and must be READY when given. The version
    number is one above the highest numeric directory, READY or not. Creates ``root/model`` if needed.
    Raises PublishError (bad name, arrays, parent...), NotFoundError (missing input file) or
    SignatureError (model not expressible in V2); nothing is left visible on failure.
    """
    try:
        check_model_name(model)
    except NotFoundError as exc:
        raise PublishError(str(exc)) from None
    signature = read_signature(onnx_path)
    extras = {REFERENCE_FILE: reference, GOLDEN_FILE: golden}
    for name, path in extras.items():
        if path is not None:
            validate_arrays(path, signature, require_outputs=name == GOLDEN_FILE)
    training = _training_info(train_data, params)
    train_inputs = training_inputs(train_data, signature) if train_data is not None else None
    validation = ValidationInfo(metrics=dict(metrics or {}))
    model_dir = root / model
    model_dir.mkdir(parents=True, exist_ok=True)
    parent = _parent(model_dir, parent_version)

    tmp = model_dir / f"{TMP_PREFIX}{secrets.token_hex(8)}"
    tmp.mkdir()
    try:
        model_sha = copy_durable(onnx_path, tmp / MODEL_FILE)
        hashes = {name: copy_durable(path, tmp / name) for name, path in extras.items() if path is not None}
        if train_inputs is not None:
            hashes[TRAINING_FILE] = _write_npz(tmp / TRAINING_FILE, train_inputs)
        manifest = Manifest(
            created_at=utc_now(),
            model_sha256=model_sha,
            signature=signature,
            training=training,
            validation=validation,
            parent_version=parent,
            notes=notes,
            artifacts=hashes,
        )
        dump_manifest(manifest, tmp / MANIFEST_FILE)
        if sign_key is not None:  # before READY: a signed version is never visible unsigned
            sign_version(tmp, sign_key)
        write_durable(tmp / READY, b"")
        fsync_dir(tmp)
        version = _claim_version(tmp, model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return VersionInfo(model, version, model_dir / str(version))


def _training_info(train_data: Path | None, params: Mapping[str, Any] | None) -> TrainingInfo:
    if train_data is None:
        return TrainingInfo(params=dict(params or {}))
    if not train_data.is_file():
        raise NotFoundError(f"{train_data}: no such training-data file")
    return TrainingInfo(
        data_uri=train_data.resolve().as_uri(),
        data_sha256=sha256_file(train_data),
        rows=data_rows(train_data),
        params=dict(params or {}),
    )


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray[Any, Any]]) -> str:
    """Write ``arrays`` as an ``.npz`` at ``path`` (fsynced); return the SHA-256 of its bytes."""
    buffer = io.BytesIO()
    plain: dict[str, Any] = dict(arrays)  # arrays read without pickles: loadable with allow_pickle=False
    np.savez(buffer, **plain)
    data = buffer.getvalue()
    write_durable(path, data)
    return hashlib.sha256(data).hexdigest()


def _parent(model_dir: Path, parent_version: int | None) -> int | None:
    ready = ready_versions(model_dir)
    if parent_version is None:
        return ready[-1] if ready else None
    check_int("parent_version", parent_version, PublishError, minimum=1)
    if parent_version not in ready:
        raise PublishError(f"parent_version {parent_version}: no such READY version of {model_dir.name}")
    return parent_version


def _claim_version(tmp: Path, model_dir: Path) -> int:
    """Reserve the next free number with mkdir (exclusive), then rename ``tmp`` onto the empty reservation."""
    for _ in range(_MAX_CLAIMS):
        version = max(numeric_dirs(model_dir), default=0) + 1
        target = model_dir / str(version)
        try:
            target.mkdir()
        except FileExistsError:
            continue  # a concurrent publisher took it; look again
        try:
            os.rename(tmp, target)
        except OSError:
            target.rmdir()
            raise
        fsync_dir(model_dir)
        return version
    raise PublishError(f"{model_dir}: could not claim a version number after {_MAX_CLAIMS} attempts")


def pin(root: Path, model: str, version: int) -> VersionInfo:
    """Pin ``model`` to READY ``version`` (atomically replacing any pin); NotFoundError if not READY."""
    info = version_info(root, model, version)
    replace_atomic(root / model / PIN_FILE, f"{version}\n".encode("ascii"))
    return info


def unpin(root: Path, model: str) -> int | None:
    """Remove the pin of ``model``; return the version it held (None if none or unreadable).

    NotFoundError if the model directory does not exist.
    """
    model_dir = root / check_model_name(model)
    if not model_dir.is_dir():
        raise NotFoundError(f"model {model!r} not found in {root}")
    try:
        previous = read_pin(model_dir)
    except ConfigError:  # a corrupt pin is exactly what unpin must be able to remove
        previous = None
    (model_dir / PIN_FILE).unlink(missing_ok=True)
    fsync_dir(model_dir)
    return previous


@dataclass(frozen=True)
class Rollback:
    """What :func:`rollback` did: pinned ``target`` in place of ``previous``, the version the gateway
    served by default (``serving``, :func:`registry.serving.serving_default`), passing over the READY
    versions below it in ``skipped`` (version -> why a gateway would refuse it: its load-check problems,
    or a breaking signature change against ``previous``)."""

    target: VersionInfo
    previous: int
    skipped: dict[int, list[str]]
    serving: ServingDefault

    @property
    def version(self) -> int:
        """The version now pinned."""
        return self.target.version


def rollback(root: Path, model: str, *, trusted: TrustedKeys | None = None) -> Rollback:
    """Pin the previous good version: the highest READY version below the one the gateway serves by
    default now (:func:`registry.serving.serving_default`: the intact pin, else the policy's highest
    intact version) that a gateway would load in its place: its files pass the load checks the registry
    can make (:func:`registry.verify.verify_version` with ``trusted``, the gateway's ``--trusted-keys``:
    manifest, SHA-256, signature; no golden run), and its signature is no breaking change against the
    serving version's unless ``[versions].allow_breaking_signature``.

    So a corrupt version above the served one (which the gateway already passes over) is not what is
    rolled back from: rolling back always changes what is served. NotFoundError if the name is invalid
    or the model has no READY version; PublishError if no READY version passes its checks, if no version
    is older than the served one, or none of the older ones would load (the message says why for each).
    """
    model_dir = root / check_model_name(model)
    if not model_dir.is_dir():
        raise NotFoundError(f"model {model!r} not found in {root}")
    cache = IntegrityCache(scan_model(model_dir), trusted)
    info = cache.info
    serving = serving_default_of(cache)
    current = serving.version
    if current is None:
        if not info.versions:
            raise NotFoundError(f"{model}: no READY version")
        reasons = "; ".join(f"{v}: {p[0]}" for v, p in serving.skipped.items())
        raise PublishError(
            f"{model}: no READY version passes its load checks, nothing to roll back ({reasons})"
        )
    older = [v for v in reversed(info.versions) if v < current]
    if not older:
        raise PublishError(f"{model}: no READY version older than {current} to roll back to")
    skipped: dict[int, list[str]] = {}
    for version in older:
        problems = cache.check(version) or _breaking(info, current, version)
        if not problems:
            return Rollback(pin(root, model, version), current, skipped, serving)
        skipped[version] = problems
    reasons = "; ".join(f"{v}: {p[0]}" for v, p in skipped.items())
    raise PublishError(f"{model}: no intact READY version older than {current} to roll back to ({reasons})")


def _breaking(info: ModelInfo, serving: int, candidate: int) -> list[str]:
    """Why the gateway would refuse ``candidate`` while ``serving`` serves: a breaking signature change
    (both manifests load: the caller checked them), unless the model allows breaking changes."""
    if info.config.versions.allow_breaking_signature:
        return []
    old = load_manifest(info.version(serving).manifest_path).signature
    new = load_manifest(info.version(candidate).manifest_path).signature
    changes = breaking_changes(old, new)
    if not changes:
        return []
    return [
        f"breaking signature change against the serving version {serving} ({'; '.join(changes)}); "
        "the gateway would refuse it unless [versions].allow_breaking_signature = true"
    ]
