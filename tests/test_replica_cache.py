"""The replica's hold on the process-wide GC: paused during builds, the snapshot frozen."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
from harness import put_group

from rmwatch.store.keys import KeyLayout
from rmwatch.watcher.gc_control import gc_paused
from rmwatch.watcher.replica import Replica


class TestGcPaused:
    def test_gc_stays_off_if_it_was_off_when_holders_leave_out_of_order(self) -> None:
        """Two threads pause the GC (worker building, validator validating) and leave in the
        other order than they came: the GC stays as the application had it (off here), not
        as the last holder to leave saw it."""
        was = gc.isenabled()
        gc.disable()
        try:
            first, second = gc_paused(), gc_paused()
            first.__enter__()
            second.__enter__()
            first.__exit__(None, None, None)
            second.__exit__(None, None, None)
            assert not gc.isenabled(), "gc_paused re-enabled a GC the application disabled"
        finally:
            if was:
                gc.enable()
            else:
                gc.disable()

    def test_gc_comes_back_on_when_the_last_holder_leaves(self) -> None:
        """With the GC on, nested holders keep it off until the last one leaves."""
        was = gc.isenabled()
        gc.enable()
        try:
            with gc_paused():
                with gc_paused():
                    assert not gc.isenabled()
                assert not gc.isenabled()
            assert gc.isenabled()
        finally:
            if not was:
                gc.disable()


class TestFrozenHeap:
    """The loaded snapshot is frozen out of the GC's reach, and the application's GC state
    comes back when the replicas close."""

    def test_a_load_freezes_and_the_last_close_unfreezes(
        self, etcd_endpoints: list[str], etcd_client: Any, root_prefix: str
    ) -> None:
        """Two replicas in one process: objects are frozen after their loads, and the permanent
        generation is given back to the collector only when the last of them closes."""
        put_group(etcd_client, KeyLayout(root_prefix), "g1", 1)
        gc.unfreeze()
        enabled = gc.isenabled()
        with Replica(endpoints=etcd_endpoints, root_prefix=root_prefix) as first:
            first.wait_ready(10)
            assert gc.get_freeze_count() > 0
            with Replica(endpoints=etcd_endpoints, root_prefix=root_prefix) as second:
                second.wait_ready(10)
            assert gc.get_freeze_count() > 0, "unfrozen while a replica still runs"
        assert gc.get_freeze_count() == 0
        assert gc.isenabled() is enabled

    def test_a_closed_replica_frees_its_snapshot_while_another_keeps_the_heap_frozen(
        self, etcd_endpoints: list[str], etcd_client: Any, root_prefix: str
    ) -> None:
        """A replica closed while another still runs lets its snapshot go at once, though its
        own reference cycles stay frozen, and still reports its revision."""
        put_group(etcd_client, KeyLayout(root_prefix), "g1", 1)
        with Replica(endpoints=etcd_endpoints, root_prefix=root_prefix) as keeper:
            keeper.wait_ready(10)
            closing = Replica(endpoints=etcd_endpoints, root_prefix=root_prefix).start()
            closing.wait_ready(10)
            revision = closing.revision
            snap = weakref.ref(closing.snapshot())
            closing.close()
            assert gc.get_freeze_count() > 0
            alive = snap()
            if alive is not None:  # say who holds it (a rare, timing-dependent failure)
                holders = [type(r).__name__ for r in gc.get_referrers(alive)]
                del alive
                pytest.fail(f"the closed replica's snapshot is still alive: {holders}")
            assert closing.revision == revision
            assert keeper.get_group("g1").value is not None

    def test_an_application_that_froze_objects_keeps_its_freeze(
        self, etcd_endpoints: list[str], root_prefix: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When the application froze objects itself, the replica neither freezes nor
        unfreezes: the application manages its GC."""
        calls: list[str] = []
        real_freeze, real_unfreeze = gc.freeze, gc.unfreeze
        gc.freeze()
        try:
            monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
            monkeypatch.setattr(gc, "unfreeze", lambda: calls.append("unfreeze"))
            with Replica(endpoints=etcd_endpoints, root_prefix=root_prefix) as replica:
                replica.wait_ready(10)
            assert calls == []
            assert gc.get_freeze_count() > 0
        finally:
            monkeypatch.undo()
            assert gc.freeze is real_freeze
            real_unfreeze()

    def test_freeze_gc_false_leaves_the_gc_alone(
        self, etcd_endpoints: list[str], root_prefix: str
    ) -> None:
        """``freeze_gc=False`` never freezes."""
        gc.unfreeze()
        with Replica(endpoints=etcd_endpoints, root_prefix=root_prefix, freeze_gc=False) as replica:
            replica.wait_ready(10)
            assert gc.get_freeze_count() == 0
