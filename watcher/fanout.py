"""One replica's etcd watch fanned out to many watchers, with a history to resume from.

The hub subscribes to the replica (``Replica.subscribe``: every change, watch events and rebuild
diffs, in order, after it is visible) and regroups the changes by revision. A revision is
*sealed* when it is complete: when a change of a later revision arrives, or when the replica has
finished handing over the batch that carried it. Sealed groups go into the ``RevisionHistory``
and to every ``WatchStream``; a stream never sees half a revision.

How the hub knows a batch was handed over: the replica calls its listeners from one function
that loops over a batch's events, on its worker thread. The listener remembers that caller's
frame; the hub's sealer thread seals the pending revision once that frame has left the worker's
stack (``sys._current_frames``), which is exact and needs no timing guess. A hook on the
replica that passes a whole revision at once would make this unnecessary.

A rebuild's diff (after etcd compacted the revisions the replica needed) becomes one group at
the replica's revision after the rebuild: current watchers receive the net change as that
revision's events; a watcher positioned inside the lost range is told to reload.

The hub starts at the replica's revision when it is created: a watch from an older revision is
answered as compacted (the client reloads), never served from a guess.
"""

from __future__ import annotations

import sys
import threading
import time
import weakref
from dataclasses import dataclass
from types import FrameType
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
from rmwatch.watcher.watch_stream import (
    DEFAULT_MAX_BUFFER,
    KeyRange,
    WatchBatch,
    WatchStream,
)

_log = get_logger("fanout")

# While the replica is still handing over a batch, look again every 0.2 ms: a batch of a few
# events takes microseconds, a rebuild diff of 100k keys ~100 ms.
_SEAL_POLL = 0.0002
# An idle hub checks once a second whether its replica was closed, then closes itself.
_IDLE_CHECK = 1.0


class Subscribable(Protocol):
    """What the hub needs from a replica: its revision and its change listeners."""

    @property
    def revision(self) -> int:
        """The applied revision."""
        ...

    def subscribe(self, callback: Any) -> Any:
        """Call ``callback(event)`` for every change; returns an unsubscribe function."""
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
        self._pending_cond = threading.Condition(self._lock)
        self._streams: set[WatchStream] = set()
        self._started = False  # floor known (the replica had a snapshot)
        self._pending: list[RevisionChange] = []
        self._pending_revision = 0
        self._pending_rebuild = False
        self._drop_run = False  # a rebuild run already covered by the floor
        self._caller: FrameType | None = None
        self._worker = 0
        self._closed = False
        self._closed_by_replica = False
        self.cutoffs = 0
        self.compacted = 0
        self._unsubscribe = replica.subscribe(self._on_change)
        with self._lock:
            self._start_locked()
        self._sealer = threading.Thread(target=self._seal_loop, name="rmwatch-fanout", daemon=True)
        self._sealer.start()

    # ---- the replica's side (its worker thread) ------------------------------------------

    def _start_locked(self) -> bool:
        # Any revision read after subscribing is a sound floor: every change after it reaches
        # the listener whole (a batch is published before it is delivered).
        if not self._started:
            revision = self._replica.revision
            if revision > 0:
                self._history.reset(revision)
                self._started = True
        return self._started

    def _on_change(self, event: ChangeEvent) -> None:
        caller = sys._getframe(1)  # the replica's delivering loop (see the module doc)
        with self._lock:
            if self._closed or not self._start_locked():
                return
            self._caller = caller
            self._worker = threading.get_ident()
            if event.source == "rebuild":
                if not self._pending_rebuild:
                    self._seal_locked()
                    revision = self._replica.revision
                    self._pending_rebuild = True
                    self._pending_revision = revision
                    self._drop_run = revision <= self._history.head
                if not self._drop_run:
                    self._pending.append(_change(event, self._pending_revision))
            else:
                if self._pending_rebuild:
                    self._seal_locked()
                revision = event.revision
                if revision <= self._history.head:
                    return  # at or below the floor: a batch published before the hub started
                if self._pending and revision > self._pending_revision:
                    self._seal_locked()
                self._pending_revision = revision
                self._pending.append(_change(event, revision))
            self._pending_cond.notify()

    # ---- sealing (the hub's thread) ------------------------------------------------------

    def _seal_loop(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not (self._pending or self._pending_rebuild):
                    if not self._pending_cond.wait(_IDLE_CHECK) and self._replica_stopped():
                        self._closed_by_replica = True
                        break
                if self._closed_by_replica:
                    break
                if self._closed:
                    return
                caller, worker = self._caller, self._worker
            if caller is not None and _on_stack(worker, caller):
                time.sleep(_SEAL_POLL)
                continue
            with self._lock:
                if self._caller is caller:  # no newer batch started meanwhile
                    self._seal_locked()
                    self._caller = None
        self.close()  # the replica stopped: end the streams and let both be collected

    def _replica_stopped(self) -> bool:
        return str(getattr(self._replica, "state", "")) == "STOPPED"

    def _seal_locked(self) -> None:
        rebuild, changes = self._pending_rebuild, self._pending
        drop = self._drop_run
        self._pending, self._pending_rebuild, self._drop_run = [], False, False
        if not changes or drop:
            return
        group = RevisionGroup(
            self._pending_revision, self._history.head, tuple(changes), rebuild=rebuild
        )
        self._history.append(group)
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
            self._pending_cond.notify_all()
        self._unsubscribe()
        for stream in streams:
            stream.fail(
                WatchCompactedError(
                    "the watch hub was closed", resume_revision=stream.delivered + 1
                )
            )
        if threading.current_thread() is not self._sealer:
            self._sealer.join(timeout=2.0)


def _on_stack(thread_id: int, frame: FrameType) -> bool:
    """Whether ``frame`` is still executing on thread ``thread_id``."""
    current: FrameType | None = sys._current_frames().get(thread_id)
    while current is not None:
        if current is frame:
            return True
        current = current.f_back
    return False


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
