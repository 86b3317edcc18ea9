"""The validator: keeps the registry of bad values that /status lists, and decodes every
entry the watch applied, off the apply path.

A load decodes every value before it is published; ``reset`` then takes the bad ones from that
snapshot in one pass. Entries applied from the watch are published undecoded and submitted
here: this thread decodes each one (keeping the value, so readers find it decoded), in slices
of 32 with the cyclic GC paused. Reads never see a bad value either way (an entry a reader
reaches first decodes on the spot, and a bad one reads as absent). The apply path goes first:
while the stream is busy the validator waits (a bounded while) for a quiet moment.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence

from rmwatch._logging import get_logger
from rmwatch.watcher.cache import BadValue, ChangeEvent, Entry, Snapshot
from rmwatch.watcher.gc_control import HeapFreezer, gc_paused
from rmwatch.watcher.metrics import ReplicaMetrics

_log = get_logger("replica")
_BATCH = 2000
# Decoded values between refreezes: a stored group is 3 tracked objects (entry, parsed key,
# StoredGroup), so the collection before each freeze walks ~6k of them plus the garbage made
# meanwhile (a few ms), where a gen-2 collection over every value the watch brought in since
# the load would grow without bound. At 256 (when a value was ~50 pydantic objects) the
# collections cost more than the decodes.
_REFREEZE_AFTER = 2048
# Decodes between two looks at the stream, and how long a look may wait for it to go quiet.
_SLICE = 32
_QUIET = 0.002
_MAX_DEFER = 0.02


class Validator:
    """Checks submitted entries in order; only a key's current entry changes its record."""

    def __init__(
        self,
        *,
        current: Callable[[], Snapshot | None],
        metrics: ReplicaMetrics,
        freeze_heap: bool = True,
        since_publish: Callable[[], float] = lambda: 1.0,
    ) -> None:
        self._current = current
        self._since_publish = since_publish
        self._freeze_heap = freeze_heap
        self._since_freeze = 0  # entries decoded since the last refreeze
        self._metrics = metrics
        self._queue: queue.SimpleQueue[Sequence[ChangeEvent]] = queue.SimpleQueue()
        self._bad: dict[str, BadValue] = {}
        self._lock = threading.Lock()
        self._queued = 0  # written by the submitting (worker) thread only
        self._validated = 0  # written by the validator thread only

    def reset(self, snap: Snapshot) -> None:
        """Take the registry from a freshly loaded (fully decoded) snapshot: its bad values
        replace every record; entries still queued from before are checked as usual (only a
        key's current entry changes its record)."""
        found: dict[str, BadValue] = {}
        for key, entry in snap.entries.items():
            if entry.known and entry.decoded and entry.error is not None:
                found[key] = BadValue(key, entry.mod_revision, entry.error)
        with self._lock:
            new = [key for key, bad in found.items() if self._bad.get(key) != bad]
            self._bad = found
            self._metrics.bad_keys.set(len(found))
        for key in new:
            bad = found[key]
            self._metrics.decode_errors.inc()
            _log.warning("bad_value_found", key=key, revision=bad.revision, error=bad.error)

    def submit(self, events: Sequence[ChangeEvent]) -> None:
        """Queue one applied response's events, as one item (one put, not one per event); a
        delete (no entry) clears the key's record."""
        if events:
            self._queue.put(events)
            self._queued += len(events)

    @property
    def pending(self) -> int:
        """Entries submitted and not yet checked."""
        return self._queued - self._validated

    def bad(self) -> list[BadValue]:
        """The keys currently skipped as bad, sorted by key."""
        with self._lock:
            return sorted(self._bad.values(), key=lambda b: b.key)

    def run(self, stop: threading.Event) -> None:
        """The thread's loop, until ``stop`` is set."""
        while not stop.is_set():
            try:
                batch = list(self._queue.get(timeout=0.2))
            except queue.Empty:
                continue
            # Defer first, then gather: what the stream applied meanwhile joins this batch, so
            # one deferral serves every event of a steady trickle (at one event a response and
            # 800 a second, deferring per event cost ~80 us of CPU an event in wake-ups).
            self._yield_to_apply(stop)
            while len(batch) < _BATCH:
                try:
                    batch.extend(self._queue.get_nowait())
                except queue.Empty:
                    break
            for start in range(0, len(batch), _SLICE):
                if start:
                    self._yield_to_apply(stop)
                with gc_paused():
                    for event in batch[start : start + _SLICE]:
                        self._check(event.key, event.entry)
                # Hand the GIL over after each slice (32 decodes, ~0.4 ms): the sync worker,
                # woken by the next watch response, gets it then instead of waiting up to the
                # interpreter's 5 ms switch interval (once per decode switched more than it
                # decoded, now that a decode takes ~12 us).
                time.sleep(0)
            self._validated += len(batch)
            with self._lock:
                self._metrics.bad_keys.set(len(self._bad))
            self._since_freeze += len(batch)
            if self._freeze_heap and self._since_freeze >= _REFREEZE_AFTER:
                self._since_freeze = 0
                HeapFreezer.refreeze()

    def _yield_to_apply(self, stop: threading.Event) -> None:
        # Decoding shares the GIL with the sync worker: while the stream is busy (a publish
        # within the last 2 ms, as in a catch-up or a burst), wait for a quiet moment, but no
        # longer than 20 ms per slice, so a steady stream still gets every value checked.
        # Two wake-ups at most: one when the stream would have been quiet long enough, had
        # nothing been published since; if something was, the stream is steady and the rest
        # of the bound is waited at once (polling every millisecond cost a wake-up, and a GIL
        # hand-off, per millisecond of a steady stream).
        quiet = self._since_publish()
        if quiet >= _QUIET or stop.wait(_QUIET - quiet) or self._since_publish() >= _QUIET:
            return
        stop.wait(_MAX_DEFER - _QUIET)

    def _check(self, key: str, entry: Entry | None) -> None:
        error = entry.decode() if entry is not None and entry.known else None
        with self._lock:
            # Re-read under the lock: a superseded entry must not overwrite a newer record.
            snap = self._current()
            current = None if snap is None else snap.entries.get_fast(key)
            if current is not entry:
                if current is None:
                    self._bad.pop(key, None)
                return
            if entry is None or not entry.known:
                return
            if error is None:
                self._bad.pop(key, None)
                return
            self._bad[key] = BadValue(key, entry.mod_revision, error)
        self._metrics.decode_errors.inc()
        _log.warning("bad_value_found", key=key, revision=entry.mod_revision, error=error)
