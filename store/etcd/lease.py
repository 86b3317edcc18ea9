"""Lease calls with a deadline of the caller's choosing: grant, one keepalive, revoke.

A lease holder must bound each call by a fraction of the lease TTL (a hung call must not eat
the lease), while pyetcd's lease calls use the client's deadline (5 s, as long as a whole
default TTL), and its ``Lease.refresh()`` sends one keepalive and nothing more. Keepalive and
revoke hence call etcd's Lease stub directly, failing over as pyetcd's own calls do.
"""

from __future__ import annotations

import grpc
from pyetcd import etcdrpc

from rmwatch.store.etcd._pyetcd import fail_over
from rmwatch.store.etcd.client import EtcdClient


def grant_lease(client: EtcdClient, ttl: int) -> int:
    """Grant a lease of ``ttl`` seconds (the client's deadline); return its id."""
    return int(client.lease(ttl).id)


def keepalive_once(client: EtcdClient, lease_id: int, *, timeout: float) -> int:
    """Send one keepalive within ``timeout`` s; return the TTL etcd granted (0: lease gone).

    Raises pyetcd's connection errors (the endpoint is marked failed first) or
    ConnectionError when the stream closed without an answer.
    """
    request = etcdrpc.LeaseKeepAliveRequest(ID=lease_id)
    try:
        for response in client.leasestub.LeaseKeepAlive(
            iter([request]),
            timeout,
            credentials=client.call_credentials,
            metadata=client.metadata,
        ):
            return int(response.TTL)
    except grpc.RpcError as exc:
        fail_over(client, exc)
    raise ConnectionError("keepalive stream closed without a response")


def revoke_lease(client: EtcdClient, lease_id: int, *, timeout: float) -> None:
    """Revoke a lease within ``timeout`` s, deleting every key attached to it."""
    try:
        client.leasestub.LeaseRevoke(
            etcdrpc.LeaseRevokeRequest(ID=lease_id),
            timeout,
            credentials=client.call_credentials,
            metadata=client.metadata,
        )
    except grpc.RpcError as exc:
        fail_over(client, exc)


__all__ = ["grant_lease", "keepalive_once", "revoke_lease"]
