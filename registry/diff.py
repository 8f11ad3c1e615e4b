"""Comparing two versions of a model: ``infergate-registry diff NAME V1 V2``.

This module owns what the comparison contains, as one JSON-ready document (the ``--json`` output; it
only grows): lineage (manifest fields and training parameters), signature (tensors added, removed or
changed, and the breaking changes of :func:`registry.signature.breaking_changes` from V1 to V2),
validation metrics side by side with ``delta = v2 - v1``, and the reference profile summary of each
version (:mod:`registry.profile`) per input feature column, with deltas. Rendering it as text is
:mod:`registry.difftext`'s job. Reads manifests and ``reference.npz`` only; never a model.

Document layout::

    {"model", "v1", "v2",
     "lineage": {"fields": [{"field", "v1", "v2", "changed"}],
                 "params": [{"name", "v1", "v2", "change": "same"|"changed"|"added"|"removed"}]},
     "signature": {"identical", "changes": [{"side", "name", "change", "v1", "v2"}], "breaking": [str]},
     "metrics": [{"name", "v1", "v2", "delta"}],
     "reference": {"max_columns", "truncated", "v1": {"rows", "columns", "skipped", "error"}, "v2": {...},
                   "features": [{"feature", "v1": {mean, std, min, max, nonfinite} | null, "v2", "delta"}]}}
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from registry.checks import check_int
from registry.errors import RegistryError, UsageError
from registry.layout import VersionInfo, version_info
from registry.manifest import Manifest, load_manifest
from registry.profile import STATS, ReferenceProfile, reference_profile
from registry.signature import Signature, TensorSpec, breaking_changes

__all__ = ["compare_versions", "diff_versions"]

_LINEAGE_FIELDS = ("created_at", "parent_version", "model_sha256", "data_uri", "data_sha256", "rows", "notes")


def diff_versions(root: Path, model: str, v1: int, v2: int, *, max_columns: int = 32) -> dict[str, Any]:
    """The diff document of READY versions ``v1`` and ``v2`` of ``model`` under ``root``.

    NotFoundError for an invalid name or a version that is not READY; ManifestError if a manifest is
    unreadable. A missing or unreadable ``reference.npz`` is reported inside the document, not raised.
    """
    check_int("max_columns", max_columns, UsageError, minimum=1)
    a, b = version_info(root, model, v1), version_info(root, model, v2)
    return compare_versions(
        a, b, load_manifest(a.manifest_path), load_manifest(b.manifest_path), max_columns=max_columns
    )


def compare_versions(
    a: VersionInfo, b: VersionInfo, ma: Manifest, mb: Manifest, *, max_columns: int = 32
) -> dict[str, Any]:
    """The diff document (module doc) of version ``a`` (manifest ``ma``) against ``b`` (``mb``)."""
    return {
        "model": a.model,
        "v1": a.version,
        "v2": b.version,
        "lineage": _lineage(ma, mb),
        "signature": _signature(ma.signature, mb.signature),
        "metrics": _metrics(ma.validation.metrics, mb.validation.metrics),
        "reference": _reference(a, b, ma.signature, mb.signature, max_columns),
    }


def _lineage_values(m: Manifest) -> dict[str, Any]:
    t = m.training
    return {
        "created_at": m.created_at,
        "parent_version": m.parent_version,
        "model_sha256": m.model_sha256,
        "data_uri": t.data_uri,
        "data_sha256": t.data_sha256,
        "rows": t.rows,
        "notes": m.notes,
    }


def _lineage(ma: Manifest, mb: Manifest) -> dict[str, Any]:
    va, vb = _lineage_values(ma), _lineage_values(mb)
    fields = [{"field": k, "v1": va[k], "v2": vb[k], "changed": va[k] != vb[k]} for k in _LINEAGE_FIELDS]
    pa, pb = ma.training.params, mb.training.params
    params = []
    for name in sorted(set(pa) | set(pb)):
        if name not in pa:
            change = "added"
        elif name not in pb:
            change = "removed"
        else:
            change = "same" if pa[name] == pb[name] else "changed"
        params.append({"name": name, "v1": pa.get(name), "v2": pb.get(name), "change": change})
    return {"fields": fields, "params": params}


def _signature(sa: Signature, sb: Signature) -> dict[str, Any]:
    changes: list[dict[str, Any]] = []
    for side, old, new in (("input", sa.inputs, sb.inputs), ("output", sa.outputs, sb.outputs)):
        old_by = {s.name: s for s in old}
        new_by = {s.name: s for s in new}
        for name in [*old_by, *(n for n in new_by if n not in old_by)]:
            was, now = old_by.get(name), new_by.get(name)
            if was == now:
                continue
            change = "added" if was is None else "removed" if now is None else "changed"
            changes.append({"side": side, "name": name, "change": change, "v1": _spec(was), "v2": _spec(now)})
    return {"identical": not changes, "changes": changes, "breaking": breaking_changes(sa, sb)}


def _spec(spec: TensorSpec | None) -> dict[str, Any] | None:
    return None if spec is None else spec.to_dict()


def _metrics(a: dict[str, float], b: dict[str, float]) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "v1": a.get(name),
            "v2": b.get(name),
            "delta": b[name] - a[name] if name in a and name in b else None,
        }
        for name in sorted(set(a) | set(b))
    ]


def _profile(
    info: VersionInfo, signature: Signature, max_columns: int
) -> tuple[ReferenceProfile | None, str | None]:
    if not info.reference_path.is_file():
        return None, f"no {info.reference_path.name}"
    try:
        return reference_profile(info.reference_path, signature, max_columns=max_columns), None
    except RegistryError as exc:
        return None, str(exc)


def _reference(
    a: VersionInfo, b: VersionInfo, sa: Signature, sb: Signature, max_columns: int
) -> dict[str, Any]:
    pa, error_a = _profile(a, sa, max_columns)
    pb, error_b = _profile(b, sb, max_columns)
    sides: dict[str, Any] = {}
    for key, prof, error in (("v1", pa, error_a), ("v2", pb, error_b)):
        sides[key] = {
            "rows": None if prof is None else prof.rows,
            "columns": None if prof is None else prof.total_columns,
            "skipped": [] if prof is None else list(prof.skipped),
            "error": error,
        }
    ca = {} if pa is None else pa.columns
    cb = {} if pb is None else pb.columns
    features = []
    for name in [*ca, *(n for n in cb if n not in ca)]:
        one, two = ca.get(name), cb.get(name)
        delta = None
        if one is not None and two is not None:
            delta = {k: _delta(getattr(one, k), getattr(two, k)) for k in STATS}
        features.append(
            {
                "feature": name,
                "v1": None if one is None else one.to_dict(),
                "v2": None if two is None else two.to_dict(),
                "delta": delta,
            }
        )
    truncated = any(p is not None and p.truncated for p in (pa, pb))
    return {"max_columns": max_columns, "truncated": truncated, **sides, "features": features}


def _delta(x: float, y: float) -> float | None:
    d = y - x
    return None if math.isnan(d) else d  # a column without finite values has no delta
