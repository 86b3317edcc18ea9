"""The etcd adapter: connecting (endpoints, TLS, auth), retrying, transactions, the watch stream.

Everything above this package talks to etcd through these functions; pyetcd's own API (and its
private parts, where pyetcd has no public way) is used only here.
"""

from rmwatch.store.etcd.client import (
    EtcdClient,
    EtcdConfig,
    TxnResult,
    call_with_retry,
    connect,
    is_transient,
    mark_endpoint_failed,
    txn,
)

__all__ = [
    "EtcdClient",
    "EtcdConfig",
    "TxnResult",
    "call_with_retry",
    "connect",
    "is_transient",
    "mark_endpoint_failed",
    "txn",
]
