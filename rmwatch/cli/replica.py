"""``rmwatch replica``: a replica of the RM metadata with PD's read routes over HTTP (a sidecar).

Every option is a flag and an ``RMWATCH_*`` environment variable (pydantic-settings); a flag
given on the command line overrides the environment::

    rmwatch replica --etcd 10.0.0.1:2379,10.0.0.2:2379 --listen 0.0.0.0:8081

With ``--grpc-listen HOST:PORT`` the replica also serves PD's gRPC API there:
``resource_manager.ResourceManager`` Get/List from the cache (writes answer
``FAILED_PRECONDITION``) and a read-only ``meta_storagepb.MetaStorage`` Get/Watch that fans the
replica's one etcd watch out to every consumer; its metrics join ``/metrics``.

The HTTP server starts at once and answers 503 until the replica has caught up (``/ready``
tells a load balancer when to send traffic). SIGTERM (or Ctrl-C) drains: ``/ready`` turns 503
(and gRPC health NOT_SERVING) at once while requests are still served for ``drain_seconds``, so
load balancers move away without a failed request; then the servers stop accepting, finish the
requests in flight (HTTP at most ``shutdown_timeout``, gRPC ``GRPC_STOP_GRACE``, which also ends
watch streams), the replica is closed, and the process exits 0. A second
signal skips the rest of the drain wait; a third stops without waiting for requests.
"""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType
from typing import Any

import uvicorn
from pydantic import Field

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
    server_options,
    split_listen,
)
from rmwatch.grpc import GrpcServer, serve_replica
from rmwatch.grpc.metastorage import DEFAULT_PROGRESS_INTERVAL
from rmwatch.http.fast_group_read import BODY_CACHE_BYTES
from rmwatch.http.fast_lane import lane_protocol
from rmwatch.http.forward import DEFAULT_FORWARD_TIMEOUT
from rmwatch.http.server_drain import ServerDrain as DrainState
from rmwatch.http.sidecar_app import DEFAULT_MIN_REVISION_TIMEOUT, create_sidecar_app
from rmwatch.store.keyspaces import KeyspaceResolver
from rmwatch.store.leadership import read_leader
from rmwatch.watcher.history import DEFAULT_MAX_BYTES, DEFAULT_MAX_EVENTS
from rmwatch.watcher.replica import Replica
from rmwatch.watcher.watch_stream import DEFAULT_MAX_BUFFER

log = get_logger("sidecar")


class ReplicaSettings(ServeOptions):
    """Settings of ``rmwatch replica``; each field is also ``RMWATCH_<FIELD>`` in the env."""

    etcd: str = "127.0.0.1:2379"
    listen: str = "127.0.0.1:8081"
    writer_url: str | None = None
    forward: bool = True
    max_staleness: float = 30.0
    min_revision_timeout: float = DEFAULT_MIN_REVISION_TIMEOUT
    forward_timeout: float = DEFAULT_FORWARD_TIMEOUT
    # 5 s of 503 on /ready before the listener closes: one readiness period of a typical
    # load balancer (Kubernetes probes every 10 s by default: raise it to period x threshold).
    drain_seconds: float = 5.0
    # Longest wait for requests in flight once the listener is closed; reads take ~1 ms,
    # a min_revision wait at most 5 s, a forwarded write at most 15 s (then cut).
    shutdown_timeout: float = 15.0
    etcd_timeout: float = 5.0
    # MetaStorage Watch: how far back a watcher may start or resume (10k changes or 64 MiB,
    # whichever is hit first), how many responses one may leave unread before it is cut off,
    # and how often an idle watcher gets a progress response.
    grpc_history_events: int = Field(default=DEFAULT_MAX_EVENTS, ge=1)
    grpc_history_bytes: int = Field(default=DEFAULT_MAX_BYTES, ge=1)
    grpc_watch_buffer: int = Field(default=DEFAULT_MAX_BUFFER, ge=1)
    grpc_progress_interval: float = Field(default=DEFAULT_PROGRESS_INTERVAL, gt=0)
    # The group GET's remembered JSON bodies (rmwatch.http.fast_group_read.BODY_CACHE_BYTES).
    body_cache_mib: float = Field(default=BODY_CACHE_BYTES / 2**20, ge=0)

    def host_port(self) -> tuple[str, int]:
        """``listen`` split into host and port (``:8081`` means every interface)."""
        return split_listen(self.listen)


_FLAGS = ("etcd", "listen", "writer_url", "forward", "max_staleness", "min_revision_timeout",
          "forward_timeout", "drain_seconds", "shutdown_timeout", "etcd_timeout",
          "grpc_history_events", "grpc_history_bytes", "grpc_watch_buffer",
          "grpc_progress_interval", "body_cache_mib", *LAYOUT_FLAGS, *GRPC_FLAGS, *COMMON_FLAGS,
          *ETCD_AUTH_FLAGS)  # fmt: skip


