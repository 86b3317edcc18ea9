"""Draining a writer: stop taking writes, finish those in flight, hand leadership over.

Used by ``POST /admin/drain`` and by SIGTERM in ``rmwatch writer``. Order matters:
1. ``Writer.begin_drain()``: new writes raise DrainingError at once; the HTTP layer forwards
   them to the next leader (waiting a bounded time for one to be elected), so none fails;
2. wait (bounded) until the writes already executing have committed or failed;
3. ``Leadership.resign()``: delete the leader key and revoke the lease, so a follower takes
   over at its next poll (~150 ms) instead of after the 5 s lease TTL.
Resigning before step 2 would make in-flight writes fail their fence; after it, nothing the
old leader acknowledged can be missing.
"""

from __future__ import annotations

import threading
from typing import Any

from rmwatch._logging import get_logger
from rmwatch.store.writer import Writer

log = get_logger("writer")

# Writes are one txn of a few ms; 10 s covers a slow etcd's 5 s RPC deadline twice over.
DEFAULT_DRAIN_TIMEOUT = 10.0


class Drainer:
    """Runs a writer's drain once (idempotent) and reports its status."""

    def __init__(self, writer: Writer, *, timeout: float = DEFAULT_DRAIN_TIMEOUT) -> None:
        self.writer = writer
        self.timeout = timeout
        self._lock = threading.Lock()
        self._done = threading.Event()

    def drain(self) -> dict[str, Any]:
        """Drain now (blocking, bounded by ``timeout``); later calls just wait for the first."""
        with self._lock:
            if not self._done.is_set():
                log.info("drain_started", in_flight=self.writer.in_flight)
                self.writer.begin_drain()
                idle = self.writer.wait_idle(self.timeout)
                if not idle:
                    log.warning("drain_timeout", in_flight=self.writer.in_flight)
                if self.writer.leadership is not None:
                    self.writer.leadership.resign()
                self._done.set()
                log.info("drain_finished", idle=idle)
        return self.status()

    @property
    def done(self) -> bool:
        """True once the drain finished (leadership resigned)."""
        return self._done.is_set()

    def status(self) -> dict[str, Any]:
        """``{"draining", "in_flight", "leader"}`` as ``GET /admin/drain`` shows it."""
        leadership = self.writer.leadership
        return {
            "draining": self.writer.draining,
            "in_flight": self.writer.in_flight,
            "leader": leadership.is_leader if leadership is not None else True,
        }


__all__ = ["DEFAULT_DRAIN_TIMEOUT", "Drainer"]
