"""The version catalog: which model versions the monitor knows, and everything it holds for each.

This module owns the step between decoding a sample's model and version and windowing its rows: the
first sample of a (model, version) loads, off the event loop, the version's signature (from its
manifest), its ``[drift]`` settings (from ``model.toml``; an invalid file is logged and the defaults are
used), its reference profile and, when the version ships ``training.npz``, its training profile (for the
skew check: while that check wants windows, the version has a second set of windows on the training
profile's bins, fed the same rows), then restores the version's drift state from the history. Later
samples find it in memory. A version without ``reference.npz`` (or with an unusable one) is kept with status
"no_reference" (or "invalid_reference"): its samples are validated and counted, not monitored, and no
error is retried in a loop. A model or version that does not exist is remembered as such for
``unknown_ttl_s`` seconds, after which the registry is looked at again (a version may be published later).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.config import ProfileSettings
from monitor.decisions import DriftTracker, SkewSource, TrackerState
from monitor.drift import WindowResult
from monitor.errors import NoReferenceError, ProfileError, SampleError
from monitor.reference import TRAINING_CACHE_FILE, Profile, load_profile
from monitor.windows import VersionWindows
from registry.config import DriftConfig, ModelConfig, load_model_config
from registry.errors import ConfigError, NotFoundError, RegistryError
from registry.feedback_config import FeedbackConfig
from registry.layout import CONFIG_FILE, REFERENCE_FILE, TRAINING_FILE, VersionInfo, version_info
from registry.manifest import Manifest, load_manifest, sha256_file
from registry.signature import Signature

__all__ = ["Catalog", "VersionState"]

log = logging.getLogger(__name__)

Restore = Callable[[str, int], Awaitable[TrackerState | None]]


@dataclass(eq=False)
class VersionState:
    """One known version: ``status`` "ok" (``profile`` and ``windows`` set), "no_reference" or
    "invalid_reference" (``detail`` says why); its drift tracker, last result and report entry. With a
    training profile (``training``; ``training_detail`` says why one is unusable), ``skew_windows`` holds
    the windows on its bins while the skew check wants them (see :meth:`start_skew_check`)."""

    model: str
    version: int
    signature: Signature
    drift: DriftConfig
    profile: Profile | None
    status: str
    detail: str | None = None
    training: Profile | None = None
    training_detail: str | None = None
    windows: VersionWindows | None = None
    skew_windows: VersionWindows | None = None
    tracker: DriftTracker = field(init=False)
    result: WindowResult | None = None
    entry: dict[str, Any] | None = None
    #: ``[feedback]`` of model.toml and the manifest's validation metrics (the quality baseline).
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    validation: dict[str, float] = field(default_factory=dict)
    reference_path: Path | None = None

    def __post_init__(self) -> None:
        self.tracker = DriftTracker(self.drift.consecutive)
        if self.profile is not None:
            self.windows = VersionWindows(self.profile, self.drift)

    @property
    def skew_source(self) -> SkewSource | None:
        """What the report says about the training profile; None when there is none or the check is off
        (or the version is not monitored)."""
        if self.drift.skew_windows == 0 or self.profile is None:
            return None
        if self.training is not None:
            return SkewSource(self.drift.skew_windows, self.training.rows)
        if self.training_detail is not None:
            return SkewSource(self.drift.skew_windows, None, self.training_detail)
        return None

    @property
    def skew_pending(self) -> bool:
        """Whether the skew check wants windows: there is a training profile and it is undecided."""
        return self.training is not None and self.tracker.skew_pending(self.drift.skew_windows)

    def start_skew_check(self) -> None:
        """Open windows on the training profile's bins while the check is undecided, numbered like the
        version's own windows so that skew window ``i`` holds exactly the rows of window ``i``."""
        if self.skew_pending and self.training is not None and self.windows is not None:
            self.skew_windows = VersionWindows(self.training, self.drift, index=self.windows.index)

    def skew_feed(self) -> VersionWindows | None:
        """The skew-check windows while they should take rows (until the check is decided; a window
        closed meanwhile that is not needed is skipped by the evaluator)."""
        return self.skew_windows if self.skew_pending else None

    def stop_skew_check(self) -> None:
        """Drop the training-profile windows (the check is decided); their buffers are freed."""
        self.skew_windows = None


