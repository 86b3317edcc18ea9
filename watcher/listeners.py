"""The replica's subscribers: change events handed over in order, after they are visible.

Two kinds of subscriber: per-event listeners (``add``: one call per change) and batch
listeners (``add_batch``: one call per publish with every change of it, after the per-event
listeners). A batch says where the replica stands after the publish, so a consumer that groups
changes by revision (the watch hub) knows the batch is complete without guessing.

A batch's kinds:

- a watch response applied: its events in order, ``revision`` = the newest of them;
- a rebuild's (or reload's) diff: ``rebuild=True``, the net changes, ``revision`` = the new
  snapshot's; it stands for every change after the previous revision;
- a relabel: no events, ``revision`` moved on because etcd proved nothing under the prefix
  changed up to it (writes elsewhere), so watchers may report progress at that revision.

When the replica's worker ends (closed, or crashed), ``end`` tells batch subscribers that no
batch will follow.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rmwatch._logging import get_logger
from rmwatch.watcher.cache import ChangeEvent
from rmwatch.watcher.metrics import ReplicaMetrics

_log = get_logger("replica")

Listener = Callable[[ChangeEvent], None]


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    """One publish: the snapshot's ``revision`` after it and its ``events`` in order."""

    revision: int
    events: tuple[ChangeEvent, ...]
    rebuild: bool = False


BatchListener = Callable[[ChangeBatch], None]


@dataclass(frozen=True, slots=True)
class _BatchSubscriber:
    callback: BatchListener
    on_end: Callable[[], None] | None


class Listeners:
    """Copy-on-write lists of callbacks: delivering never takes a lock."""

    def __init__(self, metrics: ReplicaMetrics) -> None:
        self._metrics = metrics
        self._callbacks: list[Listener] = []
        self._batch: list[_BatchSubscriber] = []
        self._lock = threading.Lock()
        # Publish order: the worker and the relabel confirmer publish from two threads and
        # deliver after releasing the publish lock (a slow per-event listener must not hold up
        # a relabel), so each takes a ticket while it holds that lock and batch listeners are
        # called in ticket order: a relabel's batch never overtakes the worker's before it.
        self._turn = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    def add(self, callback: Listener) -> Callable[[], None]:
        """Register ``callback``; returns the function that removes it again."""
        with self._lock:
            self._callbacks = [*self._callbacks, callback]

        def remove() -> None:
            with self._lock:
                self._callbacks = [cb for cb in self._callbacks if cb is not callback]

        return remove

    def add_batch(
        self, callback: BatchListener, *, on_end: Callable[[], None] | None = None
    ) -> Callable[[], None]:
        """Register ``callback`` for every publish (and ``on_end`` for the worker's end);
        returns the function that removes it again."""
        subscriber = _BatchSubscriber(callback, on_end)
        with self._lock:
            self._batch = [*self._batch, subscriber]

        def remove() -> None:
            with self._lock:
                self._batch = [s for s in self._batch if s is not subscriber]

        return remove

    def deliver(self, events: Iterable[ChangeEvent]) -> None:
        """Call every listener for every event, in order; an exception is logged and counted,
        and never stops the others."""
        callbacks = self._callbacks
        if not callbacks:
            return  # a catch-up response holds thousands of events
        for event in events:
            for callback in callbacks:
                try:
                    callback(event)
                except Exception:
                    self._metrics.listener_errors.inc()
                    _log.exception("listener_failed", key=event.key)

    def reserve(self) -> int:
        """A ticket for the next ``publish``: take it while holding the publish lock, right
        after the swap, and pass it to ``publish`` with nothing in between that can fail."""
        with self._turn:
            ticket = self._next_ticket
            self._next_ticket += 1
            return ticket

    def publish(self, batch: ChangeBatch, ticket: int) -> None:
        """Deliver ``batch``: each event to the per-event listeners, then, once every earlier
        ticket was delivered, the whole batch to the batch listeners; exceptions are logged
        and counted as in ``deliver``."""
        try:
            self.deliver(batch.events)
            with self._turn:
                self._turn.wait_for(lambda: self._serving == ticket)
            for subscriber in self._batch:
                try:
                    subscriber.callback(batch)
                except Exception:
                    self._metrics.listener_errors.inc()
                    _log.exception("batch_listener_failed", revision=batch.revision)
        finally:
            with self._turn:
                self._serving = max(self._serving, ticket + 1)
                self._turn.notify_all()

    def end(self) -> None:
        """Tell batch subscribers that the worker ended (closed or crashed): no batch follows."""
        for subscriber in self._batch:
            if subscriber.on_end is None:
                continue
            try:
                subscriber.on_end()
            except Exception:
                self._metrics.listener_errors.inc()
                _log.exception("batch_listener_failed", revision=None)
