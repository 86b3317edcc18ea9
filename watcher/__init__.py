"""rmwatch's replica: a cache of PD resource-manager metadata that is provably in sync with etcd.

Public surface::

    from rmwatch.watcher import Replica

    with Replica(endpoints=["127.0.0.1:2379"]) as replica:   # starts loading at once
        replica.wait_ready(30)
        group = replica.get_group("rg1")                     # Versioned(value, revision)

A ``Replica`` that was never started (no ``start()``, no ``with``) does not load anything:
``wait_ready`` and every read raise ``NotReadyError`` at once, saying how to start it.
"""

from rmwatch.errors import (
    DigestMismatchError,
    NotReadyError,
    ReplicaClosedError,
    ReplicaError,
    RevisionTimeoutError,
    WatchCompactedError,
    WatchCutOffError,
    WatchEndedError,
)
from rmwatch.watcher.cache import ChangeEvent, ChangeKind, Versioned
from rmwatch.watcher.replica import Replica
from rmwatch.watcher.state import ReplicaState, Transition

__all__ = [
    "ChangeEvent",
    "ChangeKind",
    "DigestMismatchError",
    "NotReadyError",
    "Replica",
    "ReplicaClosedError",
    "ReplicaError",
    "ReplicaState",
    "RevisionTimeoutError",
    "Transition",
    "Versioned",
    "WatchCompactedError",
    "WatchCutOffError",
    "WatchEndedError",
]
