"""The heartbeat: asks etcd for watch progress and cancels a stream that stays silent.

A frozen member sends no FIN or RST, so a stream to it can look open forever. Every
``progress_interval`` the heartbeat asks for a progress notification (etcd answers with its
current revision, which confirms the cache); a stream silent past ``stall_timeout`` is
cancelled, and the sync worker reconnects elsewhere. It also refreshes the age and ready gauges.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from rmwatch._logging import get_logger
from rmwatch.store.etcd.watch import WatchSession
from rmwatch.watcher.metrics import ReplicaMetrics

_log = get_logger("replica")


class Heartbeat:
    """Runs on its own thread until ``stop`` is set."""

    def __init__(
        self,
        *,
        session: Callable[[], WatchSession | None],
        progress_interval: float,
        stall_timeout: float,
        metrics: ReplicaMetrics,
        age: Callable[[], float],
        ready: Callable[[], bool],
    ) -> None:
        self._session = session
        self._progress_interval = progress_interval
        self._stall_timeout = stall_timeout
        self._metrics = metrics
        self._age = age
        self._ready = ready
        self.stalls = 0

    def run(self, stop: threading.Event) -> None:
        """The thread: one beat per ``progress_interval``."""
        while not stop.wait(self._progress_interval):
            self.beat()

    def beat(self) -> None:
        """Ask for progress, or cancel a stream silent past the stall timeout; update gauges."""
        session = self._session()
        if session is not None and not session.cancelled:
            silent = session.silent_for()
            if silent > self._stall_timeout:
                self.stalls += 1
                _log.warning(
                    "stream_stalled", endpoint=session.endpoint, silent_seconds=round(silent, 3)
                )
                session.cancel()
            else:
                session.request_progress()
        self._metrics.age_seconds.set(self._age())
        self._metrics.ready.set(1 if self._ready() else 0)
