"""Prometheus metrics of one replica, in a registry of its own (several replicas per process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ReplicaMetrics:
    """Applied revision, lag, events applied, rebuilds by reason, load time, decode errors."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.applied_revision = Gauge(
            "rmwatch_replica_applied_revision", "Revision of the served snapshot", registry=r
        )
        self.store_revision = Gauge(
            "rmwatch_replica_store_revision", "Newest etcd revision seen in a header", registry=r
        )
        self.lag_revisions = Gauge(
            "rmwatch_replica_lag_revisions", "store_revision - applied_revision", registry=r
        )
        self.age_seconds = Gauge(
            "rmwatch_replica_age_seconds", "Seconds since etcd last confirmed the cache", registry=r
        )
        self.ready = Gauge("rmwatch_replica_ready", "1 when serving within bounds", registry=r)
        self.state = Gauge(
            "rmwatch_replica_state", "1 for the current state", ["state"], registry=r
        )
        self.events_applied = Counter(
            "rmwatch_replica_events_applied", "Watch events applied", registry=r
        )
        self.rebuilds = Counter(
            "rmwatch_replica_rebuilds", "Snapshot rebuilds by reason", ["reason"], registry=r
        )
        self.resumes = Counter(
            "rmwatch_replica_resumes", "Watch resumes after a lost stream", registry=r
        )
        self.load_seconds = Histogram(
            "rmwatch_replica_snapshot_load_seconds",
            "Time to load and decode a snapshot",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
        )
        self.decode_errors = Counter(
            "rmwatch_replica_decode_errors",
            "Values that did not decode (each time seen)",
            registry=r,
        )
        self.bad_keys = Gauge(
            "rmwatch_replica_bad_keys", "Keys currently skipped as undecodable", registry=r
        )
        self.digest_mismatches = Counter(
            "rmwatch_replica_digest_mismatches", "Digest checks that found a difference", registry=r
        )
        self.listener_errors = Counter(
            "rmwatch_replica_listener_errors", "Exceptions raised by subscribers", registry=r
        )