class Catalog:
    """Known versions by (model, version); see the module doc. Loads run in ``executor``."""

    def __init__(
        self,
        root: Path,
        settings: ProfileSettings,
        executor: Executor,
        unknown_ttl_s: float,
        restore: Restore,
    ) -> None:
        self._root = root
        self._settings = settings
        self._executor = executor
        self._ttl = unknown_ttl_s
        self._restore = restore
        self._states: dict[tuple[str, int], VersionState] = {}
        self._unknown: dict[tuple[str, int], tuple[float, SampleError]] = {}
        self._lock = asyncio.Lock()

    def states(self) -> list[VersionState]:
        """Every loaded version, sorted by model then version."""
        return [self._states[k] for k in sorted(self._states)]

    async def get(self, model: str, version: int) -> VersionState:
        """The state of ``model`` version ``version``, loading it on first use.

        SampleError("unknown_model" or "unknown_version") if the registry has no such READY version.
        """
        key = (model, version)
        state = self._states.get(key)
        if state is not None:
            return state
        loop = asyncio.get_running_loop()
        async with self._lock:
            state = self._states.get(key)
            if state is not None:
                return state
            known = self._unknown.get(key)
            if known is not None and known[0] > loop.time():
                raise known[1]
            try:
                state = await loop.run_in_executor(self._executor, self._load, model, version)
            except SampleError as exc:
                self._unknown[key] = (loop.time() + self._ttl, exc)
                raise
            restored = await self._restore(model, version)
            if restored is not None:
                if restored.skew_windows == 0:
                    restored.skew = None  # a state stored before the skew check existed
                state.tracker.state = restored
                if state.windows is not None:
                    state.windows.index = restored.last_window
            state.start_skew_check()
            self._states[key] = state
            self._unknown.pop(key, None)
            return state

    def _load(self, model: str, version: int) -> VersionState:
        try:
            info = version_info(self._root, model, version)
        except NotFoundError as exc:
            reason = "unknown_version" if (self._root / model).is_dir() else "unknown_model"
            raise SampleError(reason, str(exc)) from None
        try:
            manifest = load_manifest(info.manifest_path)
        except RegistryError as exc:
            raise SampleError("unknown_version", f"{model} v{version} is unusable: {exc}") from None
        try:
            config = load_model_config(info.path.parent / CONFIG_FILE)
        except ConfigError as exc:
            log.warning("%s: using the default [drift] and [feedback] settings: %s", model, exc)
            config = ModelConfig()
        drift = config.drift
        state = self._state(info, manifest, drift)
        state.feedback, state.validation = config.feedback, dict(manifest.validation.metrics)
        state.reference_path = info.reference_path
        return state

    def _state(self, info: VersionInfo, manifest: Manifest, drift: DriftConfig) -> VersionState:
        model, version, signature = info.model, info.version, manifest.signature
        try:
            digest = manifest.artifacts.get(REFERENCE_FILE) or sha256_file(info.reference_path)
            profile = load_profile(info.reference_path, signature, self._settings, drift.bins, digest)
        except (NoReferenceError, NotFoundError) as exc:
            log.info("%s v%d: not monitored: %s", model, version, exc)
            return VersionState(model, version, signature, drift, None, "no_reference", str(exc))
        except ProfileError as exc:
            log.warning("%s v%d: not monitored: %s", model, version, exc)
            return VersionState(model, version, signature, drift, None, "invalid_reference", str(exc))
        training, training_detail = self._training(info, manifest, drift)
        log.info(
            "%s v%d: monitoring %d features%s",
            model,
            version,
            profile.n_features,
            f", skew check on {training.n_features} training features" if training is not None else "",
        )
        return VersionState(model, version, signature, drift, profile, "ok", None, training, training_detail)

    def _training(
        self, info: VersionInfo, manifest: Manifest, drift: DriftConfig
    ) -> tuple[Profile | None, str | None]:
        """The version's training profile, or None and why it is unusable (None, None: no file, or the
        skew check is off)."""
        if drift.skew_windows == 0 or not info.training_path.is_file():
            return None, None
        try:
            digest = manifest.artifacts.get(TRAINING_FILE) or sha256_file(info.training_path)
            training = load_profile(
                info.training_path,
                manifest.signature,
                self._settings,
                drift.bins,
                digest,
                cache_name=TRAINING_CACHE_FILE,
            )
        except (NoReferenceError, ProfileError, RegistryError) as exc:
            log.warning("%s v%d: no skew check: %s", info.model, info.version, exc)
            return None, str(exc)
        return training, None
