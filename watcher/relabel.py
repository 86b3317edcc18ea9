"""The relabel confirmer: reaches a revision moved on by writes outside the prefix.

etcd's revision is global, so a reader's ``min_revision`` (a writer's commit elsewhere, say) may
never arrive by this prefix's watch. The confirmer proves with one range (a ``StoreMark``) that
nothing under the prefix changed between the applied revision and the store's, and republishes
the unchanged snapshot with the store's revision. A relabel is not a state transition: it is
counted (``relabels``) and logged at debug level.
"""

from __future__ import annotations

import threading
from dataclasses import replace

from rmwatch._logging import get_logger
from rmwatch.store.etcd import EtcdClient
from rmwatch.watcher.failures import describe
from rmwatch.watcher.listeners import ChangeBatch, Listeners
from rmwatch.watcher.loader import store_mark
from rmwatch.watcher.published import Published
from rmwatch.watcher.state import StateMachine

_log = get_logger("replica")

# 20 ms first: a write under the prefix usually arrives by the watch within a few ms, and then
# no etcd request is needed. 30 ms after each proof: at most one range per 50 ms for all
# waiters together.
_SETTLE = 0.02
_PAUSE = 0.03


class RelabelConfirmer:
    """Runs on its own thread; ``request`` asks it for a revision and returns at once."""

    def __init__(
        self,
        *,
        client: EtcdClient,
        prefix: str,
        published: Published,
        machine: StateMachine,
        listeners: Listeners,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._published = published
        self._machine = machine
        self._listeners = listeners
        self._wanted = 0  # highest revision a reader waits for (min_revision)
        self._wake = threading.Event()
        self.relabels = 0

    def request(self, revision: int) -> None:
        """Ask for ``revision``; a no-op when the cache is already there."""
        self._wanted = max(self._wanted, revision)
        if revision > self._published.revision:
            self._wake.set()

    def stop(self) -> None:
        """Wake the thread so it sees ``stop`` set (called by close)."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """The thread: wait for a request, then prove and relabel, until ``stop`` is set."""
        while not stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if stop.wait(_SETTLE):
                return
            snap = self._published.current
            if snap is None or not self._machine.caught_up or snap.revision >= self._wanted:
                continue
            try:
                mark = store_mark(self._client, self._prefix, deadline=2.0)
            except Exception as exc:
                _log.warning("relabel_failed", error=describe(exc))
                stop.wait(0.05)
                continue
            if mark.store_revision > snap.revision and mark.unchanged_since(snap):
                ticket: int | None = None
                with self._published.apply_lock:
                    if self._published.current is snap:  # nothing newer was published meanwhile
                        self._published.swap(replace(snap, revision=mark.store_revision))
                        ticket = self._listeners.reserve()
                if ticket is not None:
                    # No events at a newer revision: watchers may report progress there.
                    self._listeners.publish(ChangeBatch(mark.store_revision, ()), ticket)
                    self.relabels += 1
                    _log.debug(
                        "snapshot_relabeled",
                        applied_revision=snap.revision,
                        revision=mark.store_revision,
                    )
            stop.wait(_PAUSE)