def register(subparsers: Any) -> None:
    """Add the ``replica`` subcommand to the ``rmwatch`` parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "replica", help="run a replica with PD's RM read routes over HTTP (sidecar)"
    )
    parser.add_argument("--etcd", help="etcd endpoints URL[,URL...] (RMWATCH_ETCD)")
    parser.add_argument("--listen", help="HOST:PORT of the HTTP server (RMWATCH_LISTEN)")
    add_layout_arguments(parser)
    parser.add_argument("--writer-url", help="forward writes to this writer (default: the "
                                             "leader found in etcd)")  # fmt: skip
    parser.add_argument(
        "--forward",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="forward writes to the writer leader (--no-forward: answer 403)",
    )
    parser.add_argument(
        "--body-cache-mib",
        type=float,
        help="MiB of remembered group GET bodies, least recently used dropped first "
        f"({BODY_CACHE_BYTES // 2**20}; 0 encodes every answer)",
    )
    parser.add_argument(
        "--max-staleness",
        type=float,
        help="seconds without word from etcd before /ready turns 503 (30)",
    )
    parser.add_argument(
        "--min-revision-timeout",
        type=float,
        help="longest ?min_revision= wait in seconds, then 504 (5)",
    )
    parser.add_argument(
        "--forward-timeout", type=float, help="deadline of one forwarded write in seconds (15)"
    )
    parser.add_argument(
        "--drain-seconds",
        type=float,
        help="on SIGTERM, serve with /ready at 503 this long before closing (5)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        help="longest wait for requests in flight at shutdown (15)",
    )
    parser.add_argument("--etcd-timeout", type=float, help="etcd RPC deadline in seconds (5)")
    _add_grpc_arguments(parser)
    add_log_arguments(parser)
    add_etcd_auth_arguments(parser)
    parser.set_defaults(run=run)


def _add_grpc_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("gRPC (with --grpc-listen)")
    add_grpc_listen_argument(
        group,  # type: ignore[arg-type]  # an argument group takes the same add_argument
        "ResourceManager Get/List (writes refused) and MetaStorage Get/Watch",
    )
    group.add_argument(
        "--grpc-history-events",
        type=int,
        help=f"changes kept for MetaStorage watchers that start or resume in the past "
        f"({DEFAULT_MAX_EVENTS}); older starts answer DATA_COMPACTED",
    )
    group.add_argument(
        "--grpc-history-bytes",
        type=int,
        help=f"bytes the watch history may hold ({DEFAULT_MAX_BYTES})",
    )
    group.add_argument(
        "--grpc-watch-buffer",
        type=int,
        help=f"responses one watcher may leave unread before it is cut off ({DEFAULT_MAX_BUFFER})",
    )
    group.add_argument(
        "--grpc-progress-interval",
        type=float,
        help=f"seconds an idle watcher waits for a progress response "
        f"({DEFAULT_PROGRESS_INTERVAL:g})",
    )


def settings_from_args(args: argparse.Namespace) -> ReplicaSettings:
    """Environment first, flags given on the command line on top."""
    return ReplicaSettings(**given_flags(args, _FLAGS))


class _DrainingServer(uvicorn.Server):
    """uvicorn that drains on SIGTERM/SIGINT instead of closing the listener at once.

    uvicorn's own handler stops accepting immediately and re-raises the signal after
    shutdown (exit status 143); here the first signal only flips ``/ready`` to 503 and
    schedules ``should_exit`` after ``drain_seconds``; nothing is re-raised, so the exit
    status is 0.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        drain: DrainState,
        drain_seconds: float,
        grpc_server: GrpcServer | None,
    ) -> None:
        super().__init__(config)
        self._drain = drain
        self._grpc = grpc_server
        self._grpc_stopping: threading.Thread | None = None
        self._drain_seconds = drain_seconds
        self._signals = 0
        self._timer: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._signals += 1
        name = signal.Signals(sig).name
        if self._signals == 1:
            self._drain.begin()
            if self._grpc is not None:
                self._grpc.begin_drain()
            log.info("drain_started", signal=name, drain_seconds=self._drain_seconds,
                     in_flight=self._drain.in_flight)  # fmt: skip
            self._timer = threading.Timer(self._drain_seconds, self._stop_accepting)
            self._timer.daemon = True
            self._timer.start()
        elif self._signals == 2:
            log.info("drain_cut_short", signal=name)
            self._stop_accepting()
        else:
            log.warning("exit_forced", signal=name, in_flight=self._drain.in_flight)
            self.force_exit = True
            self.should_exit = True

    def _stop_accepting(self) -> None:
        log.info("listener_closing", in_flight=self._drain.in_flight)
        grpc_server = self._grpc
        if grpc_server is not None and self._grpc_stopping is None:
            # Beside the HTTP shutdown, not after it: both wait for their calls in flight.
            self._grpc_stopping = threading.Thread(
                target=grpc_server.stop, args=(GRPC_STOP_GRACE,), name="grpc-stop", daemon=True
            )
            self._grpc_stopping.start()
        self.should_exit = True

    def stop_grpc(self) -> None:
        """Stop the gRPC server (if any) and wait for it; idempotent."""
        if self._grpc_stopping is not None:
            self._grpc_stopping.join(GRPC_STOP_GRACE + 5.0)
        if self._grpc is not None:
            self._grpc.stop(GRPC_STOP_GRACE)

    def cancel_timer(self) -> None:
        """Stop a pending drain timer (the server already stopped)."""
        if self._timer is not None:
            self._timer.cancel()


