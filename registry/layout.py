"""The registry directory: what exists, and which versions a model serves.

This module owns the on-disk layout of DESIGN.md §4 and its cheap scan: the names of the files in a
version directory, which directory names are models and versions, the READY marker, the ``pin`` file,
``model.toml``, and the version policy (:func:`select_versions`, :func:`default_version`).

Visibility rules. A model is a directory whose name matches :data:`MODEL_NAME_RE`; anything else at the
top level (``_data``, ``.tmp-*``, files) is invisible, so names starting with ``_`` or ``.`` are free for
registry-side data. A version is a sub-directory named by a positive integer without leading zeros that
holds a ``READY`` file; publish writes READY last and renames the whole directory into place, so a
version is either complete or invisible. The scan reads directory listings, READY markers, ``pin`` and
``model.toml`` only, never a model or manifest.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from registry.checks import check_int
from registry.config import ModelConfig, load_model_config
from registry.errors import ConfigError, NotFoundError, RegistryError
from registry.rollout import RolloutPlan, RolloutState, candidate_stamp, plan_rollout, read_state

__all__ = [
    "CONFIG_FILE",
    "GOLDEN_FILE",
    "MANIFEST_FILE",
    "MODEL_FILE",
    "MODEL_NAME_RE",
    "PIN_FILE",
    "READY",
    "REFERENCE_FILE",
    "TMP_PREFIX",
    "TRAINING_FILE",
    "ModelInfo",
    "VersionInfo",
    "check_model_name",
    "default_version",
    "numeric_dirs",
    "parse_version",
    "read_pin",
    "ready_versions",
    "scan_registry",
    "select_versions",
    "version_info",
]

READY = "READY"
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
REFERENCE_FILE = "reference.npz"
GOLDEN_FILE = "golden.npz"
TRAINING_FILE = "training.npz"
CONFIG_FILE = "model.toml"
PIN_FILE = "pin"
TMP_PREFIX = ".tmp-"

MODEL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_VERSION_RE = re.compile(r"[1-9][0-9]*")


@dataclass(frozen=True)
class VersionInfo:
    """Where one version of a model lives. Says nothing about whether it is READY."""

    model: str
    version: int
    path: Path

    @property
    def onnx_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_FILE

    @property
    def reference_path(self) -> Path:
        """``reference.npz``; optional, so it may not exist."""
        return self.path / REFERENCE_FILE

    @property
    def golden_path(self) -> Path:
        """``golden.npz``; optional, so it may not exist."""
        return self.path / GOLDEN_FILE

    @property
    def training_path(self) -> Path:
        """``training.npz`` (a subsample of the training inputs); optional, so it may not exist."""
        return self.path / TRAINING_FILE


@dataclass(frozen=True)
class ModelInfo:
    """One model as scanned: READY versions ascending, pin, and config.

    ``config_error`` is set (and ``config`` is the default) when ``model.toml`` is invalid; it also
    reports an unreadable ``pin`` file (then ``pin`` is None). A consumer that sees ``config_error``
    should keep serving what it has.
    """

    name: str
    path: Path
    versions: tuple[int, ...]
    pin: int | None
    config: ModelConfig
    config_error: str | None = None
    #: ``rollout.json`` as read (None: none), and the plan it gives when ``[rollout]`` is staged, no pin
    #: is set and the policy is "latest" or "all" (None otherwise: versions serve as before).
    rollout: RolloutState | None = None
    rollout_plan: RolloutPlan | None = None

    def version(self, version: int) -> VersionInfo:
        """The VersionInfo of ``version`` of this model (not checked to be READY)."""
        return VersionInfo(self.name, version, self.path / str(version))


def check_model_name(name: str) -> str:
    """``name`` if it is a valid model name; NotFoundError otherwise (no such model can exist).

    Valid: 1 to 128 of ``[A-Za-z0-9_.-]``, the first a letter or digit. So a name is always one plain
    path component: never ``.``, ``..``, hidden (``.x``), reserved (``_data``), or with a separator.
    """
    if not isinstance(name, str) or not MODEL_NAME_RE.fullmatch(name):
        raise NotFoundError(
            f"{name!r} is not a valid model name: use 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def parse_version(name: str) -> int | None:
    """The version a directory called ``name`` would be, or None (``"0"``, ``"007"``, ``"v1"``...)."""
    return int(name) if _VERSION_RE.fullmatch(name) else None


def numeric_dirs(model_dir: Path) -> list[int]:
    """Every version-named sub-directory of ``model_dir``, READY or not, ascending."""
    try:
        with os.scandir(model_dir) as entries:
            found = [parse_version(e.name) for e in entries if e.is_dir()]
    except FileNotFoundError:
        return []
    return sorted(v for v in found if v is not None)


def ready_versions(model_dir: Path) -> tuple[int, ...]:
    """The READY versions of the model in ``model_dir``, ascending."""
    return tuple(v for v in numeric_dirs(model_dir) if (model_dir / str(v) / READY).is_file())


def read_pin(model_dir: Path) -> int | None:
    """The version in ``model_dir/pin`` (one positive integer, whitespace allowed); None if no pin file.

    ConfigError if the file exists but does not hold a version number.
    """
    path = model_dir / PIN_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    version = parse_version(text)
    if version is None:
        raise ConfigError(f"{path}: expected a version number, got {text[:40]!r}")
    return version


def scan_model(model_dir: Path) -> ModelInfo:
    """Scan one model directory (its name is not checked here). Never raises for bad config or pin."""
    errors: list[str] = []
    try:
        config = load_model_config(model_dir / CONFIG_FILE)
    except ConfigError as exc:
        config = ModelConfig()
        errors.append(str(exc))
    try:
        pin = read_pin(model_dir)
    except ConfigError as exc:
        pin = None
        errors.append(str(exc))
    try:
        state = read_state(model_dir)
    except ConfigError as exc:
        state = None
        errors.append(str(exc))
    versions = ready_versions(model_dir)
    plan = None
    if config.rollout.staged and pin is None and config.versions.policy != "specific" and not errors:
        plan = plan_rollout(versions, state, lambda v: candidate_stamp(model_dir, v))
    return ModelInfo(
        name=model_dir.name,
        path=model_dir,
        versions=versions,
        pin=pin,
        config=config,
        config_error="; ".join(errors) or None,
        rollout=state,
        rollout_plan=plan,
    )


def scan_registry(root: Path) -> dict[str, ModelInfo]:
    """Every model under ``root`` by name (sorted), with READY versions, pin and config.

    NotFoundError if ``root`` is not a directory. Invisible entries are skipped (see the module doc).
    """
    if not root.is_dir():
        raise NotFoundError(f"{root}: registry directory does not exist")
    with os.scandir(root) as entries:
        names = sorted(e.name for e in entries if MODEL_NAME_RE.fullmatch(e.name) and e.is_dir())
    return {name: scan_model(root / name) for name in names}


def version_info(root: Path, model: str, version: int) -> VersionInfo:
    """The VersionInfo of a READY version; NotFoundError naming the model and version otherwise."""
    check_model_name(model)
    try:
        check_int("version", version, NotFoundError, minimum=1)
    except RegistryError as exc:
        raise NotFoundError(f"{model}: invalid version: {exc}") from None
    info = VersionInfo(model, version, root / model / str(version))
    if not (info.path / READY).is_file():
        if not (root / model).is_dir():
            raise NotFoundError(f"model {model!r} not found in {root}")
        raise NotFoundError(f"{model}: version {version} not found (or not READY)")
    return info


def select_versions(info: ModelInfo) -> tuple[int, ...]:
    """The READY versions to serve under ``info.config.versions``, ascending.

    "latest": the highest ``latest`` READY versions; "all": every READY version; "specific": the listed
    versions that are READY. A pinned READY version is always included. Under a staged rollout
    (``info.rollout_plan``) the policy counts versions up to the stable one, never a blocked (rolled back
    or aborted) candidate, and the candidate is added.
    """
    policy = info.config.versions
    ready = info.versions
    plan = info.rollout_plan
    if plan is not None:
        ready = tuple(v for v in ready if v != plan.blocked and (plan.stable is None or v <= plan.stable))
    if policy.policy == "all":
        chosen = set(ready)
    elif policy.policy == "specific":
        chosen = set(ready) & set(policy.specific)
    else:
        chosen = set(ready[-policy.latest :]) if ready else set()
    if info.pin is not None and info.pin in ready:
        chosen.add(info.pin)
    if plan is not None and plan.candidate is not None:
        chosen.add(plan.candidate)
    return tuple(sorted(chosen))


def default_version(info: ModelInfo, loaded: Iterable[int]) -> int | None:
    """The version a request without a version goes to: the pin if loaded, else the highest loaded; under
    a staged rollout the highest loaded up to the stable version (the candidate's share is the gateway's
    traffic split), and never a blocked candidate while another version is loaded."""
    available = set(loaded)
    if info.pin is not None and info.pin in available:
        return info.pin
    plan = info.rollout_plan
    if plan is not None:
        usable = {v for v in available if v != plan.blocked} or available
        below = {v for v in usable if plan.stable is None or v <= plan.stable}
        return max(below or usable, default=None)
    return max(available, default=None)
