"""``rmwatch writer``: run one member of the writer group (election, fenced writes, HTTP API).

Every option is a flag and an ``RMWATCH_*`` environment variable (pydantic-settings); a flag
given on the command line overrides the environment. With ``--grpc-listen`` the writer also
serves PD's ``resource_manager.ResourceManager`` over gRPC (the same write path, bearer token
and ``/metrics``), and its leader record carries that address so followers forward gRPC writes
to it. SIGTERM (and Ctrl-C) drain first: gRPC health turns NOT_SERVING, new writes are
forwarded to the next leader, writes in flight finish, leadership is resigned, the gRPC server
stops (calls in flight get ``GRPC_STOP_GRACE``), then the process exits with status 0.
"""

from __future__ import annotations

import argparse
import signal
import socket
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from pydantic import SecretStr

from rmwatch._logging import get_logger
from rmwatch.cli import logs
from rmwatch.cli.options import (
    COMMON_FLAGS,
    ETCD_AUTH_FLAGS,
    GRPC_FLAGS,
    GRPC_STOP_GRACE,
    LAYOUT_FLAGS,
    ServeOptions,
    add_etcd_auth_arguments,
    add_grpc_listen_argument,
    add_layout_arguments,
    add_log_arguments,
    connect_at_start,
    given_flags,
    read_secret,
    server_options,
    split_listen,
)
from rmwatch.grpc import GrpcServer, serve_writer
from rmwatch.http.writer_app import create_writer_app
from rmwatch.store.leadership import DEFAULT_TTL, Leadership
from rmwatch.store.roles import WriteRole
from rmwatch.store.writer import Writer
from rmwatch.store.writer_drain import Drainer

log = get_logger("writer")


class WriterSettings(ServeOptions):
    """Settings of ``rmwatch writer``; each field is also ``RMWATCH_<FIELD>`` in the env.

    Secrets are ``SecretStr`` (``**********`` in any repr or log): the bearer token comes from
    ``token_file`` or ``RMWATCH_TOKEN``, the etcd password from ``etcd_password_file`` or
    ``RMWATCH_ETCD_PASSWORD``.
    """

    etcd: str = "127.0.0.1:2379"
    listen: str = "127.0.0.1:8080"
    advertise_url: str | None = None
    grpc_advertise: str | None = None
    role: WriteRole = WriteRole.LEGACY_ALL
    name: str = socket.gethostname()
    token_file: Path | None = None
    token: SecretStr | None = None
    lease_ttl: float = DEFAULT_TTL
    etcd_timeout: float = 5.0

    def host_port(self) -> tuple[str, int]:
        """``listen`` split into host and port."""
        return split_listen(self.listen)

    def address(self) -> str:
        """Where the other writers reach this one (``--advertise-url`` or ``http://listen``)."""
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        host, port = self.host_port()
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"

    def grpc_address(self, bound: str) -> str:
        """Where the other writers forward gRPC writes: ``--grpc-advertise``, else ``bound``
        (the address the gRPC server listens on, with the port it got)."""
        return self.grpc_advertise or bound

    def bearer_token(self) -> SecretStr | None:
        """The bearer token from ``token_file`` (stripped) or ``RMWATCH_TOKEN``, or None."""
        if self.token_file is not None:
            return read_secret(self.token_file, what="--token-file")
        return self.token


_FLAGS = ("etcd", "listen", "advertise_url", "grpc_advertise", "role", "name", "token_file",
          "lease_ttl", "etcd_timeout", *LAYOUT_FLAGS, *GRPC_FLAGS, *COMMON_FLAGS,
          *ETCD_AUTH_FLAGS)  # fmt: skip


