"""PD's gRPC surface: ``resource_manager.ResourceManager`` on the writer and on replicas, and a
read-only ``meta_storagepb.MetaStorage`` (Get/Watch) on replicas that fans one etcd watch out to
many consumers. Names and field numbers are kvproto's, so PD's clients talk to rmwatch unchanged.

::

    server = serve_replica(replica, "127.0.0.1:50051", registry=registry)
    ...
    server.stop(grace=5.0)

Both servers also answer the standard health service (``grpc.health.v1.Health``, SERVING while
ready) and server reflection.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from rmwatch.grpc.metastorage import DEFAULT_PROGRESS_INTERVAL, MetaStorage
from rmwatch.grpc.metastorage import SERVICE as METASTORAGE_SERVICE
from rmwatch.grpc.metrics import GrpcMetrics
from rmwatch.grpc.reads import DEFAULT_MIN_REVISION_TIMEOUT, SnapshotReads
from rmwatch.grpc.replica_rm import SERVICE as RESOURCE_MANAGER_SERVICE
from rmwatch.grpc.replica_rm import ReplicaResourceManager
from rmwatch.grpc.server import GrpcServer
from rmwatch.grpc.writer_rm import WriterResourceManager
from rmwatch.store.writer import Writer
from rmwatch.watcher.fanout import hub_for
from rmwatch.watcher.history import DEFAULT_MAX_BYTES, DEFAULT_MAX_EVENTS
from rmwatch.watcher.replica import Replica
from rmwatch.watcher.watch_stream import DEFAULT_MAX_BUFFER

ENV_LISTEN = "RMWATCH_GRPC_LISTEN"
"""The environment variable the CLIs read for ``--grpc-listen``."""


def serve_replica(
    replica: Replica,
    listen: str,
    *,
    registry: CollectorRegistry | None = None,
    min_revision_timeout: float = DEFAULT_MIN_REVISION_TIMEOUT,
    history_events: int = DEFAULT_MAX_EVENTS,
    history_bytes: int = DEFAULT_MAX_BYTES,
    watch_buffer: int = DEFAULT_MAX_BUFFER,
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
    cluster_id: int = 0,
) -> GrpcServer:
    """Serve ResourceManager (reads; writes refused) and MetaStorage (Get/Watch) for
    ``replica`` on ``listen`` (``HOST:PORT``; port 0 picks one, see ``server.port``).

    Args:
        registry: Prometheus registry for the per-RPC and per-watcher metrics.
        min_revision_timeout: longest ``min-revision`` wait, in seconds.
        history_events: watch history bound, in changes.
        history_bytes: watch history bound, in approximate bytes.
        watch_buffer: responses a watcher may leave unread before it is cut off.
        progress_interval: seconds without a response before a watcher gets a progress one.
        cluster_id: PD's cluster id for response headers (0 when unknown).
    """
    metrics = GrpcMetrics(registry)
    reads = SnapshotReads(replica, min_revision_timeout=min_revision_timeout)
    hub = hub_for(
        replica, max_events=history_events, max_bytes=history_bytes, max_buffer=watch_buffer
    )
    metrics.track_hub(hub)
    rm = ReplicaResourceManager(reads, metrics)
    meta = MetaStorage(
        reads, hub, metrics, cluster_id=cluster_id, progress_interval=progress_interval
    )
    server = GrpcServer(
        listen,
        handlers=[rm.handler(), meta.handler()],
        service_names=[RESOURCE_MANAGER_SERVICE, METASTORAGE_SERVICE],
        ready=lambda: replica.ready,
        on_stop=reads.close,
    )
    return server.start()


def serve_writer(
    writer: Writer,
    listen: str,
    *,
    token: SecretStr | str | None = None,
    registry: CollectorRegistry | None = None,
) -> GrpcServer:
    """Serve ResourceManager for ``writer`` on ``listen``: writes through the Writer (forwarded
    to the leader's ``grpc_address`` when this writer cannot commit), reads from etcd.

    Args:
        token: bearer token writes must carry (``authorization: Bearer ...``); None: no check.
        registry: Prometheus registry for the per-RPC metrics.
    """
    secret = SecretStr(token) if isinstance(token, str) else token
    metrics = GrpcMetrics(registry)
    rm = WriterResourceManager(writer, token=secret, metrics=metrics)
    server = GrpcServer(
        listen,
        handlers=[rm.handler()],
        service_names=[RESOURCE_MANAGER_SERVICE],
        ready=lambda: not writer.draining,
        on_stop=rm.close,
    )
    return server.start()


__all__ = ["ENV_LISTEN", "GrpcMetrics", "GrpcServer", "serve_replica", "serve_writer"]
