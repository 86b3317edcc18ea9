"""The options every ``rmwatch`` subcommand shares: settings, ``--listen``, etcd TLS and auth.

Each setting is a flag and an ``RMWATCH_*`` environment variable (pydantic-settings); a flag
given on the command line wins over the environment::

    --log-format auto|json|console  RMWATCH_LOG_FORMAT   how log lines look (rmwatch.cli.logs)
    --etcd-ca FILE             RMWATCH_ETCD_CA             CA bundle that signed etcd's cert
    --etcd-cert FILE           RMWATCH_ETCD_CERT           client certificate (mutual TLS)
    --etcd-key FILE            RMWATCH_ETCD_KEY            its private key
    --etcd-user NAME           RMWATCH_ETCD_USER           etcd user (auth enabled)
    --etcd-password-file FILE  RMWATCH_ETCD_PASSWORD_FILE  file holding that user's password
                               RMWATCH_ETCD_PASSWORD       the password itself (env only)
    --rm-root-prefix P         RMWATCH_RM_ROOT_PREFIX      prefix of the RM keys (default: none)
    --cluster-id N             RMWATCH_CLUSTER_ID          PD's cluster id (default: read it)
    --grpc-listen HOST:PORT    RMWATCH_GRPC_LISTEN         serve PD's gRPC API there too

``--root-prefix`` / ``RMWATCH_ROOT_PREFIX`` are the old names of ``--rm-root-prefix`` and still
work. The RM keys (``resource_group/...``) sit at the etcd root on a PD cluster, so the prefix
stays empty there; it only separates test clusters sharing one etcd. PD's own keys (the cluster
id, the keyspace-name index) are absolute and never take it.

The password is a ``SecretStr``: it shows as ``**********`` in reprs, settings dumps and logs.
There is deliberately no ``--etcd-password`` flag: a command line is visible to every local
user in ``ps``. A password file is read once at start; its trailing newline is dropped.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from rmwatch.cli.logs import FORMATS, LogFormat
from rmwatch.errors import DecodeError, EtcdAuthError, EtcdUnavailableError
from rmwatch.store.etcd import EtcdClient, EtcdConfig, connect
from rmwatch.store.keys import KeyLayout
from rmwatch.store.keyspaces import cluster_id_at_start

ETCD_AUTH_FLAGS = ("etcd_ca", "etcd_cert", "etcd_key", "etcd_user", "etcd_password_file")
LAYOUT_FLAGS = ("rm_root_prefix", "cluster_id")
COMMON_FLAGS = ("log_format",)
GRPC_FLAGS = ("grpc_listen",)
# How long calls in flight get once a gRPC server stops accepting: a unary call takes ~1 ms
# (a min-revision wait at most 5 s); MetaStorage watch streams never end by themselves and
# are cut at the end of it, so it bounds how long a SIGTERM waits for them.
GRPC_STOP_GRACE = 5.0


class CliSettings(BaseSettings):
    """Base of every subcommand's settings: each field is also ``RMWATCH_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="RMWATCH_", extra="ignore")

    log_format: LogFormat = "auto"


