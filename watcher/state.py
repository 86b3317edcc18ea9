"""The replica's one state enum and one transition table; every transition has a cause.

    LOADING ──snapshot applied──▶ CATCHING_UP ──caught up──▶ SERVING
       ▲  │                          │    │                    │  │
       │  └─compacted mid-load───────┘    │                    │  └─stream lost─▶ RESUMING
       │                                  └─compacted/out-of-order──▶ REBUILDING ◀─┘
    DEGRADED (etcd unreachable, retrying) ◀─▶ any live state;  any state ──close──▶ STOPPED

Transitions are checked: a transition not in the table is a bug and raises.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import structlog

_log = structlog.get_logger("rmwatch.replica")


class ReplicaState(StrEnum):
    """Where a replica is in its life."""

    LOADING = "LOADING"
    CATCHING_UP = "CATCHING_UP"
    SERVING = "SERVING"
    RESUMING = "RESUMING"
    REBUILDING = "REBUILDING"
    DEGRADED = "DEGRADED"
    STOPPED = "STOPPED"


S = ReplicaState
TRANSITIONS: dict[ReplicaState, frozenset[ReplicaState]] = {
    S.LOADING: frozenset({S.LOADING, S.CATCHING_UP, S.DEGRADED, S.STOPPED}),
    S.CATCHING_UP: frozenset({S.SERVING, S.RESUMING, S.REBUILDING, S.DEGRADED, S.STOPPED}),
    S.SERVING: frozenset({S.RESUMING, S.REBUILDING, S.DEGRADED, S.STOPPED}),
    S.RESUMING: frozenset({S.SERVING, S.CATCHING_UP, S.REBUILDING, S.DEGRADED, S.STOPPED}),
    S.REBUILDING: frozenset({S.REBUILDING, S.SERVING, S.CATCHING_UP, S.DEGRADED, S.STOPPED}),
    S.DEGRADED: frozenset(
        {S.LOADING, S.RESUMING, S.REBUILDING, S.SERVING, S.CATCHING_UP, S.DEGRADED, S.STOPPED}
    ),
    S.STOPPED: frozenset(),
}


@dataclass(frozen=True)
class Transition:
    """One recorded transition: from, to, why, and the revisions involved."""

    at: float  # wall-clock seconds (time.time()) for humans; ordering uses ``seq``
    seq: int
    source: ReplicaState
    target: ReplicaState
    cause: str
    applied_revision: int
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for /status."""
        return asdict(self)


class StateMachine:
    """Holds the current state, checks transitions, keeps the last ``history`` of them."""

    def __init__(
        self,
        *,
        history: int = 100,
        on_transition: Callable[[Transition], None] | None = None,
    ) -> None:
        self._state = ReplicaState.LOADING
        self._history: deque[Transition] = deque(maxlen=history)
        self._lock = threading.Lock()
        self._seq = 0
        self._on_transition = on_transition

    @property
    def state(self) -> ReplicaState:
        """The current state."""
        return self._state

    def history(self) -> list[Transition]:
        """The recorded transitions, oldest first."""
        with self._lock:
            return list(self._history)

    def move(
        self, target: ReplicaState, cause: str, *, applied_revision: int, **detail: Any
    ) -> Transition:
        """Go to ``target`` for ``cause``; raise RuntimeError for a transition not in the table."""
        with self._lock:
            source = self._state
            if source is ReplicaState.STOPPED and self._history:
                # STOPPED is final: a thread finishing late (close() timed out on it) must not
                # crash on its last transition; the stop is what counts.
                return self._history[-1]
            if target not in TRANSITIONS[source]:
                raise RuntimeError(f"illegal replica transition {source} -> {target} ({cause})")
            self._seq += 1
            record = Transition(
                time.time(), self._seq, source, target, cause, applied_revision, detail
            )
            self._state = target
            self._history.append(record)
        _log.info(
            "replica.transition",
            source=str(source),
            target=str(target),
            cause=cause,
            applied_revision=applied_revision,
            **detail,
        )
        if self._on_transition is not None:
            self._on_transition(record)
        return record
