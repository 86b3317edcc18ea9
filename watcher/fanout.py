"""One replica's etcd watch fanned out to many watchers, with a history to resume from.

The hub subscribes to the replica's batches (``Replica.subscribe_batches``: one call per
publish, after it is visible, with every change of it) and regroups the changes by revision.
A batch is complete when it arrives, so each of its revisions is *sealed* at once: it goes into
the ``RevisionHistory`` and to every ``WatchStream``; a stream never sees half a revision.

A rebuild's diff (after etcd compacted the revisions the replica needed) becomes one group at
the replica's revision after the rebuild, even when it is empty: current watchers receive the
net change as that revision's events; a watcher positioned inside the lost range is told to
reload. A relabel (a batch without events at a newer revision: etcd proved nothing under the
prefix changed) moves the history's head and every stream's position, so idle watchers report
progress at that revision; nothing is stored for it.

The hub starts at the replica's revision when it is created: a watch from an older revision is
answered as compacted (the client reloads), never served from a guess. When the replica's
worker ends (closed or crashed), the hub closes and ends every stream.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from rmwatch._logging import get_logger
from rmwatch.errors import ReplicaClosedError, WatchCompactedError, WatchCutOffError
from rmwatch.watcher.cache import ChangeEvent, ChangeKind
from rmwatch.watcher.history import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_EVENTS,
    RevisionChange,
    RevisionGroup,
    RevisionHistory,
)
from rmwatch.watcher.listeners import ChangeBatch
from rmwatch.watcher.watch_stream import (
    DEFAULT_MAX_BUFFER,
    KeyRange,
    WatchBatch,
    WatchStream,
)

_log = get_logger("fanout")


class Subscribable(Protocol):
    """What the hub needs from a replica: its revision and its batch listeners."""

    @property
    def revision(self) -> int:
        """The applied revision."""
        ...

    def subscribe_batches(
        self,
        callback: Callable[[ChangeBatch], None],
        *,
        on_end: Callable[[], None] | None = None,
    ) -> Callable[[], None]:
        """Call ``callback(batch)`` once per publish; returns an unsubscribe function."""
        ...


@dataclass(frozen=True, slots=True)
class HubStats:
    """A point-in-time view for metrics: watchers, their backlog and lag, cut-offs."""

    watchers: int
    buffered: int
    max_buffered: int
    max_lag: int
    head: int
    floor: int
    history_events: int
    history_bytes: int
    cutoffs: int
    compacted: int


class WatchHub:
    """Fans a replica's changes out to ``WatchStream``s; see the module doc.

    Args:
        replica: the replica to follow (anything with ``revision`` and ``subscribe``).
        max_events: history bound in changes.
        max_bytes: history bound in (approximate) bytes.
        max_buffer: per-watcher bound on unread batches before it is cut off.
    """

    def __init__(
        self,
        replica: Subscribable,
        *,
        max_events: int = DEFAULT_MAX_EVENTS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_buffer: int = DEFAULT_MAX_BUFFER,
    ) -> None:
        self._replica = replica
        self.max_buffer = max_buffer
        self._history = RevisionHistory(max_events=max_events, max_bytes=max_bytes)
        self._lock = threading.Lock()
        self._streams: set[WatchStream] = set()
        self._started = False  # floor known (the replica had a snapshot)
        self._closed = False
        self.cutoffs = 0
        self.compacted = 0
        self._unsubscribe = replica.subscribe_batches(self._on_batch, on_end=self.close)
        with self._lock:
            self._start_locked()
        if str(getattr(replica, "state", "")) == "STOPPED":
            self.close()  # closed before we subscribed: no end will be announced

    # ---- the replica's side (its worker thread, or the relabel confirmer's) ---------------

    def _start_locked(self) -> bool:
        # Any revision read after subscribing is a sound floor: every batch after it reaches
        # the hub whole (a batch is published before it is delivered).
        if not self._started:
            revision = self._replica.revision
            if revision > 0:
                self._history.reset(revision)
                self._started = True
        return self._started

    def _on_batch(self, batch: ChangeBatch) -> None:
        with self._lock:
            if self._closed or not self._start_locked():
                return
            head = self._history.head
            if batch.revision <= head:
                return  # at or below the floor: published before the hub started
            if batch.rebuild:
                changes = tuple(_change(event, batch.revision) for event in batch.events)
                self._seal_locked(RevisionGroup(batch.revision, head, changes, rebuild=True))
                return
            self._seal_events_locked(batch.events)
            if batch.revision > self._history.head:
                # A relabel: nothing under the prefix changed up to batch.revision.
                self._history.advance(batch.revision)
                self._offer_locked(RevisionGroup(batch.revision, head, ()))

    def _seal_events_locked(self, events: tuple[ChangeEvent, ...]) -> None:
        """Seal a watch batch's events, one group per revision (they come in order)."""
        pending: list[RevisionChange] = []
        revision = 0
        for event in events:
            if event.revision <= self._history.head:
                continue
            if pending and event.revision != revision:
                self._seal_locked(RevisionGroup(revision, self._history.head, tuple(pending)))
                pending = []
            revision = event.revision
            pending.append(_change(event, revision))
        if pending:
            self._seal_locked(RevisionGroup(revision, self._history.head, tuple(pending)))

    def _seal_locked(self, group: RevisionGroup) -> None:
        self._history.append(group)
        self._offer_locked(group)

    def _offer_locked(self, group: RevisionGroup) -> None:
        shared: dict[KeyRange, WatchBatch | None] = {}
        for stream in list(self._streams):
            if stream.offer(group, shared):
                if stream.ended:
                    self._count_end(stream)
                stream.wake()

    def _count_end(self, stream: WatchStream) -> None:
        self._streams.discard(stream)
        if isinstance(stream.error, WatchCutOffError):
            self.cutoffs += 1
        else:
            self.compacted += 1

    # ---- watchers ------------------------------------------------------------------------

    def watch(
        self,
        key_range: KeyRange,
        *,
        start_revision: int = 0,
        prev_kv: bool = False,
        max_buffer: int | None = None,
    ) -> WatchStream:
        """A stream of every change in ``key_range`` from ``start_revision`` (0: from now).

        A start older than the history ends the stream at once with WatchCompactedError
        (``resume_revision`` = the oldest revision still held).
        """
        with self._lock:
            if self._closed:
                raise ReplicaClosedError("watch hub was closed")
            if not self._start_locked():
                raise ReplicaClosedError("the replica has no snapshot yet: nothing to watch")
            history = self._history
            start = start_revision if start_revision > 0 else history.head + 1
            stream = WatchStream(
                key_range,
                start=start,
                prev_kv=prev_kv,
                max_buffer=self.max_buffer if max_buffer is None else max_buffer,
                on_close=self._forget,
            )
            compacted = history.check_start(start)
            if compacted is not None:
                self.compacted += 1
                stream.fail(
                    WatchCompactedError(
                        compacted.reason, resume_revision=compacted.compact_revision
                    )
                )
                return stream
            stream.replay(history.since(start))
            self._streams.add(stream)
            return stream

    def _forget(self, stream: WatchStream) -> None:
        with self._lock:
            self._streams.discard(stream)

    @property
    def head(self) -> int:
        """Every change up to this revision has been sealed."""
        return self._history.head

    def stats(self) -> HubStats:
        """Watchers, backlog, lag and history size now."""
        with self._lock:
            streams = list(self._streams)
            head = self._history.head
            buffered = [s.buffered for s in streams]
            lags = [max(0, head - s.delivered) for s in streams]
            return HubStats(
                watchers=len(streams),
                buffered=sum(buffered),
                max_buffered=max(buffered, default=0),
                max_lag=max(lags, default=0),
                head=head,
                floor=self._history.floor,
                history_events=self._history.events,
                history_bytes=self._history.bytes,
                cutoffs=self.cutoffs,
                compacted=self.compacted,
            )

    def close(self) -> None:
        """Unsubscribe and end every stream (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            streams = list(self._streams)
            self._streams.clear()
        self._unsubscribe()
        for stream in streams:
            stream.fail(
                WatchCompactedError(
                    "the watch hub was closed", resume_revision=stream.delivered + 1
                )
            )


def _change(event: ChangeEvent, group_revision: int) -> RevisionChange:
    """A replica change as the history keeps it: bytes, revisions, the previous value."""
    key = event.key.encode("utf-8", "surrogateescape")
    prev = event.prev_entry
    prev_value = None if prev is None else prev.raw
    prev_mod = 0 if prev is None else prev.mod_revision
    if event.kind is ChangeKind.DELETE or event.entry is None:
        return RevisionChange(ChangeKind.DELETE, key, b"", group_revision, prev_value, prev_mod)
    entry = event.entry
    return RevisionChange(ChangeKind.PUT, key, entry.raw, entry.mod_revision, prev_value, prev_mod)


_hubs: weakref.WeakKeyDictionary[Any, WatchHub] = weakref.WeakKeyDictionary()
_hubs_lock = threading.Lock()


def hub_for(replica: Subscribable, **options: int) -> WatchHub:
    """The one hub of ``replica`` (created on first use with ``options``): every consumer of a
    replica shares its history and its one etcd watch."""
    with _hubs_lock:
        hub = _hubs.get(replica)
        if hub is None or hub._closed:
            hub = _hubs[replica] = WatchHub(replica, **options)
        return hub


def replica_watch(
    replica: Subscribable,
    start_revision: int = 0,
    *,
    key_range: KeyRange | None = None,
    prev_kv: bool = False,
) -> WatchStream:
    """The library's watch: every change under the replica's prefix (or ``key_range``) from
    ``start_revision`` (0: from now), one ``WatchBatch`` per revision::

        with replica_watch(replica, get_revision + 1) as stream:
            for batch in stream:          # raises WatchCompactedError / WatchCutOffError
                ...

    The hub behind it starts when first used: a start before that answers compacted.
    """
    if key_range is None:
        prefix = getattr(getattr(replica, "layout", None), "prefix", "")
        key_range = KeyRange.prefix(str(prefix).encode())
    return hub_for(replica).watch(key_range, start_revision=start_revision, prev_kv=prev_kv)


__all__ = ["HubStats", "Subscribable", "WatchHub", "hub_for", "replica_watch"]