class EtcdAuthOptions(CliSettings):
    """Base of the settings of a subcommand that talks to etcd: TLS and authentication."""

    etcd_ca: Path | None = None
    etcd_cert: Path | None = None
    etcd_key: Path | None = None
    etcd_user: str | None = None
    etcd_password: SecretStr | None = None
    etcd_password_file: Path | None = None

    def etcd_password_value(self) -> SecretStr | None:
        """The password from ``etcd_password_file`` (preferred) or ``etcd_password``."""
        if self.etcd_password_file is not None:
            return read_secret(self.etcd_password_file, what="--etcd-password-file")
        return self.etcd_password

    def etcd_config(self, endpoints: str, *, timeout: float) -> EtcdConfig:
        """The EtcdConfig these options describe, checked for half-given pairs."""
        password = self.etcd_password_value()
        if (self.etcd_user is None) != (password is None):
            raise ValueError(
                "etcd authentication needs both --etcd-user and --etcd-password-file "
                "(or RMWATCH_ETCD_USER and RMWATCH_ETCD_PASSWORD[_FILE])"
            )
        if (self.etcd_cert is None) != (self.etcd_key is None):
            raise ValueError("a client certificate needs both --etcd-cert and --etcd-key")
        if self.etcd_cert is not None and self.etcd_ca is None:
            raise ValueError("--etcd-cert needs --etcd-ca (the CA that signed etcd's cert)")
        for path in (self.etcd_ca, self.etcd_cert, self.etcd_key):
            if path is not None and not path.is_file():
                raise ValueError(f"{path} is not a readable file")
        return EtcdConfig.parse(
            endpoints,
            timeout=timeout,
            ca_cert=str(self.etcd_ca) if self.etcd_ca else None,
            cert=str(self.etcd_cert) if self.etcd_cert else None,
            key=str(self.etcd_key) if self.etcd_key else None,
            user=self.etcd_user,
            password=password,
        )

    def etcd_summary(self) -> dict[str, Any]:
        """What to log about the connection: never the password, only whether one is set."""
        return {
            "etcd_tls": self.etcd_ca is not None,
            "etcd_client_cert": self.etcd_cert is not None,
            "etcd_user": self.etcd_user,
        }


class LayoutOptions(EtcdAuthOptions):
    """Base of the settings of a subcommand that reads or writes PD's keys: where the RM keys
    sit, and PD's cluster id (which places the keyspace-name index)."""

    rm_root_prefix: str | None = None
    # The old name of rm_root_prefix (RMWATCH_ROOT_PREFIX); the new name wins when both are set.
    root_prefix: str | None = None
    # PD reads 0 as "no cluster id", and the id is a uint64.
    cluster_id: int | None = Field(default=None, ge=1, le=2**64 - 1)

    def rm_prefix(self) -> str:
        """The root prefix of the RM keys: ``rm_root_prefix``, else ``root_prefix``, else ""."""
        if self.rm_root_prefix is not None:
            return self.rm_root_prefix
        return self.root_prefix or ""

    def layout(self, cluster_id: int | None = None) -> KeyLayout:
        """The key layout: RM keys under ``rm_prefix()``, PD's index of ``cluster_id``."""
        return KeyLayout(self.rm_prefix(), cluster_id=cluster_id)


def connect_at_start(
    settings: LayoutOptions, config: EtcdConfig, *, log: Any, event: str
) -> tuple[EtcdClient, KeyLayout] | None:
    """Connect to etcd and find PD's cluster id, as ``rmwatch writer`` and ``rmwatch replica``
    start: with a user configured this authenticates at once, so a wrong password, CA or client
    certificate (or a bad ``/pd/cluster_id`` value) fails here, logged once as ``event``, and
    the command exits non-zero instead of retrying what cannot succeed (None)."""
    try:
        client = connect(config)
    except (EtcdAuthError, EtcdUnavailableError) as exc:
        summary = settings.etcd_summary()
        log.error(event, error=str(exc), etcd=list(config.endpoints), **summary)  # noqa: TRY400
        return None
    try:
        cluster_id = cluster_id_at_start(client, settings.cluster_id, deadline=config.timeout)
    except (DecodeError, EtcdUnavailableError) as exc:
        log.error(event, error=str(exc), etcd=list(config.endpoints))  # noqa: TRY400
        client.close()
        return None
    return client, settings.layout(cluster_id)


class ServeOptions(LayoutOptions):
    """Base of the settings of a serving subcommand (``writer``, ``replica``): the optional
    gRPC listener beside the HTTP one."""

    grpc_listen: str | None = None

    def grpc_listen_address(self) -> str | None:
        """``grpc_listen`` as ``HOST:PORT`` for grpcio (``:50051`` means every interface), or
        None when gRPC is off."""
        if not self.grpc_listen:
            return None
        host, port = split_listen(self.grpc_listen, flag="--grpc-listen")
        return f"{host}:{port}"


