"""The ``rmwatch`` command: one entry point, one subcommand per job.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``run=callable(args) -> int``: ``writer``, ``replica``, ``dev`` and ``etcd-setup-auth``.
Flags override ``RMWATCH_*`` environment variables.

The CLI layer, one module per concern::

    main.py        this entry point
    options.py     settings shared by every subcommand: --log-format, --listen, etcd TLS/auth
    logs.py        the only logging setup: JSON lines or structlog's console rendering
    writer.py      rmwatch writer
    replica.py     rmwatch replica (the sidecar)
    dev.py         rmwatch dev: embedded etcd + writer + replica on loopback
    supervisor.py  children that die with rmwatch dev (parent-death signal or watchdog)
    watchdog.py    the portable watchdog process behind supervisor.py
    setup_auth.py  rmwatch etcd-setup-auth
    etcd_auth.py   the least-privilege roles and users it plans and applies
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from rmwatch import __version__
from rmwatch.cli import dev, replica, setup_auth, writer

# In help order.
SUBCOMMANDS = (writer, replica, dev, setup_auth)


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
    for module in SUBCOMMANDS:
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
