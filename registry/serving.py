"""Which version the gateway serves by default, as far as the registry's own files can tell.

This module owns :func:`serving_default`: the registry's notion of the current default, which is the version
a request without ``model_version`` reaches on a gateway that follows the registry, and so the version that
``rollback``, ``gc``, ``list`` and ``show`` start from. It mirrors the gateway's rules
(:mod:`gateway.models`), with the load checks that need no onnxruntime
(:func:`registry.verify.verify_version`: manifest, SHA-256 of ``model.onnx`` and every recorded artifact,
the signature read from the model, and, given the gateway's trusted keys, the Ed25519 signature):

1. the pin, when it names a READY version that passes the checks (``source = "pin"``);
2. else the highest version the policy selects (:func:`registry.layout.select_versions`) that passes them
   (``"policy"``): a selected version that fails its load checks never replaces a serving one, so the
   gateway serves the next one down;
3. else, when no selected version passes, the highest intact READY version below them (``"fallback"``):
   what a running gateway keeps serving when every version the policy wants fails to load, and what a
   gateway started afresh in that state loads under the ``latest`` policy. Under ``specific`` a fresh
   gateway loads only the listed versions and so serves nothing; the description says so.

Checks the registry cannot make without running the model (warm-up, the golden check with onnxruntime,
a breaking signature change against whatever the gateway loaded before) are not part of it. Every READY
version that the walk passed over because it failed is reported in ``skipped`` with its problems.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from registry.errors import NotFoundError
from registry.layout import ModelInfo, check_model_name, scan_model, select_versions
from registry.signing import TrustedKeys
from registry.verify import verify_version

__all__ = ["SOURCES", "IntegrityCache", "ServingDefault", "serving_default", "serving_default_of"]

#: Where a serving default comes from: see the module doc.
SOURCES = ("pin", "policy", "fallback", "none")


@dataclass
class IntegrityCache:
    """The load-check problems of each version of one model, computed at most once per version."""

    info: ModelInfo
    trusted: TrustedKeys | None = None
    problems: dict[int, list[str]] = field(default_factory=dict)

    def check(self, version: int) -> list[str]:
        """Problems of ``version`` (empty when it passes the load checks the registry can make)."""
        if version not in self.problems:
            self.problems[version] = verify_version(self.info.version(version), trusted=self.trusted)
        return self.problems[version]

    def first_intact(self, versions: list[int], skipped: dict[int, list[str]]) -> int | None:
        """The first of ``versions`` that passes, recording each failing one before it in ``skipped``."""
        for version in versions:
            problems = self.check(version)
            if not problems:
                return version
            skipped[version] = problems
        return None


@dataclass(frozen=True)
class ServingDefault:
    """The version a gateway serves by default (None: nothing intact), where that comes from, and the
    READY versions passed over on the way because they fail the load checks (version -> problems, in
    the order they were checked)."""

    model: str
    version: int | None
    source: str
    skipped: dict[int, list[str]]
    pin: int | None
    selected: tuple[int, ...]

    def describe(self) -> str:
        """One line for people: which version is served and why, e.g. ``version 2 (the policy's highest
        version that passes its load checks; 3 fails them)``."""
        if self.version is None:
            return "no version (no READY version passes its load checks)"
        failed = ", ".join(str(v) for v in self.skipped)
        verb = "fails" if len(self.skipped) == 1 else "fail"
        if self.source == "fallback":
            return (
                f"version {self.version} (every version the policy selects fails its load checks ({failed}); "
                "the gateway serves the highest intact one below them; under a 'specific' policy only a "
                "gateway that was already running does)"
            )
        why = "pinned" if self.source == "pin" else "the policy's highest version that passes its load checks"
        return f"version {self.version} ({why}" + (f"; {failed} {verb} them)" if failed else ")")


def serving_default_of(cache: IntegrityCache) -> ServingDefault:
    """:func:`serving_default` over an already scanned model, reusing (and filling) ``cache``."""
    info = cache.info
    selected = select_versions(info)
    skipped: dict[int, list[str]] = {}

    def result(version: int | None, source: str) -> ServingDefault:
        return ServingDefault(info.name, version, source, skipped, info.pin, selected)

    pinned = info.pin is not None and info.pin in info.versions
    if pinned and info.pin is not None and cache.first_intact([info.pin], skipped) is not None:
        return result(info.pin, "pin")
    # Under a staged rollout the candidate answers only its traffic share: the default is the stable side.
    plan = info.rollout_plan
    candidate = plan.candidate if plan is not None else None
    wanted = [v for v in reversed(selected) if v not in skipped and v != candidate]
    found = cache.first_intact(wanted, skipped)
    if found is not None:
        return result(found, "policy")
    top = max((v for v in selected if v != candidate), default=None)
    below = [v for v in reversed(info.versions) if top is not None and v < top and v not in skipped]
    found = cache.first_intact(below, skipped)
    return result(found, "fallback" if found is not None else "none")


def serving_default(root: Path, model: str, *, trusted: TrustedKeys | None = None) -> ServingDefault:
    """The version that a gateway following ``root`` serves for ``model`` by default (see the module doc).

    ``trusted``: the gateway's ``--trusted-keys``; pass them when the gateway requires signed versions.
    Hashes ``model.onnx`` and the recorded artifacts of each version it considers, from the top down, so
    it reads one version in the common case. NotFoundError if the name is invalid or the model is absent.
    A model with no READY version (or none intact) gives ``version = None``, ``source = "none"``.
    """
    model_dir = root / check_model_name(model)
    if not model_dir.is_dir():
        raise NotFoundError(f"model {model!r} not found in {root}")
    return serving_default_of(IntegrityCache(scan_model(model_dir), trusted))
