"""The replica's transition table and serving rule: checked transitions, recorded causes,
bounded history, and reads decided by the state plus staleness."""

from __future__ import annotations

import math

import pytest

from rmwatch.watcher.state import (
    NOT_STARTED,
    SERVING_STATES,
    TRANSITIONS,
    ReplicaState,
    StateMachine,
    Transition,
    refusal,
)

S = ReplicaState


def _refusal(state: ReplicaState, *, caught_up: bool = True, age: float = 0.0) -> str | None:
    return refusal(
        state, caught_up=caught_up, cause="c", applied_revision=7, age=age, max_staleness=5.0
    )


class TestStateMachine:
    def test_a_transition_outside_the_table_raises(self) -> None:
        """LOADING cannot jump to SERVING without catching up: the table forbids it."""
        machine = StateMachine(initial=S.LOADING)
        with pytest.raises(RuntimeError, match="illegal replica transition"):
            machine.move(S.SERVING, "skip", applied_revision=1)
        assert machine.state is S.LOADING

    def test_stopped_is_final_and_every_live_state_can_stop(self) -> None:
        """Every state but STOPPED may go to STOPPED; STOPPED goes nowhere."""
        assert TRANSITIONS[S.STOPPED] == frozenset()
        for state, targets in TRANSITIONS.items():
            if state is not S.STOPPED:
                assert S.STOPPED in targets

    def test_history_keeps_the_last_n_with_causes_and_notifies(self) -> None:
        """History is bounded, ordered, and each record reaches the callback."""
        seen: list[Transition] = []
        machine = StateMachine(history=3, on_transition=seen.append, initial=S.LOADING)
        machine.move(S.CATCHING_UP, "loaded at 5", applied_revision=5)
        machine.move(S.SERVING, "caught up", applied_revision=5)
        machine.move(S.RESUMING, "lost", applied_revision=6, endpoint="e1")
        machine.move(S.SERVING, "resumed", applied_revision=6)
        assert [t.cause for t in machine.history()] == ["caught up", "lost", "resumed"]
        assert [t.seq for t in seen] == [1, 2, 3, 4]
        assert seen[2].detail == {"endpoint": "e1"}
        assert seen[2].as_dict()["cause"] == "lost"

    def test_a_new_machine_is_new_and_only_starts_or_stops(self) -> None:
        """A replica begins NEW (not started): it can only start loading or be closed."""
        machine = StateMachine()
        assert machine.state is S.NEW
        assert TRANSITIONS[S.NEW] == frozenset({S.LOADING, S.STOPPED})

    def test_no_state_moves_to_itself(self) -> None:
        """Events that change nothing (a load restart, a relabel, one more retry) are not
        recorded as self-transitions: the table has none."""
        for state, targets in TRANSITIONS.items():
            assert state not in targets, state

    def test_failed_only_stops_and_every_live_state_can_fail(self) -> None:
        """A crashed worker ends in FAILED from wherever it was; FAILED can only be closed."""
        assert TRANSITIONS[S.FAILED] == frozenset({S.STOPPED})
        for state in (S.LOADING, S.CATCHING_UP, S.SERVING, S.RESUMING, S.REBUILDING, S.DEGRADED):
            assert S.FAILED in TRANSITIONS[state], state

    def test_degraded_is_entered_only_after_catching_up(self) -> None:
        """DEGRADED means "still serving the old snapshot": no state before the first catch-up
        (LOADING, CATCHING_UP) goes there."""
        for state in (S.NEW, S.LOADING, S.CATCHING_UP):
            assert S.DEGRADED not in TRANSITIONS[state], state

    def test_caught_up_and_may_serve_follow_the_transitions(self) -> None:
        """Reaching SERVING marks the machine caught up; later recovery states still serve,
        and FAILED does not."""
        machine = StateMachine(initial=S.LOADING)
        machine.move(S.CATCHING_UP, "loaded", applied_revision=3)
        assert not machine.caught_up
        assert not machine.may_serve
        machine.move(S.SERVING, "caught up", applied_revision=3)
        assert machine.caught_up
        assert machine.may_serve
        machine.move(S.RESUMING, "lost", applied_revision=3)
        machine.move(S.DEGRADED, "etcd unreachable", applied_revision=3)
        assert machine.may_serve
        assert machine.refusal(applied_revision=3, age=1.0, max_staleness=2.0) is None
        machine.move(S.FAILED, "worker crashed: RuntimeError: boom", applied_revision=3)
        assert not machine.may_serve
        reason = machine.refusal(applied_revision=3, age=0.0, max_staleness=math.inf)
        assert reason == "replica worker stopped: RuntimeError: boom"


class TestRefusal:
    def test_new_says_how_to_start(self) -> None:
        """A never-started replica tells the caller what to call."""
        reason = _refusal(S.NEW, caught_up=False)
        assert reason == NOT_STARTED
        assert "replica.start()" in reason
        assert "with Replica(" in reason

    def test_before_the_first_catch_up_nothing_is_served(self) -> None:
        """LOADING says it loads; later states before the first catch-up say they catch up."""
        assert _refusal(S.LOADING, caught_up=False) == "loading the first snapshot"
        for state in (S.CATCHING_UP, S.RESUMING, S.REBUILDING):
            reason = _refusal(state, caught_up=False)
            assert reason is not None
            assert reason.startswith("catching up"), state

    def test_caught_up_states_serve_within_the_staleness_bound_only(self) -> None:
        """SERVING, RESUMING, REBUILDING and DEGRADED serve the old snapshot while it is
        fresh enough, and refuse with "stale" past the bound."""
        assert frozenset({S.SERVING, S.RESUMING, S.REBUILDING, S.DEGRADED}) == SERVING_STATES
        for state in SERVING_STATES:
            assert _refusal(state, age=4.9) is None, state
            stale = _refusal(state, age=5.1)
            assert stale is not None
            assert stale.startswith("stale"), state

    def test_failed_and_stopped_never_serve(self) -> None:
        """However fresh the data, a failed or closed replica refuses."""
        assert _refusal(S.FAILED) == "replica worker stopped: c"
        assert _refusal(S.STOPPED) == "replica closed"
