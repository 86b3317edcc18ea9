"""The ``rmwatch`` command: one entry point, one subcommand per job.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``run=callable(args) -> int``. ``store`` registers ``writer``; ``watcher`` registers
``replica`` and ``dev``; ``store.auth_setup`` registers ``etcd-setup-auth``. Flags override
``RMWATCH_*`` environment variables.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from store import __version__

# Modules that contribute subcommands, in help order. A module that is missing (a subcommand
# not built yet) is skipped, so `rmwatch --help` always works.
SUBCOMMAND_MODULES = ("store.writer_cli", "watcher.replica_cli", "watcher.dev", "store.auth_setup")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="rmwatch",
        description=(
            "One write path and provably in-sync replicas for PD resource-manager metadata in etcd."
        ),
    )
    parser.add_argument("--version", action="version", version=f"rmwatch {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; print help when none is given."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "run", None)
    if run is None:
        parser.print_help()
        return 2
    result: int = run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
