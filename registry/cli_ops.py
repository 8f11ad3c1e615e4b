"""``infergate-registry`` handlers of the operational subcommands: rollback, verify, diff, gc.

This module owns the output contract of these four (DESIGN.md §8; :mod:`registry.cli` parses the
arguments and maps errors to exit status 2):

* ``rollback NAME [--trusted-keys DIR]``: stdout is the version now pinned, alone; stderr says which
  version the gateway served by default and why (each READY version above it that fails the load checks,
  with its problems), which versions below it were passed over and why, and what was pinned.
* ``verify NAME [VERSION]``: one line per READY version, ``NAME/VERSION: ok`` or the problems joined by
  ``; ``; runs the golden check (reference evaluator) where ``golden.npz`` exists; with
  ``--trusted-keys DIR`` an unsigned or wrongly signed version is a problem too. Exit 1 on any problem.
* ``diff NAME V1 V2 [--json] [--columns N]``: text by default, the JSON document with ``--json``.
* ``gc NAME --keep N [--dry-run]``: stdout lists the removed versions (would-be removed with
  ``--dry-run``), one number a line; stderr says what was kept and why.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from registry.diff import diff_versions
from registry.difftext import render_diff
from registry.layout import parse_version
from registry.publish import rollback
from registry.retention import gc
from registry.signing import TrustedKeys, load_trusted_keys
from registry.verify import verify_model

__all__ = [
    "CommandFactory",
    "add_parsers",
    "trusted_keys_arg",
    "cmd_diff",
    "cmd_gc",
    "cmd_rollback",
    "cmd_verify",
    "version_arg",
]

CommandFactory = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]
"""``command(name, handler, help)``: adds a subcommand (with ``--registry``) and returns its parser."""


def _numbers(values: tuple[int, ...] | list[int]) -> str:
    return ", ".join(str(v) for v in values) or "none"


def _note(text: str) -> None:
    print(text, file=sys.stderr)


def _trusted(args: argparse.Namespace) -> TrustedKeys | None:
    return load_trusted_keys(args.trusted_keys) if args.trusted_keys is not None else None


def cmd_rollback(args: argparse.Namespace) -> int:
    done = rollback(args.registry, args.name, trusted=_trusted(args))
    for version, problems in done.serving.skipped.items():
        _note(
            f"{args.name}: version {version} is not served, it fails the load checks: {'; '.join(problems)}"
        )
    _note(f"{args.name}: the gateway serves {done.serving.describe()}")
    for version, problems in done.skipped.items():
        _note(f"{args.name}: skipped version {version}: {'; '.join(problems)}")
    _note(f"{args.name}: default was version {done.previous}; pinned version {done.version}")
    print(done.version)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    report = verify_model(args.registry, args.name, args.version, full=True, trusted=_trusted(args))
    if not report:
        _note(f"{args.name}: no READY version to verify")
    for version, problems in report.items():
        print(f"{args.name}/{version}: " + ("; ".join(problems) or "ok"))
    return 1 if any(report.values()) else 0


def cmd_diff(args: argparse.Namespace) -> int:
    doc = diff_versions(args.registry, args.name, args.v1, args.v2, max_columns=args.columns)
    if args.json:
        print(json.dumps(doc, indent=2, allow_nan=False))
    else:
        sys.stdout.write(render_diff(doc))
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    result = gc(args.registry, args.name, args.keep, dry_run=args.dry_run, trusted=_trusted(args))
    for version in result.removed:
        print(version)
    verb = "would remove" if result.dry_run else "removed"
    _note(f"{args.name}: {verb} {_numbers(result.removed)}; kept {_numbers(result.kept)}")
    if result.protected:
        pin = "" if result.pin is None else f", pin {result.pin}"
        default = "" if result.default is None else f", default {result.default}"
        _note(
            f"{args.name}: kept {_numbers(result.protected)} beyond the newest {args.keep}: "
            f"pinned or served (serving {_numbers(result.served)}{pin}{default})"
        )
    if result.dry_run:
        _note(f"{args.name}: dry run, nothing deleted")
    return 0


def version_arg(text: str) -> int:
    """argparse type of a VERSION argument: a positive integer without sign, spaces or leading zeros."""
    version = parse_version(text)
    if version is None:
        raise argparse.ArgumentTypeError(f"invalid version {text!r} (expected a positive integer)")
    return version


def trusted_keys_arg(parser: argparse.ArgumentParser, help_text: str) -> None:
    """Add ``--trusted-keys DIR`` (a directory of Ed25519 public keys) to ``parser``."""
    parser.add_argument("--trusted-keys", type=Path, metavar="DIR", help=help_text)


def add_parsers(command: CommandFactory) -> None:
    """Add rollback, verify, diff and gc through :mod:`registry.cli`'s ``command(name, func, help)``."""
    p = command(
        "rollback", cmd_rollback, "pin the newest loadable READY version below the one served; print it"
    )
    p.add_argument("name", metavar="NAME")
    trusted_keys_arg(p, "the gateway's --trusted-keys: a version it would refuse is not served or pinned")
    p = command("verify", cmd_verify, "re-hash stored files against their manifests; run golden checks")
    p.add_argument("name", metavar="NAME")
    p.add_argument("version", type=version_arg, nargs="?", metavar="VERSION")
    trusted_keys_arg(p, "also check signatures against these public keys")
    p = command("diff", cmd_diff, "compare two versions: lineage, signature, metrics, reference profile")
    p.add_argument("name", metavar="NAME")
    p.add_argument("v1", type=version_arg, metavar="V1")
    p.add_argument("v2", type=version_arg, metavar="V2")
    p.add_argument("--json", action="store_true", help="print the JSON document instead of text")
    p.add_argument("--columns", type=int, default=32, metavar="N", help="feature columns shown (default 32)")
    p = command("gc", cmd_gc, "delete READY versions older than the newest N, never pinned or served ones")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--keep", type=int, required=True, metavar="N", help="newest versions to keep (>= 1)")
    p.add_argument("--dry-run", action="store_true", help="print what would be removed; delete nothing")
    trusted_keys_arg(p, "the gateway's --trusted-keys: the version it serves by default is never deleted")
