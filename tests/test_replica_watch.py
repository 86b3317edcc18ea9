"""The replica's batch hook (``Replica.subscribe_batches``) and the library's watch
(``Replica.watch``) on a real etcd: one batch per publish, relabels as progress, the end."""

from __future__ import annotations

import threading

import pyetcd
import pytest
from harness import group_bytes, wait_until
from sidecar_support import layout, replica, running_replica

from rmwatch.errors import WatchCompactedError
from rmwatch.store.keys import KeyLayout
from rmwatch.watcher.cache import ChangeEvent
from rmwatch.watcher.listeners import ChangeBatch
from rmwatch.watcher.replica import Replica
from rmwatch.watcher.watch_stream import WatchBatch

__all__ = ["layout", "replica"]  # fixtures used by name


def _put_two(client: pyetcd.MultiEndpointEtcd3Client, layout: KeyLayout) -> int:
    """Put groups ``a`` and ``b`` in one transaction; returns its revision."""
    tx = client.transactions
    client.transaction(
        compare=[],
        success=[
            tx.put(layout.settings("a").encode(), group_bytes("a")),
            tx.put(layout.settings("b").encode(), group_bytes("b")),
        ],
        failure=[],
    )
    _value, meta = client.get(layout.settings("b"))
    return int(meta.mod_revision)


def _relabel(client: pyetcd.MultiEndpointEtcd3Client, replica: Replica, root: str) -> int:
    """Move etcd's revision with a write outside the prefix and ask the replica to reach it."""
    other = int(client.put(root + "elsewhere", b"x").header.revision)

    def reached() -> bool:
        replica.request_revision(other)  # returns at once; waiters call it as they poll
        return replica.revision >= other

    wait_until(reached, 5, "the confirmer's relabel")
    return other


class TestSubscribeBatches:
    """Batch listeners get each publish once, whole, after the per-event listeners."""

    def test_one_batch_per_publish(
        self,
        replica: Replica,
        etcd_client: pyetcd.MultiEndpointEtcd3Client,
        layout: KeyLayout,
    ) -> None:
        """A two-key transaction reaches the per-event listener twice, then the batch
        listener once with both events at the transaction's revision."""
        seen: list[object] = []
        done = threading.Event()

        def on_event(event: ChangeEvent) -> None:
            seen.append(event.key)

        def on_batch(batch: ChangeBatch) -> None:
            seen.append(batch)
            done.set()

        replica.subscribe(on_event)
        unsubscribe = replica.subscribe_batches(on_batch)
        revision = _put_two(etcd_client, layout)
        assert done.wait(5)
        unsubscribe()
        keys = [layout.settings("a"), layout.settings("b")]
        batch = seen[2]
        assert seen[:2] == keys
        assert isinstance(batch, ChangeBatch)
        assert batch.revision == revision
        assert not batch.rebuild
        assert [event.key for event in batch.events] == keys
        assert len(seen) == 3

    def test_relabel_is_an_empty_batch(
        self,
        replica: Replica,
        etcd_client: pyetcd.MultiEndpointEtcd3Client,
        root_prefix: str,
    ) -> None:
        """A write elsewhere that the replica relabels to arrives as a batch without events at
        the new revision."""
        batches: list[ChangeBatch] = []
        replica.subscribe_batches(batches.append)
        other = _relabel(etcd_client, replica, root_prefix)
        wait_until(lambda: bool(batches), 5, "the relabel's batch")
        assert batches[-1] == ChangeBatch(replica.revision, ())
        assert batches[-1].revision >= other

    def test_end_when_closed(self, etcd_endpoints: list[str], root_prefix: str) -> None:
        """Closing the replica calls ``on_end`` once: no batch follows."""
        ended: list[bool] = []
        with running_replica(etcd_endpoints, root_prefix) as live:
            live.wait_ready(10)
            live.subscribe_batches(lambda _batch: None, on_end=lambda: ended.append(True))
            assert ended == []
        assert ended == [True]


class TestReplicaWatch:
    """``Replica.watch``: the MetaStorage stream for library users."""

    def test_next_write_is_one_batch(
        self,
        replica: Replica,
        etcd_client: pyetcd.MultiEndpointEtcd3Client,
        layout: KeyLayout,
    ) -> None:
        """A watch from revision + 1 receives a two-key transaction as one batch."""
        with replica.watch(replica.revision + 1) as stream:
            revision = _put_two(etcd_client, layout)
            batch = next(iter(stream))
        assert batch.revision == revision
        assert [c.key for c in batch.changes] == [
            layout.settings("a").encode(),
            layout.settings("b").encode(),
        ]
        assert [c.value for c in batch.changes] == [group_bytes("a"), group_bytes("b")]

    def test_old_revision_is_compacted(self, replica: Replica) -> None:
        """A start older than the hub's history ends the stream with WatchCompactedError,
        saying where to resume."""
        with replica.watch(replica.revision + 1):
            pass  # the hub exists from here on
        with replica.watch(1) as stream, pytest.raises(WatchCompactedError) as caught:
            next(iter(stream))
        assert caught.value.resume_revision > 1

    def test_relabel_moves_progress(
        self,
        replica: Replica,
        etcd_client: pyetcd.MultiEndpointEtcd3Client,
        root_prefix: str,
    ) -> None:
        """A relabel delivers nothing but lets an idle watcher report progress at the new
        revision, and a watch can start right after it."""
        with replica.watch() as stream:
            other = _relabel(etcd_client, replica, root_prefix)
            wait_until(
                lambda: (stream.progress_revision() or 0) >= other, 5, "progress at the relabel"
            )
            assert stream.take() == []
        with replica.watch(replica.revision + 1) as after:
            assert after.take() == []
            assert not after.ended

    def test_closing_the_replica_ends_the_stream(
        self,
        etcd_endpoints: list[str],
        root_prefix: str,
    ) -> None:
        """When the replica closes, its watchers end with an error instead of waiting forever."""
        with running_replica(etcd_endpoints, root_prefix) as live:
            live.wait_ready(10)
            stream = live.watch()
        items = stream.take(timeout=5)
        assert not any(isinstance(item, WatchBatch) for item in items)
        assert stream.ended
        assert isinstance(stream.error, WatchCompactedError)
