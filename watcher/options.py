"""The replica's settings, fixed at construction and shared read-only by its jobs."""

from __future__ import annotations

from dataclasses import dataclass

from rmwatch.store.etcd import EtcdConfig
from rmwatch.store.keys import KeyLayout


@dataclass(frozen=True)
class ReplicaOptions:
    """What ``Replica(...)`` was given, minus the test seams (see ``Replica`` for each)."""

    etcd: EtcdConfig
    layout: KeyLayout
    page_size: int
    max_staleness: float
    progress_interval: float
    # 8 s by default: keepalive (5 s + 2 s ping timeout) normally fails a frozen stream first;
    # this catches a server that answers pings but sends nothing, with progress asked every 1 s.
    stall_timeout: float
    digest_interval: float | None
    strict_digest: bool
    # Off by default: the previous value is already in the snapshot, and asking etcd for it
    # makes catch-up replay an order of magnitude slower (see bench/README.md). With it on, the
    # stream carries prev_kv and every event is checked against the cache.
    verify_prev_kv: bool
