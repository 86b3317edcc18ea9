"""Errors a replica's reader can meet (all extend ``store.errors.RmwatchError``).

RmwatchError
└── ReplicaError
    ├── NotReadyError          not loaded / not caught up / too stale; names state and reason
    ├── RevisionTimeoutError   ``min_revision`` not reached in time; carries the current one
    └── ReplicaClosedError     the replica was closed
"""

from __future__ import annotations

from store.errors import RmwatchError


class ReplicaError(RmwatchError):
    """Base of replica errors."""


class NotReadyError(ReplicaError):
    """The replica cannot serve: it has not caught up, or its data is older than allowed."""

    def __init__(self, state: str, reason: str) -> None:
        super().__init__(f"replica not ready ({state}): {reason}")
        self.state = state
        self.reason = reason


class RevisionTimeoutError(ReplicaError, TimeoutError):
    """The cache did not reach the wanted revision within the timeout."""

    def __init__(self, wanted: int, current: int, timeout: float) -> None:
        super().__init__(f"revision {wanted} not reached within {timeout:.3g}s (at {current})")
        self.wanted = wanted
        self.current = current


class ReplicaClosedError(ReplicaError):
    """The replica was closed; create a new one."""
