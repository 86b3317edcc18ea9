"""One consumer of a replica's watch hub: a key range, a position and a bounded buffer.

The hub offers every sealed revision group to every stream (on its own thread, under its
lock); a stream keeps the part inside its key range as a ``WatchBatch`` and its consumer takes
batches at its own pace. A consumer that does not keep up is cut off once ``max_buffer`` batches
wait (beyond the replay it asked for): buffering without a bound would let one stuck client
grow the replica's memory, and slowing the hub would delay every other watcher. A cut-off or a
compacted start ends the stream with a ``WatchEnd`` that says where to resume, so no change is
ever skipped silently.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from rmwatch.errors import WatchCompactedError, WatchCutOffError, WatchEndedError
from rmwatch.watcher.history import RevisionChange, RevisionGroup

DEFAULT_MAX_BUFFER = 1024


@dataclass(frozen=True, slots=True)
class KeyRange:
    """etcd's key range: ``end`` empty = the key alone, ``b"\\0"`` = every key from ``key``,
    otherwise ``[key, end)``."""

    key: bytes
    end: bytes = b""

    def contains(self, key: bytes) -> bool:
        """Whether ``key`` is in the range."""
        if not self.end:
            return key == self.key
        if self.end == b"\0":
            return key >= self.key
        return self.key <= key < self.end

    @classmethod
    def prefix(cls, prefix: bytes) -> KeyRange:
        """Every key starting with ``prefix`` (etcd's ``WithPrefix``); ``b""`` is every key."""
        if not prefix:
            return cls(b"\0", b"\0")
        return cls(prefix, prefix_end(prefix))


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key after every key that starts with ``prefix`` (etcd's GetPrefixRangeEnd)."""
    end = bytearray(prefix)
    for index in range(len(end) - 1, -1, -1):
        if end[index] < 0xFF:
            end[index] += 1
            return bytes(end[: index + 1])
    return b"\0"


class WatchBatch:
    """The changes of one revision inside a stream's key range; ``encoded`` caches a wire
    encoding per variant so streams sharing a batch encode it once."""

    __slots__ = ("changes", "encoded", "rebuild", "revision")

    def __init__(self, revision: int, changes: tuple[RevisionChange, ...], rebuild: bool) -> None:
        self.revision = revision
        self.changes = changes
        self.rebuild = rebuild
        self.encoded: dict[object, bytes] = {}

    def __repr__(self) -> str:
        return f"WatchBatch(revision={self.revision}, changes={len(self.changes)})"


def batch_of(group: RevisionGroup, key_range: KeyRange) -> WatchBatch | None:
    """The part of ``group`` inside ``key_range``, or None when nothing in it changed."""
    changes = tuple(c for c in group.changes if key_range.contains(c.key))
    return WatchBatch(group.revision, changes, group.rebuild) if changes else None


@dataclass(frozen=True, slots=True)
class WatchEnd:
    """The last item of a stream that ended on the replica's side."""

    error: WatchEndedError


WatchItem = WatchBatch | WatchEnd


class WatchStream:
    """A watcher's queue. The hub calls ``offer``; the consumer calls ``take`` (or iterates).

    Args:
        key_range: the keys this watcher wants.
        start: the first revision it wants (the hub resolves 0 to "from now").
        prev_kv: whether events carry the previous value (kept for the consumer's encoder).
        max_buffer: batches allowed to wait beyond the replay before the stream is cut off.
        on_close: called once when the consumer closes the stream (the hub unregisters it).
    """

    def __init__(
        self,
        key_range: KeyRange,
        *,
        start: int,
        prev_kv: bool = False,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        on_close: Callable[[WatchStream], None] | None = None,
    ) -> None:
        self.key_range = key_range
        self.start = start
        self.prev_kv = prev_kv
        self.max_buffer = max_buffer
        self.position = start - 1  # newest revision offered (delivered or buffered)
        self.delivered = start - 1  # newest revision the consumer took
        self._items: deque[WatchItem] = deque()
        self._replay = 0  # replayed batches still buffered (not counted against max_buffer)
        self._ended = False
        self.error: WatchEndedError | None = None  # why the replica's side ended it
        self._closed = False
        self._cond = threading.Condition()
        self._on_close = on_close
        self._waker: Callable[[], None] | None = None

    # ---- hub side (hub thread, under the hub's lock) -------------------------------------

    def replay(self, groups: list[RevisionGroup]) -> None:
        """Queue the history a new stream asked for (exempt from the buffer bound)."""
        with self._cond:
            for group in groups:
                batch = batch_of(group, self.key_range)
                if batch is not None:
                    self._items.append(batch)
                    self._replay += 1
                self.position = max(self.position, group.revision)
            self._cond.notify_all()

    def offer(self, group: RevisionGroup, shared: dict[KeyRange, WatchBatch | None]) -> bool:
        """Queue ``group``'s part in range; returns True when the consumer should be woken.

        ``shared`` holds the filtered batch per key range for this group, so streams on the
        same range share one batch (and its cached encoding).
        """
        with self._cond:
            if self._ended or self._closed:
                return False
            if group.rebuild:
                if self.position >= group.revision:
                    return False
                if self.position > group.after:
                    # This watcher started inside the range the rebuild summarizes: the state
                    # at its position is lost, only a reload can bring it back.
                    self._end(
                        WatchCompactedError(
                            f"watch position {self.position} fell inside ({group.after}, "
                            f"{group.revision}], rebuilt by the replica after etcd compacted "
                            "it; reload and watch again",
                            resume_revision=group.revision + 1,
                        )
                    )
                    return True
            elif group.revision <= self.position:
                return False
            if self.key_range in shared:
                batch = shared[self.key_range]
            else:
                batch = shared[self.key_range] = batch_of(group, self.key_range)
            self.position = group.revision
            if batch is None:
                return False
            if len(self._items) - self._replay >= self.max_buffer:
                self._items.clear()
                self._replay = 0
                self._end(
                    WatchCutOffError(
                        f"watcher fell behind: {self.max_buffer} responses waited unread "
                        f"(limit {self.max_buffer}); watch again from revision "
                        f"{self.delivered + 1}",
                        resume_revision=self.delivered + 1,
                    )
                )
                return True
            self._items.append(batch)
            self._cond.notify_all()
            return True

    def fail(self, error: WatchEndedError) -> None:
        """End the stream with ``error`` (also from the hub, on a compacted start)."""
        with self._cond:
            if not self._ended:
                self._end(error)
        self.wake()

    def _end(self, error: WatchEndedError) -> None:
        self._ended = True
        self.error = error
        self._items.append(WatchEnd(error))
        self._cond.notify_all()

    # ---- consumer side -------------------------------------------------------------------

    def set_waker(self, waker: Callable[[], None] | None) -> None:
        """Call ``waker()`` (from the hub's thread) whenever items arrive: an asyncio consumer
        passes ``lambda: loop.call_soon_threadsafe(event.set)``."""
        self._waker = waker

    def wake(self) -> None:
        """Run the consumer's waker, if any (the hub calls it after offering)."""
        waker = self._waker
        if waker is not None:
            waker()

    def take(self, timeout: float | None = 0.0) -> list[WatchItem]:
        """Everything queued (waiting up to ``timeout`` s for something; None = no bound)."""
        with self._cond:
            if not self._items and timeout != 0.0 and not self._closed:
                self._cond.wait_for(lambda: bool(self._items) or self._closed, timeout)
            items = list(self._items)
            self._items.clear()
            self._replay = 0 if len(items) >= self._replay else self._replay - len(items)
            for item in items:
                if isinstance(item, WatchBatch):
                    self.delivered = item.revision
            if not self._items and not self._ended:
                self.delivered = max(self.delivered, self.position)
            return items

    @property
    def buffered(self) -> int:
        """Batches waiting for the consumer."""
        return len(self._items)

    @property
    def closed(self) -> bool:
        """Whether the consumer closed the stream."""
        return self._closed

    @property
    def ended(self) -> bool:
        """Whether the replica's side ended the stream (compacted, cut off, hub closed)."""
        return self._ended

    def progress_revision(self) -> int | None:
        """The revision a progress notification may report (every change up to it was
        delivered), or None while batches still wait."""
        with self._cond:
            if self._items or self._ended:
                return None
            return max(self.position, 0)

    def close(self) -> None:
        """Stop watching (idempotent); the hub forgets the stream."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        if self._on_close is not None:
            self._on_close(self)

    def __enter__(self) -> WatchStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[WatchBatch]:
        """Batches in revision order until closed; raises the WatchEndedError that ended it."""
        while not self._closed:
            for item in self.take(timeout=None):
                if isinstance(item, WatchEnd):
                    raise item.error
                yield item


__all__ = [
    "DEFAULT_MAX_BUFFER",
    "KeyRange",
    "WatchBatch",
    "WatchEnd",
    "WatchItem",
    "WatchStream",
    "batch_of",
    "prefix_end",
]
