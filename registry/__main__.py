"""Entry point of ``infergate-registry`` and ``python -m registry`` (see :mod:`registry.cli`)."""

from __future__ import annotations

from registry.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
