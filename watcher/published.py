"""The snapshot readers see, and when etcd last vouched for it: what the replica's jobs share.

The sync worker publishes each new snapshot here; the relabel confirmer publishes the same
snapshot under a newer revision. Readers take no lock: ``current`` is one reference, swapped.
"""

from __future__ import annotations

import threading
import time

from rmwatch.watcher.cache import Snapshot
from rmwatch.watcher.failures import StreamLostError
from rmwatch.watcher.metrics import ReplicaMetrics


class Published:
    """The current snapshot, its publish lock, and the freshness facts around it."""

    def __init__(self, metrics: ReplicaMetrics) -> None:
        self.current: Snapshot | None = None
        # Orders the worker's publishes against the confirmer's relabel: a relabel must never
        # land between the worker reading the current snapshot and publishing its successor,
        # or the successor could carry an older revision than the relabel.
        self.apply_lock = threading.Lock()
        # Notified on every publish and every state transition; waiters also poll.
        self.changed = threading.Condition()
        self.confirmed_at = time.monotonic()
        self.swapped_at = 0.0  # monotonic time of the last publish (the validator yields to it)
        self.store_revision = 0
        self._dropped_at = 0  # the applied revision when ``drop`` let the snapshot go
        # Read when scraped rather than set on every publish and header (three gauge writes,
        # each under its own lock, a watch response).
        metrics.applied_revision.set_function(lambda: self.revision)
        metrics.store_revision.set_function(lambda: self.store_revision)
        metrics.lag_revisions.set_function(lambda: max(0, self.store_revision - self.revision))

    @property
    def revision(self) -> int:
        """The applied revision (0 before the first snapshot)."""
        snap = self.current
        return self._dropped_at if snap is None else snap.revision

    def age(self) -> float:
        """Seconds since etcd last confirmed the cache (a watch or progress response)."""
        return time.monotonic() - self.confirmed_at

    def swap(self, snap: Snapshot) -> None:
        """Publish ``snap`` (callers hold ``apply_lock``); never to an older revision."""
        with self.changed:
            current = self.current
            if current is not None and snap.revision < current.revision:
                raise StreamLostError(
                    f"refused to publish revision {snap.revision} over {current.revision}"
                )
            self.current = snap
            self.swapped_at = time.monotonic()
            self.changed.notify_all()

    def since_swap(self) -> float:
        """Seconds since the last publish."""
        return time.monotonic() - self.swapped_at

    def drop(self) -> None:
        """Let the snapshot go (the replica closed), keeping its revision for ``revision``.

        A closed replica's own objects form reference cycles, and a frozen heap (see
        ``gc_control``) keeps cyclic garbage until it is unfrozen: dropping the one reference
        to the snapshot frees it by reference counting, in the process's other replicas'
        lifetime too, leaving only the small skeleton behind.
        """
        with self.changed:
            snap = self.current
            if snap is not None:
                self._dropped_at = snap.revision
                self.current = None
            self.changed.notify_all()

    def confirm(self) -> None:
        """etcd just vouched for the cache (an event or a progress response arrived)."""
        self.confirmed_at = time.monotonic()

    def note_header(self, revision: int) -> None:
        """Remember the newest store revision seen in a response header."""
        self.store_revision = max(self.store_revision, revision)

    def wake(self) -> None:
        """Wake every waiter (a transition, or close)."""
        with self.changed:
            self.changed.notify_all()
