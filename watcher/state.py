"""The replica's one state enum, its transition table, and what each state may serve.

    NEW ─start─▶ LOADING ─snapshot loaded─▶ CATCHING_UP ─caught up─▶ SERVING
                                                │                      │  ▲
                                   stream lost, │                      │  │ watch resumed,
                       compacted, out of order  ▼                      ▼  │ rebuilt
                                          RESUMING / REBUILDING ◀─────────┘
                                                │  (back to CATCHING_UP while never caught up)
                     etcd unreachable, 5 tries  │  (only once caught up)
                                                ▼
                                            DEGRADED ─watch resumed─▶ SERVING
                                                     ─etcd reachable again─▶ REBUILDING

    any live state ─worker crashed─▶ FAILED;   any state ─close─▶ STOPPED (final)

Reads are served only once the replica has caught up (SERVING was reached) and while it is in
SERVING, RESUMING, REBUILDING or DEGRADED, within the staleness bound: ``refusal`` decides it,
from the state, whether it has caught up, and the age of the cache. DEGRADED means only "etcd
unreachable, still serving the old snapshot"; a crashed worker is FAILED and serves nothing.

Events that change no state (a progress header, a relabel, a load restarted after a
compaction, one more failed retry) are logged and counted by their owners, never recorded as
self-transitions. Transitions are checked: one not in the table is a bug and raises.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from rmwatch._logging import get_logger

_log = get_logger("replica")

NOT_STARTED = "not started: call replica.start() or use `with Replica(...) as replica:`"


class ReplicaState(StrEnum):
    """Where a replica is in its life."""

    NEW = "NEW"
    LOADING = "LOADING"
    CATCHING_UP = "CATCHING_UP"
    SERVING = "SERVING"
    RESUMING = "RESUMING"
    REBUILDING = "REBUILDING"
    DEGRADED = "DEGRADED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"


S = ReplicaState
TRANSITIONS: dict[ReplicaState, frozenset[ReplicaState]] = {
    S.NEW: frozenset({S.LOADING, S.STOPPED}),
    S.LOADING: frozenset({S.CATCHING_UP, S.FAILED, S.STOPPED}),
    S.CATCHING_UP: frozenset({S.SERVING, S.RESUMING, S.REBUILDING, S.FAILED, S.STOPPED}),
    S.SERVING: frozenset({S.RESUMING, S.REBUILDING, S.DEGRADED, S.FAILED, S.STOPPED}),
    S.RESUMING: frozenset(
        {S.SERVING, S.CATCHING_UP, S.REBUILDING, S.DEGRADED, S.FAILED, S.STOPPED}
    ),
    S.REBUILDING: frozenset({S.SERVING, S.CATCHING_UP, S.DEGRADED, S.FAILED, S.STOPPED}),
    S.DEGRADED: frozenset({S.RESUMING, S.REBUILDING, S.SERVING, S.FAILED, S.STOPPED}),
    S.FAILED: frozenset({S.STOPPED}),
    S.STOPPED: frozenset(),
}

# States that serve the current snapshot once the replica has caught up (within staleness).
SERVING_STATES = frozenset({S.SERVING, S.RESUMING, S.REBUILDING, S.DEGRADED})


def refusal(
    state: ReplicaState,
    *,
    caught_up: bool,
    cause: str,
    applied_revision: int,
    age: float,
    max_staleness: float,
) -> str | None:
    """Why a replica in ``state`` must not serve reads now, or None when it may.

    Args:
        state: the current state.
        caught_up: whether the replica has reached SERVING at least once.
        cause: the cause of the last transition (names the crash when ``state`` is FAILED).
        applied_revision: the revision of the current snapshot (0 before the first).
        age: seconds since etcd last confirmed the cache.
        max_staleness: the bound past which a caught-up replica stops serving.
    """
    if state is S.NEW:
        return NOT_STARTED
    if state is S.FAILED:
        return f"replica worker stopped: {cause.removeprefix('worker crashed: ')}"
    if state is S.STOPPED:
        return "replica closed"
    if not caught_up or state not in SERVING_STATES:
        if state is S.LOADING:
            return "loading the first snapshot"
        return f"catching up to the store revision seen after the load (at {applied_revision})"
    if age > max_staleness:
        return f"stale: etcd last confirmed the cache {age:.1f}s ago (bound {max_staleness:g}s)"
    return None


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
    """Holds the current state, checks transitions, keeps the last ``history`` of them.

    It also remembers whether SERVING was ever reached (``caught_up``) and keeps
    ``may_serve``: what ``refusal`` says for the state alone, ignoring staleness, so the
    read fast path tests one attribute.
    """

    def __init__(
        self,
        *,
        history: int = 100,
        on_transition: Callable[[Transition], None] | None = None,
        initial: ReplicaState = ReplicaState.NEW,
    ) -> None:
        self._state = initial
        self._history: deque[Transition] = deque(maxlen=history)
        self._lock = threading.Lock()
        self._seq = 0
        self._on_transition = on_transition
        self._cause = ""
        self.caught_up = False
        self.may_serve = False

    @property
    def state(self) -> ReplicaState:
        """The current state."""
        return self._state

    @property
    def cause(self) -> str:
        """The cause of the last transition ("" before the first)."""
        return self._cause

    def history(self) -> list[Transition]:
        """The recorded transitions, oldest first."""
        with self._lock:
            return list(self._history)

    def refusal(self, *, applied_revision: int, age: float, max_staleness: float) -> str | None:
        """``refusal`` for the current state (see the module function)."""
        return refusal(
            self._state,
            caught_up=self.caught_up,
            cause=self._cause,
            applied_revision=applied_revision,
            age=age,
            max_staleness=max_staleness,
        )

    def move(
        self,
        target: ReplicaState,
        cause: str,
        *,
        applied_revision: int,
        event: str = "state_changed",
        **detail: Any,
    ) -> Transition:
        """Go to ``target`` for ``cause``, logged as ``event``; raise RuntimeError for a
        transition not in the table."""
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
            self._cause = cause
            if target is ReplicaState.SERVING:
                self.caught_up = True
            self.may_serve = (
                refusal(
                    target,
                    caught_up=self.caught_up,
                    cause=cause,
                    applied_revision=applied_revision,
                    age=0.0,
                    max_staleness=math.inf,
                )
                is None
            )
            self._history.append(record)
        _log.info(
            event,
            source=str(source),
            target=str(target),
            cause=cause,
            applied_revision=applied_revision,
            **detail,
        )
        if self._on_transition is not None:
            self._on_transition(record)
        return record
