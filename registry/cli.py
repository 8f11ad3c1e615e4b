"""``infergate-registry``: the command line over the registry directory (DESIGN.md §8).

This module owns argument parsing and output formats only; every action is a call into the package.
Subcommands: ``demo``, ``publish`` (prints the new version alone), ``list`` (a table), ``show`` (lineage
as JSON), ``pin``, ``unpin``; and, in :mod:`registry.cli_ops`, ``rollback`` (prints the pinned version
alone), ``verify``, ``diff`` and ``gc``. ``list`` and ``show`` report the serving default of
:func:`registry.serving.serving_default` (``--trusted-keys``: the gateway's). Every model name taken from
the command line (``NAME``, ``--model``) is checked with :func:`registry.layout.check_model_name` before
anything touches the disk. A :class:`RegistryError` or OS error prints one line to stderr and exits 2; so
does a usage error. ``verify`` exits 1 when it finds a damaged version.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from registry.cli_ops import add_parsers, trusted_keys_arg, version_arg
from registry.demo import build_demo
from registry.errors import NotFoundError, RegistryError, UsageError
from registry.layout import (
    ModelInfo,
    check_model_name,
    scan_registry,
    select_versions,
    version_info,
)
from registry.manifest import load_manifest
from registry.publish import pin, publish, unpin
from registry.serving import IntegrityCache, serving_default_of
from registry.signing import generate_key, load_trusted_keys

__all__ = ["build_parser", "main"]

PROG = "infergate-registry"
_DEFAULT_KEYS = "the gateway's --trusted-keys: the default shown is a version the gateway would load"


def _json_object(text: str, flag: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{flag}: expected a JSON object, got {type(value).__name__}")
    return value


def _model(args: argparse.Namespace) -> ModelInfo:
    models = scan_registry(args.registry)
    if args.name not in models:
        raise NotFoundError(f"model {args.name!r} not found in {args.registry}")
    return models[args.name]


def cmd_demo(args: argparse.Namespace) -> int:
    for info in build_demo(args.dir, seed=args.seed):
        print(f"{info.model} {info.version} {info.path}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    info = publish(
        args.registry,
        args.model,
        args.onnx,
        reference=args.reference,
        golden=args.golden,
        train_data=args.train_data,
        params=_json_object(args.params, "--params") if args.params is not None else None,
        metrics=_json_object(args.metrics, "--metrics") if args.metrics is not None else None,
        notes=args.notes,
        parent_version=args.parent_version,
        sign_key=args.sign_key,
    )
    print(info.version)
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    private, public = generate_key(args.out)
    print(f"{private}\n{public}")
    return 0


def _default(info: ModelInfo, args: argparse.Namespace) -> dict[str, Any]:
    """The serving default's fields of ``list --json`` and ``show``: version, source, failing versions."""
    trusted = load_trusted_keys(args.trusted_keys) if args.trusted_keys is not None else None
    found = serving_default_of(IntegrityCache(info, trusted))
    return {
        "default": found.version,
        "default_source": found.source,
        "failing": {str(v): problems for v, problems in found.skipped.items()},
    }


