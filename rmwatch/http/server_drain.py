"""The HTTP server's drain: stop taking requests, finish the ones in flight.

This is the server's drain only; a writer handing its leadership over is
``rmwatch.store.writer_drain.Drainer``. A drain (SIGTERM) must not fail requests: first
``/ready`` answers 503 so load balancers stop sending new work, requests keep being served
meanwhile (answered with ``Connection: close`` so clients do not reuse a connection that is
about to go away), and only when the grace period is over does the server stop accepting and
wait for the requests still in flight.
All methods run on the event loop thread, so plain integers are enough.
"""

from __future__ import annotations

import time


class ServerDrain:
    """In-flight accounting and the draining flag of one HTTP server."""

    def __init__(self) -> None:
        self.draining = False
        self.draining_since: float | None = None
        self.in_flight = 0
        self.started = 0
        self.completed = 0

    def begin(self) -> None:
        """Start draining: ``/ready`` answers 503 from now on (idempotent)."""
        if not self.draining:
            self.draining = True
            self.draining_since = time.monotonic()

    def enter(self) -> None:
        """A request was accepted by the app."""
        self.in_flight += 1
        self.started += 1

    def leave(self) -> None:
        """A request's response was sent (or it failed)."""
        self.in_flight -= 1
        self.completed += 1

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form for ``/status``."""
        return {
            "draining": self.draining,
            "in_flight": self.in_flight,
            "requests_started": self.started,
            "requests_completed": self.completed,
        }


__all__ = ["ServerDrain"]