def run(args: argparse.Namespace) -> int:
    """Run the sidecar until SIGTERM; 0 after a clean drain."""
    settings = settings_from_args(args)
    logs.configure(settings.log_format)
    host, port = settings.host_port()
    try:
        etcd = settings.etcd_config(settings.etcd, timeout=settings.etcd_timeout)
    except ValueError as exc:
        log.error("sidecar_cannot_start", error=str(exc), etcd=settings.etcd)  # noqa: TRY400
        return 1
    # A second connection for what the replica's cache does not hold: the writer leader key,
    # PD's cluster id and keyspace index (all outside resource_group/).
    started = connect_at_start(settings, etcd, log=log, event="sidecar_cannot_start")
    if started is None:
        return 1
    client, layout = started
    replica = Replica(etcd=etcd, root_prefix=layout.root_prefix,
                      max_staleness=settings.max_staleness)  # fmt: skip

    def discover_leader() -> str | None:
        info = read_leader(client, layout)
        return info.address if info is not None else None

    drain = DrainState()
    app = create_sidecar_app(
        replica,
        writer_url=settings.writer_url,
        discover_leader=discover_leader,
        resolve_keyspace=KeyspaceResolver(client, layout),
        forward=settings.forward,
        min_revision_timeout=settings.min_revision_timeout,
        forward_timeout=settings.forward_timeout,
        drain=drain,
        body_cache_bytes=int(settings.body_cache_mib * 2**20),
    )
    options = server_options()
    if options["http"] == "httptools":
        # The group GET answered inside the protocol (rmwatch.http.fast_lane), the rest as usual.
        options["http"] = lane_protocol(app.state.fast_lane) or "httptools"
    config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                            timeout_graceful_shutdown=int(settings.shutdown_timeout),
                            **options)  # fmt: skip
    try:
        grpc_server = _serve_grpc(settings, replica, layout.cluster_id)
    except (ValueError, OSError, TimeoutError) as exc:
        log.error("sidecar_cannot_start", error=str(exc),  # noqa: TRY400
                  grpc_listen=settings.grpc_listen)  # fmt: skip
        client.close()
        return 1
    server = _DrainingServer(config, drain, settings.drain_seconds, grpc_server)
    log.info("sidecar_starting", listen=settings.listen, etcd=settings.etcd,
             grpc_listen=grpc_server.address if grpc_server is not None else None,
             rm_root_prefix=layout.root_prefix, cluster_id=layout.cluster_id,
             writer_url=settings.writer_url,
             forward=settings.forward, max_staleness=settings.max_staleness,
             **settings.etcd_summary())  # fmt: skip
    replica.start()
    try:
        server.run()
    finally:
        server.cancel_timer()
        server.stop_grpc()
        replica.close()
        client.close()
    log.info("sidecar_stopped", **drain.as_dict())
    return 0


def _serve_grpc(
    settings: ReplicaSettings, replica: Replica, cluster_id: int | None
) -> GrpcServer | None:
    """The gRPC server of ``--grpc-listen`` (None without it), its metrics on the replica's
    registry, which the sidecar's ``/metrics`` renders."""
    listen = settings.grpc_listen_address()
    if listen is None:
        return None
    return serve_replica(
        replica,
        listen,
        registry=replica.metrics.registry,
        min_revision_timeout=settings.min_revision_timeout,
        history_events=settings.grpc_history_events,
        history_bytes=settings.grpc_history_bytes,
        watch_buffer=settings.grpc_watch_buffer,
        progress_interval=settings.grpc_progress_interval,
        cluster_id=cluster_id or 0,
    )


__all__ = ["ReplicaSettings", "register", "run", "settings_from_args"]
