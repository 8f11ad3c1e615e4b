"""Lineage records: ``<registry>/<model>/<version>/manifest.json``.

This module owns the :class:`Manifest` of a version (when it was made, the hash of its model file, its
signature, what it was trained on, how it validated, which version it descends from) and its JSON form
(sorted keys, indent 2). Loading tolerates keys it does not know, so that newer writers may add fields;
it refuses missing or malformed known fields with :class:`ManifestError`. Also: streamed file hashing.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from registry.checks import check_float, check_int, check_str
from registry.errors import ManifestError, NotFoundError, SignatureError
from registry.fsutil import write_durable
from registry.signature import Signature

__all__ = [
    "Manifest",
    "TrainingInfo",
    "ValidationInfo",
    "dump_manifest",
    "load_manifest",
    "sha256_file",
    "utc_now",
]

_SHA256 = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: Path) -> str:
    """Lowercase hex SHA-256 of the file at ``path``, read in chunks (never whole into memory)."""
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        raise NotFoundError(f"{path}: no such file") from None


def utc_now() -> str:
    """The current time as ISO 8601 UTC with millisecond precision, e.g. ``2025-01-31T12:00:00.000Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check_sha256(key: str, value: object) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise ManifestError(f"{key}: expected 64 lowercase hex digits, got {value!r}")
    return value


def _json_copy(key: str, value: object) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False, sort_keys=True))
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"{key}: not JSON-serialisable: {exc}") from None


@dataclass(frozen=True)
class TrainingInfo:
    """What a version was trained on: data location and hash, row count, and training parameters."""

    data_uri: str | None = None
    data_sha256: str | None = None
    rows: int | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.data_uri is not None:
            check_str("training.data_uri", self.data_uri, ManifestError)
        if self.data_sha256 is not None:
            _check_sha256("training.data_sha256", self.data_sha256)
        if self.rows is not None:
            check_int("training.rows", self.rows, ManifestError, minimum=0)
        if not isinstance(self.params, Mapping) or not all(isinstance(k, str) for k in self.params):
            raise ManifestError("training.params: expected a mapping with string keys")
        object.__setattr__(self, "params", _json_copy("training.params", dict(self.params)))


@dataclass(frozen=True)
class ValidationInfo:
    """How a version scored on held-out data: metric name -> finite float."""

    metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.metrics, Mapping):
            raise ManifestError("validation.metrics: expected a mapping of name to number")
        metrics = {
            check_str("validation.metrics key", k, ManifestError): check_float(
                f"validation.metrics.{k}", v, ManifestError
            )
            for k, v in self.metrics.items()
        }
        object.__setattr__(self, "metrics", metrics)


@dataclass(frozen=True)
class Manifest:
    """A version's lineage. ``artifacts`` maps an extra file's name (``reference.npz``...) to its SHA-256."""

    created_at: str
    model_sha256: str
    signature: Signature
    training: TrainingInfo = field(default_factory=TrainingInfo)
    validation: ValidationInfo = field(default_factory=ValidationInfo)
    parent_version: int | None = None
    notes: str = ""
    artifacts: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_str("created_at", self.created_at, ManifestError)
        try:
            stamp = datetime.fromisoformat(self.created_at)
        except ValueError:
            raise ManifestError(f"created_at: not ISO 8601: {self.created_at!r}") from None
        if stamp.utcoffset() is None or stamp.utcoffset() != UTC.utcoffset(None):
            raise ManifestError(f"created_at: must be UTC, got {self.created_at!r}")
        _check_sha256("model_sha256", self.model_sha256)
        for name, cls in (
            ("signature", Signature),
            ("training", TrainingInfo),
            ("validation", ValidationInfo),
        ):
            if not isinstance(getattr(self, name), cls):
                raise ManifestError(f"{name}: expected a {cls.__name__}")
        if self.parent_version is not None:
            check_int("parent_version", self.parent_version, ManifestError, minimum=1)
        check_str("notes", self.notes, ManifestError)
        if not isinstance(self.artifacts, Mapping):
            raise ManifestError("artifacts: expected a mapping of file name to sha256")
        artifacts = {check_str("artifacts key", k, ManifestError): v for k, v in self.artifacts.items()}
        for name, digest in artifacts.items():
            _check_sha256(f"artifacts.{name}", digest)
        object.__setattr__(self, "artifacts", artifacts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, the layout of ``manifest.json``."""
        return {
            "created_at": self.created_at,
            "model_sha256": self.model_sha256,
            "signature": self.signature.to_dict(),
            "training": {
                "data_uri": self.training.data_uri,
                "data_sha256": self.training.data_sha256,
                "rows": self.training.rows,
                "params": self.training.params,
            },
            "validation": {"metrics": self.validation.metrics},
            "parent_version": self.parent_version,
            "notes": self.notes,
            "artifacts": self.artifacts,
        }

    def to_json(self) -> str:
        """``manifest.json`` text: sorted keys, indent 2, trailing newline."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """Inverse of :meth:`to_dict`; unknown keys are ignored, ManifestError on missing/malformed ones."""
        try:
            training = _table(data, "training")
            validation = _table(data, "validation")
            return cls(
                created_at=_required(data, "created_at"),
                model_sha256=_required(data, "model_sha256"),
                signature=Signature.from_dict(_required(data, "signature")),
                training=TrainingInfo(
                    data_uri=training.get("data_uri"),
                    data_sha256=training.get("data_sha256"),
                    rows=training.get("rows"),
                    params=training.get("params", {}),
                ),
                validation=ValidationInfo(metrics=validation.get("metrics", {})),
                parent_version=data.get("parent_version"),
                notes=data.get("notes", ""),
                artifacts=data.get("artifacts", {}),
            )
        except SignatureError as exc:
            raise ManifestError(f"signature: {exc}") from None


def _required(data: Mapping[str, Any], key: str) -> Any:
    if key not in data:
        raise ManifestError(f"{key}: missing")
    return data[key]


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ManifestError(f"{key}: expected an object")
    return value


def load_manifest(path: Path) -> Manifest:
    """Read ``manifest.json`` at ``path``. NotFoundError if absent; ManifestError (naming the path) if bad."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise NotFoundError(f"{path}: no such manifest") from None
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path}: unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a JSON object")
    try:
        return Manifest.from_dict(data)
    except ManifestError as exc:
        raise ManifestError(f"{path}: {exc}") from None


def dump_manifest(manifest: Manifest, path: Path) -> None:
    """Write ``manifest`` as JSON to ``path`` (sorted keys, indent 2) and fsync it."""
    write_durable(path, manifest.to_json().encode("utf-8"))
