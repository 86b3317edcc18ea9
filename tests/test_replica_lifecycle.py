"""A replica's life as a library sees it: never started, started, failed, closed.

A replica that cannot get ready by waiting (never started, its worker crashed, or closed)
says so at once, and says what to do, instead of letting a caller wait out its timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from harness import put_group, wait_until

import rmwatch.watcher.sync as sync_mod
from rmwatch.errors import NotReadyError, ReplicaClosedError
from rmwatch.store.keys import KeyLayout
from rmwatch.watcher import Replica, ReplicaState

# Far longer than any answer that is "at once": a wait that used its timeout would show.
LONG = 60.0
AT_ONCE = 1.0
# Nothing listens here; a replica that is never started never connects anyway.
NOWHERE = ["127.0.0.1:1"]


class TestNeverStarted:
    def test_wait_ready_fails_at_once_saying_how_to_start(self) -> None:
        """``Replica(...)`` then ``wait_ready(60)`` raises NotReadyError at once, in state NEW,
        naming ``replica.start()`` and the context manager."""
        replica = Replica(endpoints=NOWHERE)
        started = time.monotonic()
        with pytest.raises(NotReadyError) as err:
            replica.wait_ready(LONG)
        assert time.monotonic() - started < AT_ONCE
        assert err.value.state == "NEW"
        assert "replica.start()" in err.value.reason
        assert "with Replica(" in err.value.reason
        assert replica.state is ReplicaState.NEW

    def test_wait_for_revision_and_reads_fail_at_once(self) -> None:
        """Every read, with or without ``min_revision``, and ``wait_for_revision`` raise
        NotReadyError at once on a replica that was never started."""
        replica = Replica(endpoints=NOWHERE)
        started = time.monotonic()
        with pytest.raises(NotReadyError, match=r"replica\.start\(\)"):
            replica.wait_for_revision(5, LONG)
        with pytest.raises(NotReadyError, match=r"replica\.start\(\)"):
            replica.get_group("g", min_revision=5, timeout=LONG)
        reads: list[Callable[[], object]] = [
            lambda: replica.get_group("g"),
            replica.list_groups,
            lambda: replica.get_states("g"),
            replica.get_controller,
            lambda: replica.get_service_limit(1),
            replica.snapshot,
        ]
        for read in reads:
            with pytest.raises(NotReadyError) as err:
                read()
            assert err.value.state == "NEW"
        assert time.monotonic() - started < AT_ONCE

    def test_status_says_new_and_nothing_was_started(self) -> None:
        """status() of a never-started replica is honest: NEW, not ready, no digest, no
        endpoint; check_digest has nothing to compare and returns None."""
        replica = Replica(endpoints=NOWHERE)
        status = replica.status()
        assert status["state"] == "NEW"
        assert status["ready"] is False
        assert "replica.start()" in status["not_ready_reason"]
        assert status["endpoint"] is None
        assert status["last_digest"] is None
        assert replica.check_digest() is None
        assert replica.transitions() == []

    def test_closing_a_never_started_replica_stops_it_for_good(self) -> None:
        """close() without start() is allowed and final: STOPPED, and a later start or wait
        raises ReplicaClosedError."""
        replica = Replica(endpoints=NOWHERE)
        replica.close()
        assert replica.state is ReplicaState.STOPPED
        assert [(t.source, t.target) for t in replica.transitions()] == [
            (ReplicaState.NEW, ReplicaState.STOPPED)
        ]
        with pytest.raises(ReplicaClosedError):
            replica.wait_ready(LONG)
        with pytest.raises(ReplicaClosedError):
            replica.start()


class TestStart:
    def test_start_is_idempotent_and_the_context_manager_starts(
        self, etcd_endpoints: list[str], root_prefix: str
    ) -> None:
        """A second start() returns the same replica without a second set of threads."""
        replica = Replica(endpoints=etcd_endpoints, root_prefix=root_prefix)
        assert replica.start() is replica
        threads = {t.name for t in threading.enumerate() if t.name.startswith("rmwatch-replica")}
        assert replica.start() is replica
        again = {t.name for t in threading.enumerate() if t.name.startswith("rmwatch-replica")}
        assert again == threads
        replica.wait_ready(10)
        replica.close()
        with Replica(endpoints=etcd_endpoints, root_prefix=root_prefix) as managed:
            managed.wait_ready(10)
            assert managed.state is ReplicaState.SERVING


class TestFailed:
    def test_a_crashed_worker_is_failed_with_its_cause_and_waits_end_at_once(
        self,
        etcd_endpoints: list[str],
        etcd_client: Any,
        root_prefix: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A bug in the apply moves the replica to FAILED (not DEGRADED): status names the
        cause, reads raise NotReadyError, and wait_ready / wait_for_revision raise at once
        rather than wait for a worker that will never come back."""

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("injected apply bug")

        with Replica(endpoints=etcd_endpoints, root_prefix=root_prefix) as replica:
            replica.wait_ready(10)
            monkeypatch.setattr(sync_mod, "apply_changes", broken)
            put_group(etcd_client, KeyLayout(root_prefix), "boom")
            wait_until(lambda: replica.state is ReplicaState.FAILED, 10, "the crash")
            status = replica.status()
            assert status["state"] == "FAILED"
            assert status["ready"] is False
            assert "injected apply bug" in status["not_ready_reason"]
            assert status["transitions"][-1]["cause"].startswith("worker crashed: RuntimeError")
            started = time.monotonic()
            with pytest.raises(NotReadyError) as err:
                replica.wait_ready(LONG)
            assert err.value.state == "FAILED"
            assert "injected apply bug" in err.value.reason
            with pytest.raises(NotReadyError):
                replica.wait_for_revision(replica.revision + 1, LONG)
            with pytest.raises(NotReadyError):
                replica.get_group("boom")
            assert time.monotonic() - started < AT_ONCE
        assert replica.transitions()[-1].source is ReplicaState.FAILED
        assert replica.state is ReplicaState.STOPPED