def read_secret(path: Path, *, what: str) -> SecretStr:
    """A secret read from ``path`` (one line; surrounding whitespace dropped)."""
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"{what} {path}: {exc.strerror}") from None
    if not text:
        raise ValueError(f"{what} {path} is empty")
    return SecretStr(text)


def split_listen(listen: str, *, flag: str = "--listen") -> tuple[str, int]:
    """``--listen HOST:PORT`` as (host, port); ``:8080`` means every interface."""
    host, sep, port = listen.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()):
        raise ValueError(f"{flag} {listen!r} must be HOST:PORT")
    return host or "0.0.0.0", int(port)


def server_options() -> dict[str, Any]:
    """uvicorn options of both HTTP services: httptools and uvloop where installed (runtime
    dependencies; plain h11/asyncio otherwise), no access log, and no logging setup of
    uvicorn's own, so its records go through ``rmwatch.cli.logs`` like ours. What httptools
    and uvloop gain is measured in bench/README.md."""
    return {
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "access_log": False,
        "log_config": None,
    }


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--log-format``."""
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        help="log lines as JSON or for a person; auto = console on a terminal, else JSON "
        "(RMWATCH_LOG_FORMAT)",
    )


def add_layout_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--rm-root-prefix`` (alias ``--root-prefix``) and ``--cluster-id``."""
    parser.add_argument(
        "--rm-root-prefix",
        "--root-prefix",
        dest="rm_root_prefix",
        help="prefix of the RM keys (resource_group/) and the writer's leader key; empty, the "
        "etcd root, on a PD cluster; only to share one etcd between test clusters "
        "(RMWATCH_RM_ROOT_PREFIX)",
    )
    parser.add_argument(
        "--cluster-id",
        type=int,
        help="PD's cluster id, which places the keyspace-name index /pd/{id}/keyspaces/id/ "
        "(RMWATCH_CLUSTER_ID; default: read /pd/cluster_id)",
    )


def add_grpc_listen_argument(parser: argparse.ArgumentParser, serves: str) -> None:
    """Add ``--grpc-listen``; ``serves`` says what that port answers."""
    parser.add_argument(
        "--grpc-listen",
        metavar="HOST:PORT",
        help=f"also serve PD's gRPC API here: {serves}; health and reflection too "
        "(RMWATCH_GRPC_LISTEN; default: no gRPC)",
    )


def add_etcd_auth_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--etcd-ca/--etcd-cert/--etcd-key/--etcd-user/--etcd-password-file``."""
    group = parser.add_argument_group("etcd TLS and authentication")
    group.add_argument(
        "--etcd-ca", help="CA file that signed etcd's certificate: enables TLS (RMWATCH_ETCD_CA)"
    )
    group.add_argument(
        "--etcd-cert", help="client certificate file for mutual TLS (RMWATCH_ETCD_CERT)"
    )
    group.add_argument("--etcd-key", help="client certificate key file (RMWATCH_ETCD_KEY)")
    group.add_argument("--etcd-user", help="etcd user name (RMWATCH_ETCD_USER)")
    group.add_argument(
        "--etcd-password-file",
        help="file holding the etcd user's password (RMWATCH_ETCD_PASSWORD_FILE, or the "
        "password itself in RMWATCH_ETCD_PASSWORD)",
    )


def given_flags(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    """The flags among ``names`` that were given on the command line."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


__all__ = [
    "COMMON_FLAGS",
    "ETCD_AUTH_FLAGS",
    "GRPC_FLAGS",
    "GRPC_STOP_GRACE",
    "LAYOUT_FLAGS",
    "CliSettings",
    "EtcdAuthOptions",
    "LayoutOptions",
    "ServeOptions",
    "add_etcd_auth_arguments",
    "add_grpc_listen_argument",
    "add_layout_arguments",
    "add_log_arguments",
    "given_flags",
    "read_secret",
    "server_options",
    "split_listen",
]
