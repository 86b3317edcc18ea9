"""The replica's transition table: checked transitions, recorded causes, bounded history."""

from __future__ import annotations

import pytest

from rmwatch.watcher.state import TRANSITIONS, ReplicaState, StateMachine, Transition


class TestStateMachine:
    def test_a_transition_outside_the_table_raises(self) -> None:
        """LOADING cannot jump to SERVING without catching up: the table forbids it."""
        machine = StateMachine()
        with pytest.raises(RuntimeError, match="illegal replica transition"):
            machine.move(ReplicaState.SERVING, "skip", applied_revision=1)
        assert machine.state is ReplicaState.LOADING

    def test_stopped_is_final_and_every_live_state_can_stop(self) -> None:
        """Every state but STOPPED may go to STOPPED; STOPPED goes nowhere."""
        assert TRANSITIONS[ReplicaState.STOPPED] == frozenset()
        for state, targets in TRANSITIONS.items():
            if state is not ReplicaState.STOPPED:
                assert ReplicaState.STOPPED in targets

    def test_history_keeps_the_last_n_with_causes_and_notifies(self) -> None:
        """History is bounded, ordered, and each record reaches the callback."""
        seen: list[Transition] = []
        machine = StateMachine(history=3, on_transition=seen.append)
        machine.move(ReplicaState.CATCHING_UP, "loaded at 5", applied_revision=5)
        machine.move(ReplicaState.SERVING, "caught up", applied_revision=5)
        machine.move(ReplicaState.RESUMING, "lost", applied_revision=6, endpoint="e1")
        machine.move(ReplicaState.SERVING, "resumed", applied_revision=6)
        assert [t.cause for t in machine.history()] == ["caught up", "lost", "resumed"]
        assert [t.seq for t in seen] == [1, 2, 3, 4]
        assert seen[2].detail == {"endpoint": "e1"}
        assert seen[2].as_dict()["cause"] == "lost"
