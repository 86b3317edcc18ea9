"""The etcd adapter: connecting (endpoints, TLS, auth), retrying, transactions, leases, the watch.

Everything above this package talks to etcd through ``EtcdClient`` (a small typed protocol of
the calls rmwatch makes) and these functions; pyetcd's private parts, where pyetcd has no
public way, are used only here (``rmwatch.store.etcd._pyetcd``).

- ``config``: ``EtcdConfig``, endpoint parsing, TLS credentials, gRPC channel options;
- ``auth``: per-endpoint token authentication (a gRPC interceptor);
- ``client``: the ``EtcdClient`` protocol, ``connect``, ``txn``, ``mark_endpoint_failed``;
- ``retry``: which failures are transient, and ``call_with_retry``;
- ``lease``: grant, one keepalive, revoke, each with the caller's deadline;
- ``watch``: ``WatchSession``, one watch stream over a prefix.
"""

from rmwatch.store.etcd.client import (
    Compare,
    EtcdClient,
    KeyMeta,
    TxnBuilders,
    TxnOp,
    TxnResult,
    connect,
    mark_endpoint_failed,
    txn,
)
from rmwatch.store.etcd.config import EtcdConfig
from rmwatch.store.etcd.lease import grant_lease, keepalive_once, revoke_lease
from rmwatch.store.etcd.retry import call_with_retry, describe, is_transient
from rmwatch.store.etcd.watch import WatchSession

__all__ = [
    "Compare",
    "EtcdClient",
    "EtcdConfig",
    "KeyMeta",
    "TxnBuilders",
    "TxnOp",
    "TxnResult",
    "WatchSession",
    "call_with_retry",
    "connect",
    "describe",
    "grant_lease",
    "is_transient",
    "keepalive_once",
    "mark_endpoint_failed",
    "revoke_lease",
    "txn",
]
