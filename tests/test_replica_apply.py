"""How the replica applies the watch: one publish per watch response, whole revisions only."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from harness import etcd_items, group_bytes, wait_until

from rmwatch.store.etcd import txn
from rmwatch.store.etcd.watch import WatchSession
from rmwatch.store.keys import KeyLayout
from rmwatch.watcher.cache import Snapshot
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
