"""Manifests: JSON round trip, field validation, tolerant loading, streamed hashing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from registry.errors import ManifestError, NotFoundError
from registry.manifest import (
    Manifest,
    TrainingInfo,
    ValidationInfo,
    dump_manifest,
    load_manifest,
    sha256_file,
    utc_now,
)
from registry.signature import Signature, TensorSpec

SHA = "ab" * 32
HEAD = {"created_at": "2025-01-31T12:00:00Z", "model_sha256": SHA}
SIGNATURE = Signature(
    inputs=(TensorSpec("input", "FP32", (-1, 16)),),
    outputs=(TensorSpec("probabilities", "FP32", (-1, 2)), TensorSpec("label", "INT64", (-1,))),
)


def full_manifest() -> Manifest:
    return Manifest(
        created_at="2025-01-31T12:00:00.123Z",
        model_sha256=SHA,
        signature=SIGNATURE,
        training=TrainingInfo(
            data_uri="file:///data/train.npz",
            data_sha256="cd" * 32,
            rows=12000,
            params={"lr": 0.5, "layers": [16, 2], "nested": {"a": None}},
        ),
        validation=ValidationInfo(metrics={"accuracy": 0.81, "count": 3}),
        parent_version=1,
        notes="second try",
        artifacts={"reference.npz": "ef" * 32},
    )


def test_round_trip_through_a_file(tmp_path: Path) -> None:
    manifest = full_manifest()
    path = tmp_path / "manifest.json"
    dump_manifest(manifest, path)
    assert load_manifest(path) == manifest
    text = path.read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"
    assert json.loads(text)["training"]["rows"] == 12000


def test_minimal_manifest_and_defaults() -> None:
    manifest = Manifest(created_at=utc_now(), model_sha256=SHA, signature=SIGNATURE)
    assert manifest.training == TrainingInfo(None, None, None, {})
    assert manifest.validation.metrics == {}
    assert manifest.parent_version is None
    assert Manifest.from_dict(json.loads(manifest.to_json())) == manifest


def test_values_are_normalised() -> None:
    manifest = full_manifest()
    assert type(manifest.validation.metrics["count"]) is float
    params = {"shape": (1, 2)}
    training = TrainingInfo(params=params)
    assert training.params == {"shape": [1, 2]}  # stored as its JSON form
    assert training.params is not params
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.notes = "x"  # type: ignore[misc]


def test_utc_now_is_iso_8601_utc() -> None:
    stamp = utc_now()
    assert stamp.endswith("Z")
    parsed = datetime.fromisoformat(stamp)
    assert parsed.utcoffset() == UTC.utcoffset(None)
    assert abs((datetime.now(UTC) - parsed).total_seconds()) < 60


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"created_at": "yesterday"}, "created_at"),
        ({"created_at": "2025-01-31T12:00:00"}, "created_at"),  # naive
        ({"created_at": "2025-01-31T12:00:00+01:00"}, "created_at"),  # not UTC
        ({"model_sha256": "AB" * 32}, "model_sha256"),
        ({"model_sha256": "ab"}, "model_sha256"),
        ({"parent_version": 0}, "parent_version"),
        ({"parent_version": True}, "parent_version"),
        ({"notes": None}, "notes"),
        ({"artifacts": {"reference.npz": "x"}}, "artifacts.reference.npz"),
        ({"training": {"rows": 1}}, "training: expected a TrainingInfo"),
        ({"signature": SIGNATURE.to_dict()}, "signature: expected a Signature"),
    ],
)
def test_invalid_fields_are_refused(change: dict[str, Any], field: str) -> None:
    kwargs: dict[str, Any] = {
        "created_at": "2025-01-31T12:00:00Z",
        "model_sha256": SHA,
        "signature": SIGNATURE,
    }
    with pytest.raises(ManifestError, match=field):
        Manifest(**(kwargs | change))


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: TrainingInfo(data_sha256="nope"), "training.data_sha256"),
        (lambda: TrainingInfo(rows=1.5), "training.rows"),  # type: ignore[arg-type]
        (lambda: TrainingInfo(data_uri=3), "training.data_uri"),  # type: ignore[arg-type]
        (lambda: TrainingInfo(params={"f": object()}), "training.params"),
        (lambda: TrainingInfo(params={"x": float("nan")}), "training.params"),
        (lambda: TrainingInfo(params={1: 2}), "training.params"),  # type: ignore[dict-item]
        (lambda: ValidationInfo(metrics={"auc": float("nan")}), "validation.metrics.auc"),
        (lambda: ValidationInfo(metrics={"auc": True}), "validation.metrics.auc"),
        (lambda: ValidationInfo(metrics={"auc": "0.9"}), "validation.metrics.auc"),  # type: ignore[dict-item]
        (lambda: ValidationInfo(metrics=[("auc", 0.9)]), "validation.metrics"),  # type: ignore[arg-type]
    ],
)
def test_invalid_sub_records_are_refused(build: Any, field: str) -> None:
    with pytest.raises(ManifestError, match=field):
        build()


def test_loading_ignores_unknown_keys_but_requires_known_ones(tmp_path: Path) -> None:
    data = full_manifest().to_dict() | {"added_by_a_newer_writer": {"x": 1}}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    assert load_manifest(path) == full_manifest()
    del data["model_sha256"]
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ManifestError, match=r"manifest\.json: model_sha256: missing"):
        load_manifest(path)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{not json", "unreadable"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps(HEAD | {"signature": {}}), "signature"),
        (json.dumps(HEAD | {"signature": SIGNATURE.to_dict(), "training": 3}), "training"),
    ],
)
def test_malformed_files_raise_manifest_error(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ManifestError, match=fragment) as caught:
        load_manifest(path)
    assert str(path) in str(caught.value)


def test_missing_manifest_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        load_manifest(tmp_path / "manifest.json")


def test_sha256_file_streams_large_files(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * (3 * 4096 + 7)  # a few MiB, not a multiple of any chunk size
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    with pytest.raises(NotFoundError):
        sha256_file(tmp_path / "absent.bin")
