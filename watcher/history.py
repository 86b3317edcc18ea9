"""Recent revisions kept in memory, so a watcher can resume from an older revision.

A ``RevisionGroup`` is everything that changed at one revision (etcd's watch delivers a
revision's events together, and so do we). The history keeps groups oldest first and knows two
revisions:

- ``head``: every change up to it is in the history (or before ``floor``);
- ``floor``: changes at or below it are gone (evicted to stay within the budget, or never seen:
  the replica's snapshot before the hub started). A watch from ``start <= floor`` is answered as
  etcd answers a compacted revision, so the client reloads instead of silently missing changes.

A group made from a replica's rebuild (compaction) is the net difference between the old and
the new snapshot, published at the rebuild's revision: it stands for every change in
``(after, revision]``. A watcher positioned at ``after`` receives it as one revision; a watch
that starts strictly inside that range cannot be served (its intermediate state is lost) and is
answered compacted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from rmwatch.watcher.cache import ChangeKind

# ~64 bytes of Python object overhead per change beyond its key and value bytes, so a budget in
# bytes roughly bounds memory, not only payload.
_CHANGE_OVERHEAD = 64
DEFAULT_MAX_EVENTS = 10_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RevisionChange:
    """One key's change within a revision, with what etcd's watch reports about it."""

    kind: ChangeKind
    key: bytes
    value: bytes  # b"" for a delete
    mod_revision: int  # a delete's is the revision that deleted it
    prev_value: bytes | None  # None: the key did not exist before
    prev_mod_revision: int = 0

    @property
    def size(self) -> int:
        """Approximate memory held, for the history's byte budget."""
        prev = 0 if self.prev_value is None else len(self.prev_value)
        return len(self.key) * 2 + len(self.value) + prev + _CHANGE_OVERHEAD


@dataclass(frozen=True, slots=True)
class RevisionGroup:
    """Every change at ``revision``; the history was complete through ``after`` before it."""

    revision: int
    after: int
    changes: tuple[RevisionChange, ...]
    rebuild: bool = False

    @property
    def size(self) -> int:
        """Approximate memory held by the group's changes."""
        return sum(change.size for change in self.changes)


@dataclass(frozen=True, slots=True)
class Compacted:
    """A start revision the history cannot serve; ``compact_revision`` is the oldest it can."""

    compact_revision: int
    reason: str


class RevisionHistory:
    """Revision groups, oldest first, bounded by ``max_events`` changes and ``max_bytes``.

    Not thread-safe: the watch hub calls it under its own lock.
    """

    def __init__(
        self, *, max_events: int = DEFAULT_MAX_EVENTS, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        if max_events < 1 or max_bytes < 1:
            raise ValueError("max_events and max_bytes must be positive")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._groups: deque[RevisionGroup] = deque()
        self._events = 0
        self._bytes = 0
        self.floor = 0
        self.head = 0

    def reset(self, revision: int) -> None:
        """Forget everything: complete from ``revision`` on, nothing older can be served."""
        self._groups.clear()
        self._events = self._bytes = 0
        self.floor = self.head = revision

    @property
    def events(self) -> int:
        """Changes held."""
        return self._events

    @property
    def bytes(self) -> int:
        """Approximate bytes held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._groups)

    def append(self, group: RevisionGroup) -> None:
        """Add the next group (its revision after ``head``), evicting the oldest past budget."""
        if group.revision <= self.head:
            raise ValueError(f"group at {group.revision} is not after head {self.head}")
        self._groups.append(group)
        self._events += len(group.changes)
        self._bytes += group.size
        self.head = group.revision
        # Keep at least the newest group even when it alone is over budget: a watcher at head
        # must still get it.
        while len(self._groups) > 1 and (
            self._events > self.max_events or self._bytes > self.max_bytes
        ):
            old = self._groups.popleft()
            self._events -= len(old.changes)
            self._bytes -= old.size
            self.floor = old.revision

    def advance(self, revision: int) -> None:
        """Nothing changed up to ``revision`` (a relabel): it becomes ``head``, with no group."""
        self.head = max(self.head, revision)

    def check_start(self, start: int) -> Compacted | None:
        """None when a watch from ``start`` can be served, else why not and where to resume."""
        if start <= self.floor:
            return Compacted(
                self.floor + 1,
                f"required watch revision: {start} is smaller than current compact/min "
                f"revision {self.floor + 1}.",
            )
        for group in self._groups:
            if group.revision < start:
                continue
            if group.rebuild and start > group.after + 1:
                return Compacted(
                    group.revision + 1,
                    f"required watch revision: {start} falls inside ({group.after}, "
                    f"{group.revision}], which the replica rebuilt from a compacted etcd; "
                    f"resume from {group.revision + 1} after a reload.",
                )
            break
        return None

    def since(self, start: int) -> list[RevisionGroup]:
        """Groups at ``start`` or later, oldest first (call ``check_start`` first)."""
        return [group for group in self._groups if group.revision >= start]


__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_EVENTS",
    "Compacted",
    "RevisionChange",
    "RevisionGroup",
    "RevisionHistory",
]
