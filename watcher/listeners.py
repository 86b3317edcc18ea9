"""The replica's subscribers: change events handed over in order, after they are visible."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from rmwatch._logging import get_logger
from rmwatch.watcher.cache import ChangeEvent
from rmwatch.watcher.metrics import ReplicaMetrics

_log = get_logger("replica")

Listener = Callable[[ChangeEvent], None]


class Listeners:
    """A copy-on-write list of callbacks: delivering never takes a lock."""

    def __init__(self, metrics: ReplicaMetrics) -> None:
        self._metrics = metrics
        self._callbacks: list[Listener] = []
        self._lock = threading.Lock()

    def add(self, callback: Listener) -> Callable[[], None]:
        """Register ``callback``; returns the function that removes it again."""
        with self._lock:
            self._callbacks = [*self._callbacks, callback]

        def remove() -> None:
            with self._lock:
                self._callbacks = [cb for cb in self._callbacks if cb is not callback]

        return remove

    def deliver(self, events: Iterable[ChangeEvent]) -> None:
        """Call every listener for every event, in order; an exception is logged and counted,
        and never stops the others."""
        for event in events:
            for callback in self._callbacks:
                try:
                    callback(event)
                except Exception:
                    self._metrics.listener_errors.inc()
                    _log.exception("listener_failed", key=event.key)
