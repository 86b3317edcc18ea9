"""The sidecar's probes and metrics over real HTTP: /health, /ready, /status, /metrics, and the
draining state."""

from __future__ import annotations

from typing import Any

import httpx
from harness import put_group
from prometheus_client.parser import text_string_to_metric_families
from sidecar_support import API, layout, replica, revision_of, serve, sidecar

from rmwatch.http.server_drain import ServerDrain
from rmwatch.http.sidecar_app import create_sidecar_app
from rmwatch.store.keys import KeyLayout
from rmwatch.watcher.replica import Replica

__all__ = ["layout", "replica", "sidecar"]  # fixtures, re-exported so pytest finds them here


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``(sample name, labels) → value`` of a Prometheus text exposition."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


class TestProbes:
    """/health, /ready and /status of a serving replica."""

    def test_health_ready_and_status(self, sidecar: httpx.Client, replica: Replica) -> None:
        """A caught-up replica is healthy and ready; /status carries the replica's view."""
        health = sidecar.get("/health")
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        ready = sidecar.get("/ready")
        assert ready.status_code == 200
        assert ready.json() == {"ready": True, "state": "SERVING", "revision": replica.revision}
        status = sidecar.get("/status").json()
        assert status["state"] == "SERVING"
        assert status["ready"] is True
        assert status["applied_revision"] == replica.revision == revision_of(ready)
        assert status["decode_errors"] == []
        assert status["transitions"][-1]["target"] == "SERVING"
        assert status["sidecar"]["draining"] is False
        assert status["sidecar"]["forward"] is True

    def test_draining_turns_ready_503_and_closes_connections(self, replica: Replica) -> None:
        """While draining, /ready is 503 but reads are still served, with Connection: close."""
        drain = ServerDrain()
        app = create_sidecar_app(replica, writer_url=None, discover_leader=None, drain=drain)
        with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/ready").status_code == 200
            assert "close" not in client.get("/health").headers.get("connection", "")
            drain.begin()
            ready = client.get("/ready")
            assert ready.status_code == 503
            assert ready.json()["state"] == "DRAINING"
            assert ready.headers["connection"] == "close"
            read = client.get(f"{API}/config/controller")
            assert read.status_code == 200
            assert read.headers["connection"] == "close"


class TestMetrics:
    """/metrics: the replica's registry and the sidecar's HTTP metrics in one exposition."""

    def test_named_metrics_are_exposed(
        self, sidecar: httpx.Client, replica: Replica, etcd_client: Any, layout: KeyLayout
    ) -> None:
        """Requests by route template and code, latency, min_revision waits and replica gauges."""
        rev = put_group(etcd_client, layout, "m")
        assert sidecar.get(f"{API}/config/group/m", params={"min_revision": rev}).status_code == 200
        assert sidecar.get(f"{API}/config/group/ghost").status_code == 404
        timeout = sidecar.get(f"{API}/config/groups", params={"min_revision": rev + 100})
        assert timeout.status_code == 504
        response = sidecar.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        samples = _samples(response.text)
        group_route = f"{API}/config/group/{{name}}"

        def value(name: str, **labels: str) -> float:
            return samples[(name, frozenset(labels.items()))]

        assert value("rmwatch_sidecar_http_requests_total", method="GET", route=group_route,
                     code="200") == 1  # fmt: skip
        assert value("rmwatch_sidecar_http_requests_total", method="GET", route=group_route,
                     code="404") == 1  # fmt: skip
        assert value("rmwatch_sidecar_http_requests_total", method="GET",
                     route=f"{API}/config/groups", code="504") == 1  # fmt: skip
        assert value("rmwatch_sidecar_http_request_seconds_count", method="GET",
                     route=group_route) == 2  # fmt: skip
        assert value("rmwatch_sidecar_min_revision_wait_seconds_count", outcome="timeout") == 1
        assert value("rmwatch_sidecar_min_revision_wait_seconds_sum", outcome="timeout") >= 0.9
        assert value("rmwatch_replica_applied_revision") == replica.revision
        # Read when scraped: the newest header revision, and how far the snapshot trails it.
        store = value("rmwatch_replica_store_revision")
        assert store >= replica.revision > 0
        assert value("rmwatch_replica_lag_revisions") == store - replica.revision
        assert value("rmwatch_replica_state", state="SERVING") == 1
        assert ("rmwatch_replica_snapshot_load_seconds_count", frozenset()) in samples
