"""pyetcd client construction and small KV-maintenance helpers for tests."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

import pyetcd

from rmwatch.store.etcd.guarded import GuardedClient

# pyetcd's Endpoint default time_retry is 300 s: after one failed RPC the endpoint is
# blacklisted for 5 minutes, which turns a restarted member into NoServerAvailableError
# for the rest of the test run.  0.5 s is long enough to fail over, short enough to
# come back to a member that restarts within a test.
DEFAULT_TIME_RETRY = 0.5


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """Split ``host:port`` or ``http://host:port`` into (host, port)."""
    text = endpoint.strip()
    if "://" in text:
        parts = urlsplit(text)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"endpoint {endpoint!r} needs a host and a port")
        if parts.scheme != "http":
            raise ValueError(f"endpoint {endpoint!r}: only plain http is supported in tests")
        return parts.hostname, parts.port
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"endpoint {endpoint!r} is not host:port")
    return host, int(port)


def normalize_endpoint(endpoint: str) -> str:
    """Return ``host:port`` for any accepted endpoint spelling."""
    host, port = parse_endpoint(endpoint)
    return f"{host}:{port}"


def make_client(
    endpoints: Sequence[str],
    timeout: float = 5,
    time_retry: float = DEFAULT_TIME_RETRY,
) -> pyetcd.MultiEndpointEtcd3Client:
    """Return a failover client over ``endpoints``; every RPC has a ``timeout`` s deadline."""
    if not endpoints:
        raise ValueError("make_client needs at least one endpoint")
    eps = [
        pyetcd.Endpoint(host, port, secure=False, time_retry=time_retry)
        for host, port in map(parse_endpoint, endpoints)
    ]
    return GuardedClient(eps, failover=True, timeout=timeout)


def current_revision(endpoints: Sequence[str]) -> int:
    """Return the store's current revision (the header of a linearizable range)."""
    with make_client(endpoints) as client:
        # count_only keeps the response tiny whatever the keyspace holds.
        response = client.get_response(b"\0", count_only=True)
        return int(response.header.revision)


def compact(endpoints: Sequence[str], revision: int | None = None) -> int:
    """Physically compact history up to ``revision`` (default: current); return it."""
    rev = current_revision(endpoints) if revision is None else revision
    with make_client(endpoints) as client:
        # physical=True: the call returns only once the backend dropped old revisions,
        # so a read at an older revision right after this is guaranteed to fail.
        client.compact(rev, physical=True)
    return rev
