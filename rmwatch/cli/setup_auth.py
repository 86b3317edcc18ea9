"""``rmwatch etcd-setup-auth``: least-privilege etcd roles and users for writers and replicas.

Run it once per deployment with root credentials (and again to rotate a password, after
changing the RM root prefix, or once PD has written its cluster id: it converges, it does not
only add)::

    rmwatch etcd-setup-auth --etcd https://etcd:2379 --etcd-ca ca.pem \\
        --etcd-user root --etcd-password-file root.pw \\
        --writer-password-file writer.pw --replica-password-file replica.pw --enable-auth

What each role may do, and why: ``rmwatch.cli.etcd_auth``. The keyspace index grant needs PD's
cluster id: ``--cluster-id``, else the one in ``/pd/cluster_id`` (a dry run reads nothing, so
it shows that grant only with ``--cluster-id``).
The summary printed on stdout (JSON) names roles, users and grants; never a password.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from rmwatch._logging import get_logger
from rmwatch.cli import logs
from rmwatch.cli.etcd_auth import (
    DEFAULT_REPLICA_ROLE,
    DEFAULT_REPLICA_USER,
    DEFAULT_WRITER_ROLE,
    DEFAULT_WRITER_USER,
    SetupPlan,
    apply,
    plan_for,
    plan_summary,
)
from rmwatch.cli.options import (
    COMMON_FLAGS,
    ETCD_AUTH_FLAGS,
    LAYOUT_FLAGS,
    LayoutOptions,
    add_etcd_auth_arguments,
    add_layout_arguments,
    add_log_arguments,
    given_flags,
    read_secret,
)
from rmwatch.errors import RmwatchError
from rmwatch.store.etcd import connect
from rmwatch.store.keyspaces import read_cluster_id

log = get_logger("setup_auth")


class AuthSetupSettings(LayoutOptions):
    """Settings of ``rmwatch etcd-setup-auth``; each field is also ``RMWATCH_<FIELD>``."""

    etcd: str = "127.0.0.1:2379"
    etcd_timeout: float = 5.0
    writer_user: str = DEFAULT_WRITER_USER
    writer_password_file: Path | None = None
    writer_role: str = DEFAULT_WRITER_ROLE
    replica_user: str = DEFAULT_REPLICA_USER
    replica_password_file: Path | None = None
    replica_role: str = DEFAULT_REPLICA_ROLE
    enable_auth: bool = False
    root_password_file: Path | None = None

    def plan(self, cluster_id: int | None = None) -> SetupPlan:
        """The plan these settings describe (password files read here); ``cluster_id`` is
        PD's when ``--cluster-id`` is not given (None: no keyspace index grant)."""

        def secret(path: Path | None, what: str) -> SecretStr | None:
            return read_secret(path, what=what) if path is not None else None

        root = secret(self.root_password_file, "--root-password-file")
        if root is None and self.etcd_user == "root":
            root = self.etcd_password_value()
        return plan_for(
            self.layout(self.cluster_id if self.cluster_id is not None else cluster_id),
            writer_user=self.writer_user,
            writer_password=secret(self.writer_password_file, "--writer-password-file"),
            replica_user=self.replica_user,
            replica_password=secret(self.replica_password_file, "--replica-password-file"),
            writer_role=self.writer_role,
            replica_role=self.replica_role,
            enable_auth=self.enable_auth,
            root_password=root,
        )


_FLAGS = (
    "etcd",
    "etcd_timeout",
    *LAYOUT_FLAGS,
    "writer_user",
    "writer_password_file",
    "writer_role",
    "replica_user",
    "replica_password_file",
    "replica_role",
    "enable_auth",
    "root_password_file",
    *COMMON_FLAGS,
    *ETCD_AUTH_FLAGS,
)


def register(subparsers: Any) -> None:
    """Add the ``etcd-setup-auth`` subcommand to the ``rmwatch`` parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "etcd-setup-auth",
        help="create least-privilege etcd roles/users for writers and replicas (needs root)",
        description=(__doc__ or "").split("\n\n")[0],
    )
    parser.add_argument("--etcd", help="etcd endpoints URL[,URL...] (RMWATCH_ETCD)")
    parser.add_argument("--etcd-timeout", type=float, help="etcd RPC deadline in seconds (5)")
    add_layout_arguments(parser)
    parser.add_argument("--writer-user", help=f"writer user name ({DEFAULT_WRITER_USER})")
    parser.add_argument(
        "--writer-password-file", help="writer's password: creates the user, or rotates it"
    )
    parser.add_argument("--writer-role", help=f"writer role name ({DEFAULT_WRITER_ROLE})")
    parser.add_argument("--replica-user", help=f"replica user name ({DEFAULT_REPLICA_USER})")
    parser.add_argument(
        "--replica-password-file", help="replica's password: creates the user, or rotates it"
    )
    parser.add_argument("--replica-role", help=f"replica role name ({DEFAULT_REPLICA_ROLE})")
    parser.add_argument(
        "--enable-auth",
        action="store_true",
        default=None,
        help="enable etcd auth afterwards (creates root if missing)",
    )
    parser.add_argument(
        "--root-password-file", help="password for a root user created by --enable-auth"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the roles and grants, change nothing"
    )
    add_log_arguments(parser)
    add_etcd_auth_arguments(parser)
    parser.set_defaults(run=run)


def settings_from_args(args: argparse.Namespace) -> AuthSetupSettings:
    """Environment first, flags given on the command line on top."""
    return AuthSetupSettings(**given_flags(args, _FLAGS))


def run(args: argparse.Namespace) -> int:
    """Apply the plan; print the summary as JSON. 0 on success, 1 with a reason otherwise."""
    settings = settings_from_args(args)
    logs.configure(settings.log_format)
    try:
        if getattr(args, "dry_run", False):
            print(json.dumps(plan_summary(settings.plan()), indent=2))
            return 0
        client = connect(settings.etcd_config(settings.etcd, timeout=settings.etcd_timeout))
        try:
            stored = None
            if settings.cluster_id is None:
                stored = read_cluster_id(client, deadline=settings.etcd_timeout)
            summary = apply(client, settings.plan(stored))
        finally:
            client.close()
    except (ValueError, RmwatchError) as exc:
        log.error("etcd_setup_auth_failed", error=str(exc))  # noqa: TRY400 (reason, not a trace)
        print(f"rmwatch etcd-setup-auth: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


__all__ = ["AuthSetupSettings", "register", "run", "settings_from_args"]
