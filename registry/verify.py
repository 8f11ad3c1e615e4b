"""Integrity checks of stored versions: do the files still match their manifest, and the golden outputs?

This module owns ``infergate-registry verify``: a version is intact when its manifest loads, its
``model.onnx`` and every recorded artifact hash to the SHA-256 the manifest holds, and the signature read
from the model equals the one recorded. The full check (``full=True``, what the CLI runs) adds two more:
an artifact file (``reference.npz``, ``golden.npz``, ``training.npz``) that exists but is not recorded
in the manifest is a problem (it was added after READY), and when the version ships ``golden.npz`` the
model is run on its inputs with :func:`registry.golden.run_reference` and must match its outputs
(:func:`registry.golden.golden_mismatches`). Problems are reported, not raised, so one bad version does
not hide the state of the others.
"""

from __future__ import annotations

from pathlib import Path

from registry.errors import NotFoundError, RegistryError
from registry.golden import golden_mismatches, load_golden, run_reference
from registry.layout import (
    GOLDEN_FILE,
    REFERENCE_FILE,
    TRAINING_FILE,
    VersionInfo,
    check_model_name,
    ready_versions,
    version_info,
)
from registry.manifest import Manifest, load_manifest, sha256_file
from registry.signature import read_signature
from registry.signing import TrustedKeys, signature_problems

__all__ = ["golden_problems", "verify_model", "verify_version"]


def verify_version(info: VersionInfo, *, full: bool = False, trusted: TrustedKeys | None = None) -> list[str]:
    """Problems found in the version at ``info`` (one line each); empty when it is intact.

    Without ``full``: manifest, SHA-256 of the model and recorded artifacts, signature (cheap enough for
    every load). With ``full``: also unrecorded artifact files and, when the hashes and signature are
    sound and ``golden.npz`` exists, the golden check with the reference evaluator. With ``trusted``:
    also the version's Ed25519 signature (:func:`registry.signing.signature_problems`).
    """
    try:
        manifest = load_manifest(info.manifest_path)
    except RegistryError as exc:
        return [str(exc)]
    problems: list[str] = []
    files = {info.onnx_path.name: manifest.model_sha256, **manifest.artifacts}
    for name, expected in sorted(files.items()):
        path = info.path / name
        try:
            actual = sha256_file(path)
        except RegistryError as exc:
            problems.append(str(exc))
            continue
        if actual != expected:
            problems.append(f"{path}: sha256 {actual} differs from the manifest's {expected}")
    try:
        signature = read_signature(info.onnx_path)
    except RegistryError as exc:
        problems.append(str(exc))
    else:
        if signature != manifest.signature:
            problems.append(f"{info.onnx_path}: signature differs from the manifest's")
    if trusted is not None:
        problems.extend(signature_problems(info.path, trusted))
    if full:
        for name in (REFERENCE_FILE, GOLDEN_FILE, TRAINING_FILE):
            if name not in manifest.artifacts and (info.path / name).exists():
                problems.append(f"{info.path / name}: not recorded in the manifest (added after READY?)")
        if not problems and info.golden_path.is_file():
            problems.extend(golden_problems(info, manifest))
    return problems


def golden_problems(info: VersionInfo, manifest: Manifest) -> list[str]:
    """The golden check of one version with the reference evaluator: one line per problem, empty if it
    matches (or ships no ``golden.npz``). Each line starts with the golden file's path."""
    if not info.golden_path.is_file():
        return []
    try:
        inputs, expected = load_golden(info.golden_path, manifest.signature)
        actual = run_reference(info.onnx_path, inputs)
    except RegistryError as exc:
        return [f"golden check: {exc}"]
    return [f"{info.golden_path}: golden check failed: {m}" for m in golden_mismatches(expected, actual)]


def verify_model(
    root: Path,
    model: str,
    version: int | None = None,
    *,
    full: bool = False,
    trusted: TrustedKeys | None = None,
) -> dict[int, list[str]]:
    """Problems per READY version of ``model`` (or of ``version`` alone); an empty list means intact.

    ``full`` as in :func:`verify_version`. NotFoundError if the model name is invalid, or the model, or
    the given version, is not READY in ``root``.
    """
    if version is not None:
        return {version: verify_version(version_info(root, model, version), full=full, trusted=trusted)}
    model_dir = root / check_model_name(model)
    if not model_dir.is_dir():
        raise NotFoundError(f"model {model!r} not found in {root}")
    return {
        v: verify_version(VersionInfo(model, v, model_dir / str(v)), full=full, trusted=trusted)
        for v in ready_versions(model_dir)
    }
