"""How the replica applies the watch: one publish per watch response, whole revisions only."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from harness import etcd_items, group_bytes, wait_until

from rmwatch.store.etcd import txn
from rmwatch.store.etcd.watch import WatchSession
from rmwatch.store.keys import KeyLayout
from rmwatch.store.stored_group import StoredGroup
from rmwatch.watcher.cache import (
    ChangeKind,
    RawChange,
    Snapshot,
    apply_changes,
    build_snapshot,
)
from rmwatch.watcher.replica import Replica

TXNS = 6  # revisions written while the watch is held back
KEYS = 3  # puts per revision


class TestCoalescedApply:
    def test_a_response_of_several_revisions_publishes_once_and_whole(
        self, etcd_endpoints: list[str], etcd_client: Any, root_prefix: str
    ) -> None:
        """Revisions written while the watch is held back reach the replica in one catch-up
        response; it is published once, at its last revision, and a reader polling meanwhile
        sees only snapshots equal to etcd at their revision (never half a revision)."""
        layout = KeyLayout(root_prefix)
        responses: list[list[int]] = []
        opened = threading.Event()
        go = threading.Event()

        class Recording(WatchSession):
            def __iter__(self) -> Iterator[Any]:
                for response in super().__iter__():
                    if response.events:
                        revisions = {int(e.kv.mod_revision) for e in response.events}
                        responses.append(sorted(revisions))
                    yield response

        def factory(*args: Any, **kwargs: Any) -> WatchSession:
            opened.set()
            go.wait(10)
            return Recording(*args, **kwargs)

        with Replica(
            endpoints=etcd_endpoints, root_prefix=root_prefix, session_factory=factory
        ) as replica:
            replica.wait_ready(10)
            assert opened.wait(5)
            published = replica._published
            real_swap = published.swap
            swaps: list[int] = []

            def recording_swap(snap: Snapshot) -> None:
                swaps.append(snap.revision)
                real_swap(snap)

            published.swap = recording_swap  # type: ignore[method-assign]
            seen: list[Snapshot] = []
            stop = threading.Event()

            def reader() -> None:
                while not stop.is_set():
                    snap = replica.snapshot()
                    if not seen or seen[-1] is not snap:
                        seen.append(snap)

            thread = threading.Thread(target=reader)
            thread.start()
            try:
                last = 0
                for i in range(TXNS):
                    puts = [
                        etcd_client.transactions.put(
                            layout.settings(f"c{k}"), group_bytes(f"c{k}", i)
                        )
                        for k in range(KEYS)
                    ]
                    last = txn(etcd_client, [], puts).revision
                go.set()
                replica.wait_for_revision(last, 10)
                wait_until(lambda: seen[-1].revision >= last, 5, "the reader sees the last")
            finally:
                stop.set()
                thread.join()
        assert any(len(r) > 1 for r in responses), f"no response held two revisions: {responses}"
        # One publish per response with events, at the response's last revision.
        assert swaps == [r[-1] for r in responses], (swaps, responses)
        first = seen[0].revision
        assert {s.revision for s in seen} <= {first, *swaps}
        for snap in seen:
            assert snap.raw_items() == etcd_items(etcd_client, layout.prefix, snap.revision)


class TestApplyChanges:
    """``apply_changes`` in isolation: RawChanges and plain tuples are the same input, and the
    events it builds are immutable (a NamedTuple since built per applied event)."""

    def test_tuples_and_raw_changes_build_equal_snapshots_and_events(self) -> None:
        layout = KeyLayout("/ac/")
        base = build_snapshot(layout, 1, [(layout.settings("a"), group_bytes("a", 1), 1)])
        raw = [
            RawChange(layout.settings("a"), 2, group_bytes("a", 2)),
            RawChange(layout.settings("b"), 2, group_bytes("b", 3)),
            RawChange(layout.settings("a"), 3, None),
        ]
        snap1, events1 = apply_changes(base, 3, raw)
        snap2, events2 = apply_changes(base, 3, [tuple(c) for c in raw])  # type: ignore[misc]
        assert dict(snap1.entries.items()).keys() == dict(snap2.entries.items()).keys()
        assert [e[:4] for e in events1] == [e[:4] for e in events2]
        put, added, deleted = events1
        assert (put.kind, put.revision, added.kind, deleted.kind) == (
            ChangeKind.PUT, 2, ChangeKind.PUT, ChangeKind.DELETE,
        )  # fmt: skip
        assert put.prev_entry is base.entries.get_fast(layout.settings("a"))
        assert deleted.prev_entry is put.entry  # a second change of a key sees the first
        assert isinstance(put.value, StoredGroup)  # decoded on first use
        assert put.value.name == "a"
        assert snap1.get_group("a") is None
        assert snap1.get_group("b") is not None
        with pytest.raises(AttributeError):
            put.revision = 9  # type: ignore[misc]
