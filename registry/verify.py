"""Integrity checks of stored versions: do the files still match their manifest?

This module owns ``infergate-registry verify``: a version is intact when its manifest loads, its
``model.onnx`` and every recorded artifact hash to the SHA-256 the manifest holds, and the signature read
from the model equals the one recorded. Problems are reported, not raised, so one bad version does not
hide the state of the others.
"""

from __future__ import annotations

from pathlib import Path

from registry.errors import NotFoundError, RegistryError
from registry.layout import VersionInfo, check_model_name, ready_versions, version_info
from registry.manifest import load_manifest, sha256_file
from registry.signature import read_signature

__all__ = ["verify_model", "verify_version"]


def verify_version(info: VersionInfo) -> list[str]:
    """Problems found in the version at ``info`` (one line each); empty when it is intact."""
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
    return problems


def verify_model(root: Path, model: str, version: int | None = None) -> dict[int, list[str]]:
    """Problems per READY version of ``model`` (or of ``version`` alone); an empty list means intact.

    NotFoundError if the model, or the given version, is not READY in ``root``.
    """
    if version is not None:
        return {version: verify_version(version_info(root, model, version))}
    model_dir = root / check_model_name(model)
    if not model_dir.is_dir():
        raise NotFoundError(f"model {model!r} not found in {root}")
    return {v: verify_version(VersionInfo(model, v, model_dir / str(v))) for v in ready_versions(model_dir)}
