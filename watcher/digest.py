"""Comparing a snapshot with etcd's own range at the snapshot's revision (the digest check).

The replica's structure makes divergence unlikely; this check makes it detectable. It compares
bytes and mod revisions, key for key, so it needs no decoding.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from rmwatch.watcher.cache import Snapshot


@dataclass(frozen=True)
class DigestResult:
    """Outcome of comparing the cache with etcd at ``revision``."""

    revision: int
    keys: int
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when cache and etcd agree key for key."""
        return not self.mismatched


def compare(snap: Snapshot, etcd_kvs: Iterable[tuple[str, bytes, int]]) -> DigestResult:
    """Keys whose bytes or mod revision differ between ``snap`` and etcd's range at its
    revision (missing on either side included), sorted."""
    ours = snap.raw_items()
    theirs = {key: (value, mod) for key, value, mod in etcd_kvs}
    mismatched = sorted(
        key for key in ours.keys() | theirs.keys() if ours.get(key) != theirs.get(key)
    )
    return DigestResult(snap.revision, len(theirs), mismatched)
