"""Waiting for a replica's applied revision from asyncio code, without parking a thread per wait.

``Replica.wait_for_revision`` blocks a thread on a condition variable. An HTTP server that ran
it in the thread pool would give every ``?min_revision=`` request a thread for up to its
timeout (5 s): 40 such requests (anyio's default pool) would stall every other sync call, and
a request queued for a thread would not even start its own timeout until it got one.

Here a waiter is a coroutine on the event loop. The replica's change listener (called on its
worker thread after each change becomes visible) wakes the loop with ``call_soon_threadsafe``.
A rebuild that changed nothing publishes a newer revision without any change event, so every
waiter also re-checks on its own every ``poll_interval`` (50 ms): the listener makes the common
case immediate, the poll bounds the rare one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from rmwatch.errors import RevisionTimeoutError
from rmwatch.watcher.cache import ChangeEvent
from rmwatch.watcher.replica import Replica

# A rebuild without changes is the only publish the listener misses; 50 ms is invisible next
# to the 5 s default wait bound and costs 20 checks per second per waiting request.
DEFAULT_POLL_INTERVAL = 0.05


class RevisionWaiter:
    """Lets coroutines wait until ``replica.revision >= n``, bounded by a timeout.

    Subscribes to the replica lazily, on the first wait, from the loop that waits (so it
    can capture that loop); ``close()`` unsubscribes.
    """

    def __init__(self, replica: Replica, *, poll_interval: float = DEFAULT_POLL_INTERVAL) -> None:
        self._replica = replica
        self._poll_interval = poll_interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._waiting = 0
        self._unsubscribe: Callable[[], None] | None = None

    def _attach(self) -> asyncio.Event:
        if self._event is None:
            self._loop = asyncio.get_running_loop()
            self._event = asyncio.Event()
            self._unsubscribe = self._replica.subscribe(self._on_change)
        return self._event

    def _on_change(self, _event: ChangeEvent) -> None:
        # Worker thread: only touch the loop when someone waits (a plain int read is atomic).
        loop = self._loop
        if self._waiting and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        # Loop thread: release every current waiter, then arm a fresh event for the next ones.
        event = self._event
        if event is not None:
            self._event = asyncio.Event()
            event.set()

    async def wait(self, revision: int, timeout: float) -> int:
        """Return the applied revision once it is >= ``revision``; RevisionTimeoutError after
        ``timeout`` seconds (carrying the revision reached)."""
        current = self._replica.revision
        if current >= revision:
            return current
        self._attach()
        deadline = time.monotonic() + timeout
        self._waiting += 1
        try:
            while True:
                current = self._replica.revision
                if current >= revision:
                    return current
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RevisionTimeoutError(revision, current, timeout)
                # Non-blocking: lets the replica prove a revision moved on by other keys.
                self._replica.request_revision(revision)
                event = self._event
                assert event is not None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(left, self._poll_interval))
        finally:
            self._waiting -= 1

    def close(self) -> None:
        """Stop listening to the replica (idempotent)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._event = None
        self._loop = None


__all__ = ["DEFAULT_POLL_INTERVAL", "RevisionWaiter"]
