"""The etcd TLS and authentication options every ``rmwatch`` subcommand shares.

Flags and ``RMWATCH_*`` environment variables (pydantic-settings), flags on top::

    --etcd-ca FILE             RMWATCH_ETCD_CA             CA bundle that signed etcd's cert
    --etcd-cert FILE           RMWATCH_ETCD_CERT           client certificate (mutual TLS)
    --etcd-key FILE            RMWATCH_ETCD_KEY            its private key
    --etcd-user NAME           RMWATCH_ETCD_USER           etcd user (auth enabled)
    --etcd-password-file FILE  RMWATCH_ETCD_PASSWORD_FILE  file holding that user's password
                               RMWATCH_ETCD_PASSWORD       the password itself (env only)

The password is a ``SecretStr``: it shows as ``**********`` in reprs, settings dumps and logs.
There is deliberately no ``--etcd-password`` flag: a command line is visible to every local
user in ``ps``. A password file is read once at start; its trailing newline is dropped.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from rmwatch.store.etcd import EtcdConfig

ETCD_AUTH_FLAGS = ("etcd_ca", "etcd_cert", "etcd_key", "etcd_user", "etcd_password_file")


class EtcdAuthOptions(BaseSettings):
    """Base of a subcommand's settings: these fields, each also ``RMWATCH_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="RMWATCH_", extra="ignore")

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


def read_secret(path: Path, *, what: str) -> SecretStr:
    """A secret read from ``path`` (one line; surrounding whitespace dropped)."""
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"{what} {path}: {exc.strerror}") from None
    if not text:
        raise ValueError(f"{what} {path} is empty")
    return SecretStr(text)


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
    "ETCD_AUTH_FLAGS",
    "EtcdAuthOptions",
    "add_etcd_auth_arguments",
    "given_flags",
    "read_secret",
]
