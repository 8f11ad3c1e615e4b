"""Deleting old versions: ``infergate-registry gc NAME --keep N``.

This module owns the one operation that removes versions from a registry, and its two safety rules: a
version that is pinned, that the version policy would serve (:func:`registry.layout.select_versions`,
which always includes a READY pin), or that the gateway serves by default
(:func:`registry.serving.serving_default`: below a corrupt newest version, the one it keeps serving) is
never removed, whatever ``keep`` says; and a
version disappears in one step. Each victim is renamed to ``<model>/.trash-<version>-<random>`` (invisible
to the scan, which only knows numeric names), the directory is fsynced, and only then is the trash tree
removed; a crash in between leaves a ``.trash-*`` directory that the next ``gc`` removes. If a pin to a
victim appears while it is being removed, it is renamed back.

Only READY versions are considered: a half-written publish (``.tmp-*``, or a numeric directory without
READY) may belong to a publisher still at work, so it is left alone.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from registry.checks import check_int
from registry.errors import ConfigError, NotFoundError, PublishError
from registry.fsutil import fsync_dir
from registry.layout import check_model_name, read_pin, scan_model, select_versions
from registry.serving import IntegrityCache, serving_default_of
from registry.signing import TrustedKeys

__all__ = ["TRASH_PREFIX", "GcResult", "gc"]

TRASH_PREFIX = ".trash-"


@dataclass(frozen=True)
class GcResult:
    """What :func:`gc` did (or, with ``dry_run``, would do); every tuple ascending.

    ``removed``: versions deleted. ``kept``: READY versions left. ``protected``: versions older than the
    newest ``keep`` that stay because they are pinned or served. ``served``: what the policy serves.
    ``default``: the version the gateway serves by default (:func:`registry.serving.serving_default`).
    """

    model: str
    removed: tuple[int, ...]
    kept: tuple[int, ...]
    protected: tuple[int, ...]
    served: tuple[int, ...]
    pin: int | None
    dry_run: bool
    default: int | None = None


def gc(
    root: Path, model: str, keep: int, *, dry_run: bool = False, trusted: TrustedKeys | None = None
) -> GcResult:
    """Delete the READY versions of ``model`` older than its newest ``keep`` (>= 1), except pinned or served.

    ``trusted``: the gateway's ``--trusted-keys``, so that the serving default is the one it loads.
    With ``dry_run`` nothing changes on disk. NotFoundError for an invalid name or a missing model;
    PublishError for a bad ``keep``, or when ``model.toml`` or ``pin`` is unreadable (then what is served
    cannot be known, so nothing is deleted). Leftover ``.trash-*`` directories are removed first.
    """
    check_int("--keep", keep, PublishError, minimum=1)
    model_dir = root / check_model_name(model)
    if not model_dir.is_dir():
        raise NotFoundError(f"model {model!r} not found in {root}")
    info = scan_model(model_dir)
    if info.config_error is not None:
        raise PublishError(f"{model}: refusing to delete while the config is broken: {info.config_error}")
    served = select_versions(info)
    default = serving_default_of(IntegrityCache(info, trusted)).version
    guarded = set(served) | {v for v in (info.pin, default) if v is not None}
    beyond = info.versions[:-keep]
    plan = [v for v in beyond if v not in guarded]
    protected = tuple(v for v in beyond if v in guarded)
    if not dry_run:
        _purge_trash(model_dir)
        plan = [v for v in plan if _remove(model_dir, v)]
    removed = tuple(plan)
    return GcResult(
        model=model,
        removed=removed,
        kept=tuple(v for v in info.versions if v not in removed),
        protected=protected,
        served=served,
        pin=info.pin,
        dry_run=dry_run,
        default=default,
    )


def _remove(model_dir: Path, version: int) -> bool:
    """Rename the version into the trash, then delete it; False (and put back) if it got pinned meanwhile."""
    source = model_dir / str(version)
    trash = model_dir / f"{TRASH_PREFIX}{version}-{secrets.token_hex(6)}"
    try:
        os.rename(source, trash)
    except FileNotFoundError:
        return False  # removed by someone else in the meantime
    fsync_dir(model_dir)
    try:
        pinned = read_pin(model_dir)
    except ConfigError:
        pinned = None
    if pinned == version:
        os.rename(trash, source)
        fsync_dir(model_dir)
        return False
    shutil.rmtree(trash)
    return True


def _purge_trash(model_dir: Path) -> None:
    with os.scandir(model_dir) as entries:
        leftovers = [Path(e.path) for e in entries if e.name.startswith(TRASH_PREFIX) and e.is_dir()]
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
