"""Prometheus metrics of one writer, in a registry of its own.

A registry per writer (not the process-global one) so several writers in one process (tests,
``rmwatch dev``) each export their own numbers and never collide on metric names.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# A write is one etcd txn, from about a millisecond on a local etcd up to the 5 s RPC
# deadline: buckets from 1 ms to 5 s.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class WriterMetrics:
    """Writes by op and outcome, write latency, leader epoch and is-leader, for ``/metrics``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.writes = Counter(
            "rmwatch_writer_writes",
            "Writes handled, by operation and outcome (ok, conflict, not_leader, ...).",
            ["op", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rmwatch_writer_write_seconds",
            "Wall time of one write operation, including its reads and any safe retry.",
            ["op"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.leader_epoch = Gauge(
            "rmwatch_writer_leader_epoch",
            "Epoch (leader key create_revision) while this writer leads, else 0.",
            registry=self.registry,
        )
        self.is_leader = Gauge(
            "rmwatch_writer_is_leader", "1 while this writer is the leader.", registry=self.registry
        )
        self.forwarded = Counter(
            "rmwatch_writer_forwarded",
            "HTTP writes forwarded to the leader, by outcome.",
            ["outcome"],
            registry=self.registry,
        )

    def track_leadership(self, epoch: Callable[[], int | None]) -> None:
        """Read the leader gauges from ``epoch()`` at scrape time (None: not leading)."""
        self.leader_epoch.set_function(lambda: float(epoch() or 0))
        self.is_leader.set_function(lambda: 1.0 if epoch() is not None else 0.0)


__all__ = ["WriterMetrics"]
