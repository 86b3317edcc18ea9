"""Prometheus metrics of a gRPC server: per RPC (count by code, latency) and per watch hub
(watchers, backlog, lag, cut-offs), in a registry the caller passes in (its ``/metrics``)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rmwatch.watcher.fanout import WatchHub

# Reads from the cache answer in ~0.1-1 ms, writes in a few ms (one etcd txn), min-revision
# waits up to the 5 s bound; streams last as long as the client keeps them.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GrpcMetrics:
    """Counters and histograms of one gRPC server (several servers per process are fine: each
    gets its own registry, or shares the caller's)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "rmwatch_grpc_requests",
            "gRPC calls finished, by service, method and status code",
            ["service", "method", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "rmwatch_grpc_request_seconds",
            "gRPC call duration (a Watch: the whole stream)",
            ["service", "method"],
            buckets=_BUCKETS,
            registry=r,
        )
        self._hubs: list[WatchHub] = []

    def observe(self, service: str, method: str, code: str, seconds: float) -> None:
        """Count one finished call."""
        self.requests.labels(service, method, code).inc()
        self.latency.labels(service, method).observe(seconds)

    def track_hub(self, hub: WatchHub) -> None:
        """Export ``hub``'s watcher gauges and counters at every scrape."""
        if not self._hubs:
            self.registry.register(_HubCollector(self._hubs))
        self._hubs.append(hub)


class _HubCollector(Collector):
    """Reads the hubs' stats when scraped (no bookkeeping on the fan-out path)."""

    def __init__(self, hubs: list[WatchHub]) -> None:
        self._hubs = hubs

    def collect(self) -> Iterator[Metric]:
        stats = [hub.stats() for hub in self._hubs]
        gauges = {
            "rmwatch_grpc_watchers": ("MetaStorage watch streams open", "watchers", sum),
            "rmwatch_grpc_watch_buffered": (
                "Responses waiting in watchers' buffers (all watchers)", "buffered", sum),
            "rmwatch_grpc_watch_buffered_max": (
                "Responses waiting in the fullest watcher's buffer", "max_buffered", max),
            "rmwatch_grpc_watch_lag_revisions": (
                "Revisions the furthest-behind watcher has not received yet", "max_lag", max),
            "rmwatch_grpc_watch_history_events": (
                "Changes held in the watch history", "history_events", sum),
            "rmwatch_grpc_watch_history_bytes": (
                "Approximate bytes held in the watch history", "history_bytes", sum),
            "rmwatch_grpc_watch_history_floor": (
                "Watches from this revision or older answer DATA_COMPACTED", "floor", max),
        }  # fmt: skip
        for name, (doc, field, combine) in gauges.items():
            values: list[int] = [getattr(s, field) for s in stats]
            total = combine(values) if values else 0  # type: ignore[operator]
            yield GaugeMetricFamily(name, doc, value=total)
        counters = {
            "rmwatch_grpc_watch_cutoffs": ("Watchers cut off for falling behind", "cutoffs"),
            "rmwatch_grpc_watch_compacted": (
                "Watches answered DATA_COMPACTED (start too old, inside a rebuild)", "compacted"),
        }  # fmt: skip
        for name, (doc, field) in counters.items():
            yield CounterMetricFamily(name, doc, value=sum(getattr(s, field) for s in stats))


__all__ = ["GrpcMetrics"]