def register(subparsers: Any) -> None:
    """Add the ``writer`` subcommand to the ``rmwatch`` parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "writer", help="run a metadata writer (leader election, fenced writes, PD's HTTP API)"
    )
    parser.add_argument("--etcd", help="etcd endpoints URL[,URL...] (RMWATCH_ETCD)")
    parser.add_argument("--listen", help="HOST:PORT of the HTTP API (RMWATCH_LISTEN)")
    parser.add_argument("--advertise-url", help="URL other writers forward to")
    add_grpc_listen_argument(parser, "ResourceManager Add/Modify/Delete/Get/List")
    parser.add_argument(
        "--grpc-advertise",
        metavar="HOST:PORT",
        help="gRPC address other writers forward gRPC writes to (RMWATCH_GRPC_ADVERTISE; "
        "default: the --grpc-listen address)",
    )
    parser.add_argument("--role", choices=[r.value for r in WriteRole], help="write role")
    add_layout_arguments(parser)
    parser.add_argument("--name", help="this writer's name in the election")
    parser.add_argument("--token-file", help="file holding the bearer token writes need "
                                             "(RMWATCH_TOKEN_FILE, or RMWATCH_TOKEN)")  # fmt: skip
    parser.add_argument("--lease-ttl", type=float, help="leader lease TTL in seconds (5)")
    parser.add_argument("--etcd-timeout", type=float, help="etcd RPC deadline in seconds (5)")
    add_log_arguments(parser)
    add_etcd_auth_arguments(parser)
    parser.set_defaults(run=run)


def settings_from_args(args: argparse.Namespace) -> WriterSettings:
    """Environment first, flags given on the command line on top."""
    return WriterSettings(**given_flags(args, _FLAGS))


class _DrainingServer(uvicorn.Server):
    """uvicorn that drains the writer on SIGTERM/SIGINT before it stops serving.

    The server keeps answering during the drain, so writes arriving meanwhile are forwarded
    to the next leader instead of being refused at the socket.
    """

    def __init__(
        self, config: uvicorn.Config, drainer: Drainer, grpc_server: GrpcServer | None
    ) -> None:
        super().__init__(config)
        self._drainer = drainer
        self._grpc = grpc_server
        self._draining: threading.Thread | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining is not None:
            if sig == signal.SIGINT:  # a second Ctrl-C: stop now
                super().handle_exit(sig, frame)
            return
        log.info("signal_received", signal=signal.Signals(sig).name)
        if self._grpc is not None:
            self._grpc.begin_drain()

        def drain_then_exit() -> None:
            try:
                self._drainer.drain()
            finally:
                if self._grpc is not None:
                    # Writes that arrived during the drain were forwarded; what is in
                    # flight now gets the grace, new calls are refused.
                    self._grpc.stop(GRPC_STOP_GRACE)
                self.should_exit = True

        self._draining = threading.Thread(target=drain_then_exit, name="drain", daemon=True)
        self._draining.start()


def run(args: argparse.Namespace) -> int:
    """Run the writer until SIGTERM; 0 after a clean drain."""
    settings = settings_from_args(args)
    logs.configure(settings.log_format)
    host, port = settings.host_port()
    try:
        token = settings.bearer_token()
        etcd = settings.etcd_config(settings.etcd, timeout=settings.etcd_timeout)
    except ValueError as exc:
        # A missing token or TLS file is not transient: say so once and exit non-zero.
        log.error("writer_cannot_start", error=str(exc), etcd=settings.etcd)  # noqa: TRY400
        return 1
    started = connect_at_start(settings, etcd, log=log, event="writer_cannot_start")
    if started is None:
        return 1
    client, layout = started
    leadership = Leadership(client=client, layout=layout, name=settings.name,
                            address=settings.address(), ttl=settings.lease_ttl)  # fmt: skip
    writer = Writer(client=client, layout=layout, role=settings.role, leadership=leadership)
    drainer = Drainer(writer)
    app = create_writer_app(writer, token=token, drainer=drainer)
    try:
        grpc_server = _serve_grpc(settings, writer, token)
    except (ValueError, OSError, TimeoutError) as exc:
        log.error("writer_cannot_start", error=str(exc),  # noqa: TRY400
                  grpc_listen=settings.grpc_listen)  # fmt: skip
        client.close()
        return 1
    if grpc_server is not None:
        # Before the first campaign: the leader record then names this gRPC address.
        leadership.grpc_address = settings.grpc_address(grpc_server.address)
    log.info("writer_starting", name=settings.name, listen=settings.listen,
             address=settings.address(), role=str(settings.role), etcd=settings.etcd,
             rm_root_prefix=layout.root_prefix, cluster_id=layout.cluster_id,
             lease_ttl=settings.lease_ttl, grpc_address=leadership.grpc_address,
             bearer_token=token is not None, **settings.etcd_summary())  # fmt: skip
    leadership.start()
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off",
                            **server_options())  # fmt: skip
    server = _DrainingServer(config, drainer, grpc_server)
    try:
        server.run()
    finally:
        if grpc_server is not None:
            grpc_server.stop(GRPC_STOP_GRACE)  # idempotent: a drain stopped it already
        leadership.close()
        client.close()
    log.info("writer_stopped", name=settings.name)
    return 0


def _serve_grpc(
    settings: WriterSettings, writer: Writer, token: SecretStr | None
) -> GrpcServer | None:
    """The gRPC server of ``--grpc-listen`` (None without it): the HTTP API's bearer token,
    and its metrics on the writer's registry, so ``/metrics`` shows both."""
    listen = settings.grpc_listen_address()
    if listen is None:
        return None
    return serve_writer(writer, listen, token=token, registry=writer.metrics.registry)


__all__ = ["WriterSettings", "register", "run", "settings_from_args"]
