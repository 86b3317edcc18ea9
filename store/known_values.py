"""What the writer last saw committed at a key, so a read-modify-write can skip its read.

A modify (a group's settings, the controller config) reads the key, patches it, and commits
guarded by the mod_revision it read. When this writer committed the key itself, or read it on
a lost race, it already knows the value and its revision: planning from that saves a round trip
and ~0.5 ms of CPU a write. It is never trusted beyond the guard: if the key moved since (a
write by another process, a former leader's, a delete), the compare fails, the txn's failure
branch brings the current value back (the writer ``put``s it here), and the write is planned
again from it. So a stale entry costs one failed compare, never a wrong write.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

KNOWN_KEYS = 1024
"""Keys remembered (least recently used dropped first): far more than the controller and the
groups an operator edits at once, and at most ~1 MiB of values (group values are ~200 B)."""


class KnownValues:
    """A bounded, thread-safe map of key -> (value bytes, mod_revision) as last committed."""

    def __init__(self, capacity: int = KNOWN_KEYS) -> None:
        self._capacity = capacity
        self._items: OrderedDict[str, tuple[bytes, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[bytes, int] | None:
        """The value and mod_revision last seen at ``key``, or None."""
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: str, value: bytes, mod_revision: int) -> None:
        """``key`` holds ``value`` since ``mod_revision`` (a commit, or a read of it). An older
        revision than the one held is ignored: two threads writing one key may report out of
        order, and etcd's revisions only grow."""
        with self._lock:
            held = self._items.get(key)
            if held is not None and held[1] > mod_revision:
                return
            self._items[key] = (value, mod_revision)
            self._items.move_to_end(key)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)

    def forget(self, key: str) -> None:
        """Nothing is known of ``key`` any more (deleted, or an outcome not known)."""
        with self._lock:
            self._items.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


__all__ = ["KNOWN_KEYS", "KnownValues"]