def cmd_list(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    for info in scan_registry(args.registry).values():
        rows.append(
            {
                "model": info.name,
                "versions": list(info.versions),
                "serving": list(select_versions(info)),
                "pin": info.pin,
                **_default(info, args),
                "config_error": info.config_error,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [["MODEL", "VERSIONS", "SERVING", "PIN", "DEFAULT", "CONFIG"]]
    table += [
        [
            row["model"],
            _numbers(row["versions"]),
            _numbers(row["serving"]),
            _numbers([row["pin"]]),
            _numbers([row["default"]]),
            "ok" if row["config_error"] is None else f"error: {row['config_error']}",
        ]
        for row in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for r in table:
        print("  ".join([c.ljust(w) for c, w in zip(r, widths, strict=False)] + [r[-1]]).rstrip())
    return 0


def _numbers(values: Sequence[int | None]) -> str:
    return ",".join(str(v) for v in values if v is not None) or "-"


def cmd_show(args: argparse.Namespace) -> int:
    info = _model(args)
    if args.version is None:
        serving = select_versions(info)
        versions = []
        for version in info.versions:
            try:
                m = load_manifest(info.version(version).manifest_path)
            except RegistryError as exc:
                versions.append({"version": version, "error": str(exc)})
                continue
            summary = {
                k: v for k, v in m.to_dict().items() if k not in ("signature", "training", "artifacts")
            }
            versions.append({"version": version, **summary, "metrics": m.validation.metrics})
        doc: dict[str, Any] = {
            "model": info.name,
            "path": str(info.path),
            "pin": info.pin,
            "serving": list(serving),
            **_default(info, args),
            "config_error": info.config_error,
            "versions": versions,
        }
    else:
        vinfo = version_info(args.registry, info.name, args.version)
        manifest = load_manifest(vinfo.manifest_path)
        doc = {
            "model": info.name,
            "version": vinfo.version,
            "path": str(vinfo.path),
            "manifest": manifest.to_dict(),
            "ancestors": _ancestors(info, manifest.parent_version),
        }
    print(json.dumps(doc, indent=2, sort_keys=False))
    return 0


def _ancestors(info: ModelInfo, parent: int | None) -> list[int]:
    """Parent, grandparent... following manifests; stops at a missing/unreadable manifest or a cycle."""
    chain: list[int] = []
    while parent is not None and parent not in chain:
        chain.append(parent)
        try:
            parent = load_manifest(info.version(parent).manifest_path).parent_version
        except RegistryError:
            break
    return chain


def cmd_pin(args: argparse.Namespace) -> int:
    info = pin(args.registry, args.name, args.version)
    print(f"{info.model}: pinned to version {info.version}")
    return 0


def cmd_unpin(args: argparse.Namespace) -> int:
    previous = unpin(args.registry, args.name)
    print(f"{args.name}: unpinned" + ("" if previous is None else f" (was {previous})"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; each subcommand sets ``func`` to its handler."""
    parser = argparse.ArgumentParser(prog=PROG, description="Manage an infergate model registry directory.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, func: Callable[[argparse.Namespace], int], help_text: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        if name not in ("demo", "keygen"):
            p.add_argument("--registry", type=Path, required=True, metavar="DIR", help="registry directory")
        return p

    p = command("demo", cmd_demo, "build a demo registry (trained on synthetic data) in DIR")
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("--seed", type=int, default=0)
    p = command("publish", cmd_publish, "publish an ONNX model as the next version; print the version")
    p.add_argument("--model", required=True, metavar="NAME")
    p.add_argument("--onnx", type=Path, required=True, metavar="FILE")
    p.add_argument("--reference", type=Path, metavar="NPZ", help="reference rows (input:/output: keys)")
    p.add_argument("--golden", type=Path, metavar="NPZ", help="golden inputs and expected outputs")
    p.add_argument(
        "--train-data",
        type=Path,
        metavar="FILE",
        help="training data to hash and record; an .npz with the model inputs (input:<tensor> or "
        "<tensor> keys) also stores a subsample of them as training.npz (the monitor's skew check)",
    )
    p.add_argument("--params", metavar="JSON", help="training parameters, a JSON object")
    p.add_argument("--metrics", metavar="JSON", help="validation metrics, a JSON object of numbers")
    p.add_argument("--notes", default="", metavar="TEXT")
    p.add_argument("--parent-version", type=version_arg, metavar="N", help="default: the highest READY")
    p.add_argument("--sign-key", type=Path, metavar="KEY", help="Ed25519 private key: sign the version")
    p = command("keygen", cmd_keygen, "write a new Ed25519 signing key pair (signing.key, signing.pub)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p = command("list", cmd_list, "list models, READY and served versions, pin and default")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    trusted_keys_arg(p, _DEFAULT_KEYS)
    p = command(
        "show", cmd_show, "print a model's versions, or one version's manifest and ancestors, as JSON"
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("version", type=version_arg, nargs="?", metavar="VERSION")
    trusted_keys_arg(p, _DEFAULT_KEYS)
    p = command("pin", cmd_pin, "serve VERSION by default, whatever the version policy")
    p.add_argument("name", metavar="NAME")
    p.add_argument("version", type=version_arg, metavar="VERSION")
    p = command("unpin", cmd_unpin, "remove the pin; the version policy decides again")
    p.add_argument("name", metavar="NAME")
    add_parsers(command)
    from registry.cli_rollout import add_rollout_parser  # its own module (registry/cli_rollout.py)

    add_rollout_parser(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line in ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # usage errors (2) and --help (0)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        for attr in ("name", "model"):  # NAME of most subcommands, --model of publish
            if isinstance(getattr(args, attr, None), str):
                check_model_name(getattr(args, attr))
        status: int = args.func(args)
    except (RegistryError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return status
