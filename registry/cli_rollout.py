"""``infergate-registry rollout status|promote|abort|retry NAME``: the rollout subcommand.

Output contract: ``status`` prints the JSON document of :meth:`RolloutStatus.as_json` (``--json``) or
``key: value`` lines; the three actions print the new status line ``NAME: <status> (stable S, candidate C)``
to stdout. Errors (no rollout to act on, a concurrent change) exit 2 through :mod:`registry.cli`.
"""

from __future__ import annotations

import argparse
import json

from registry.cli_ops import CommandFactory
from registry.rollout import RolloutState
from registry.rollout_ops import abort, promote, retry, rollout_status

__all__ = ["add_rollout_parser", "cmd_rollout"]

ACTIONS = ("status", "promote", "abort", "retry")


def cmd_rollout(args: argparse.Namespace) -> int:
    if args.action == "status":
        doc = rollout_status(args.registry, args.name).as_json()
        if args.json:
            print(json.dumps(doc, indent=2, allow_nan=False))
        else:
            for key, value in doc.items():
                text = json.dumps(value) if isinstance(value, dict | list) else value
                print(f"{key}: {'-' if value is None else text}")
        return 0
    actions = {"promote": promote, "abort": abort, "retry": retry}
    state: RolloutState = actions[args.action](args.registry, args.name)
    print(f"{args.name}: {state.status} (stable {state.stable}, candidate {state.candidate})")
    return 0


def add_rollout_parser(command: CommandFactory) -> None:
    """Adds ``rollout ACTION NAME`` through :mod:`registry.cli`'s ``command(name, func, help)``."""
    p = command("rollout", cmd_rollout, "show or steer a staged rollout: status, promote, abort, retry")
    p.add_argument("action", choices=ACTIONS, metavar="ACTION", help=" | ".join(ACTIONS))
    p.add_argument("name", metavar="NAME")
    p.add_argument("--json", action="store_true", help="status: print JSON")
