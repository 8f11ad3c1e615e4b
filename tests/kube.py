"""Reads the Kubernetes manifests under deploy/ as JSON, offline, for the deploy tests.

There is no YAML library in the environment (and none is added): ``kubectl kustomize`` renders an overlay,
and ``kubectl patch --local`` with an empty merge patch re-emits every document of a YAML stream as JSON.
Neither contacts a cluster (``KUBECONFIG`` points at an empty file). A test that needs kubectl skips with
the reason when it is not installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
KSERVE = ROOT / "deploy" / "kserve"
#: The overlays under deploy/k8s/overlays, and what a user applies: the base for trials, an overlay in
#: production.
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
TARGETS = ["base", *OVERLAYS]

Manifest = dict[str, Any]


def kubectl() -> str:
    """The path of kubectl, or skip the calling test saying why."""
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed: the Kubernetes manifest tests render with `kubectl kustomize`")
    return path


def _kubectl(*args: str, stdin: str | None = None) -> str:
    env = {**os.environ, "KUBECONFIG": os.devnull}
    done = subprocess.run(
        [kubectl(), *args], input=stdin, capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert done.returncode == 0, f"kubectl {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


def to_json(yaml_stream: str) -> list[Manifest]:
    """Every document of a multi-document YAML stream, as JSON objects, in order."""
    text = _kubectl(
        "patch", "--local", "-f", "-", "--type", "merge", "-p", "{}", "-o", "json", stdin=yaml_stream
    )
    decoder = json.JSONDecoder()
    objects: list[Manifest] = []
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            return objects
        obj, position = decoder.raw_decode(text, position)
        objects.append(obj)


def kustomize(directory: Path) -> list[Manifest]:
    """The rendered kustomization in ``directory``."""
    return to_json(_kubectl("kustomize", str(directory)))


def render(targets: list[str]) -> dict[str, list[Manifest]]:
    """Each of ``targets`` (``base`` or an overlay's name) rendered; skips the caller without kubectl."""
    kubectl()
    return {t: kustomize(K8S / t if t == "base" else K8S / "overlays" / t) for t in targets}


def load(path: Path) -> list[Manifest]:
    """The documents of one plain YAML file."""
    return to_json(path.read_text(encoding="utf-8"))


def find(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[Manifest], kind: str) -> Manifest:
    found = find(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, found {[m['metadata']['name'] for m in found]}"
    return found[0]


def container(pod_spec: Manifest, name: str) -> Manifest:
    named: list[Manifest] = [c for c in pod_spec["containers"] if c["name"] == name]
    assert named, f"no container {name!r} in {[c['name'] for c in pod_spec['containers']]}"
    return named[0]


def flag(args: list[str], name: str) -> str | None:
    """The value of ``--name=value`` or ``--name value`` in an argument list (the last one wins)."""
    value = None
    for i, arg in enumerate(args):
        if arg.startswith(f"{name}="):
            value = arg.split("=", 1)[1]
        elif arg == name and i + 1 < len(args):
            value = args[i + 1]
    return value


def pre_stop_seconds(spec: Manifest) -> float:
    """How long a container's preStop hook holds it: a native sleep, or an exec of ``sleep N``."""
    pre_stop = spec.get("lifecycle", {}).get("preStop")
    if pre_stop is None:
        return 0.0
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = " ".join(pre_stop["exec"]["command"])
    match = re.fullmatch(r"(?:/bin/sh -c )?(?:/usr/bin/|/bin/)?sleep (\d+(?:\.\d+)?)", command)
    assert match, f"preStop is not a plain sleep, so its duration is unknown: {command!r}"
    return float(match.group(1))


def ports(spec: Manifest) -> dict[str, int]:
    """A container's named ports."""
    return {p["name"]: int(p["containerPort"]) for p in spec.get("ports", []) if "name" in p}


def mounts(spec: Manifest) -> dict[str, Manifest]:
    """A container's volume mounts by volume name."""
    return {m["name"]: m for m in spec.get("volumeMounts", [])}
