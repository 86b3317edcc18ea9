"""MetaStorage over gRPC on a replica: Get from the cache, Watch from the hub (resume, prev_kv,
progress, compacted starts), writes refused. Clients generated from rmwatch's .proto."""

from __future__ import annotations

import time

import grpc
import pyetcd
import pytest
from grpc_support import WatchCollector, meta_stub, replica_server, served
from harness import group_bytes
from prometheus_client import CollectorRegistry
from sidecar_support import layout, replica

from rmwatch.grpc import GrpcServer
from rmwatch.store._pb import meta_storagepb_pb2 as mspb
from rmwatch.store.keys import KeyLayout
from rmwatch.watcher.replica import Replica
from rmwatch.watcher.watch_stream import prefix_end

__all__ = ["layout", "replica", "served"]  # fixtures used by name

Served = tuple[GrpcServer, grpc.Channel, CollectorRegistry]


def _put(client: pyetcd.MultiEndpointEtcd3Client, key: str, value: bytes) -> int:
    return int(client.put(key, value).header.revision)


class TestGet:
    """Get answers from one snapshot with etcd's range semantics."""

    def test_key_range_limit(
        self,
        replica: Replica,
        served: Served,
        etcd_client: pyetcd.MultiEndpointEtcd3Client,
        layout: KeyLayout,
    ) -> None:
        """A key, a prefix range, a limited range (more/count), header.revision = snapshot."""
        for name in ("a", "b", "c"):
            revision = _put(etcd_client, layout.settings(name), group_bytes(name))
        replica.wait_for_revision(revision, 5)
        stub = meta_stub(served[1])
        prefix = layout.settings("").encode()
        one = stub.Get(mspb.GetRequest(key=layout.settings("b").encode()))
        assert [kv.key for kv in one.kvs] == [layout.settings("b").encode()]
        assert one.kvs[0].value == group_bytes("b")
        assert one.count == 1
        assert not one.more
        assert one.header.revision == replica.revision
        whole = stub.Get(mspb.GetRequest(key=prefix, range_end=prefix_end(prefix)))
        assert [kv.key for kv in whole.kvs] == [layout.settings(n).encode() for n in "abc"]
        assert whole.kvs[2].mod_revision == revision
        limited = stub.Get(mspb.GetRequest(key=prefix, range_end=prefix_end(prefix), limit=2))
        assert len(limited.kvs) == 2
        assert limited.more
        assert limited.count == 3
        missing = stub.Get(mspb.GetRequest(key=layout.settings("zz").encode()))
        assert missing.count == 0
        assert list(missing.kvs) == []

    def test_outside_prefix_refused(self, served: Served) -> None:
        """Keys outside the replica's prefix are not its to answer: INVALID_ARGUMENT."""
        with pytest.raises(grpc.RpcError) as exc:
            meta_stub(served[1]).Get(mspb.GetRequest(key=b"/elsewhere/key"))
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    @pytest.mark.parametrize("method", ["Put", "Delete"])
    def test_writes_refused(self, served: Served, layout: KeyLayout, method: str) -> None:
        """Put/Delete: FAILED_PRECONDITION (metadata is written by PD)."""
        request = (mspb.PutRequest if method == "Put" else mspb.DeleteRequest)(
            key=layout.settings("x").encode()
        )
        with pytest.raises(grpc.RpcError) as exc:
            getattr(meta_stub(served[1]), method)(request)
        assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION


class TestWatch:
    """Watch from a revision: whole revisions, prev_kv, progress, resume, compacted starts."""

    def test_get_then_watch_next_modify(
        self,
        replica: Replica,
        served: Served,
        etcd_client: pyetcd.MultiEndpointEtcd3Client,
        layout: KeyLayout,
    ) -> None:
        """Get a prefix, watch from header.revision + 1: the next modify arrives, and a txn's
        two deletes arrive in one response (one revision)."""
        _put(etcd_client, layout.settings("g"), group_bytes("g"))
        revision = _put(etcd_client, layout.states("g"), b'{"r_u":{"tokens":1}}')
        replica.wait_for_revision(revision, 5)
        stub = meta_stub(served[1])
        prefix = layout.prefix.encode()
        got = stub.Get(mspb.GetRequest(key=prefix, range_end=prefix_end(prefix)))
        watch = WatchCollector(
            stub,
            mspb.WatchRequest(
                key=prefix,
                range_end=prefix_end(prefix),
                start_revision=got.header.revision + 1,
                prev_kv=True,
            ),
        )
        try:
            modified = _put(etcd_client, layout.settings("g"), group_bytes("g", 5))
            tx = etcd_client.transactions
            etcd_client.transaction(
                compare=[],
                success=[
                    tx.delete(layout.settings("g").encode()),
                    tx.delete(layout.states("g").encode()),
                ],
                failure=[],
            )
            watch.wait_for(lambda w: len(w.event_responses()) >= 2)
            first, second = watch.event_responses()[:2]
            assert first.header.revision == modified
            assert [(e.type, e.kv.value) for e in first.events] == [(0, group_bytes("g", 5))]
            assert first.events[0].prev_kv.value == group_bytes("g")
            assert second.header.revision == modified + 1
            assert sorted(e.kv.key for e in second.events) == sorted(
                [layout.settings("g").encode(), layout.states("g").encode()]
            )
            assert all(e.type == 1 and e.kv.mod_revision == modified + 1 for e in second.events)
        finally:
            watch.cancel()

    def test_progress_while_idle(self, replica: Replica, served: Served, layout: KeyLayout) -> None:
        """With nothing to send, a header-only progress response arrives (every 0.3 s here)."""
        prefix = layout.prefix.encode()
        watch = WatchCollector(
            meta_stub(served[1]), mspb.WatchRequest(key=prefix, range_end=prefix_end(prefix))
        )
        try:
            watch.wait_for(lambda w: len(w.responses) >= 2, timeout=5)
            assert all(not r.events for r in watch.responses)
            assert watch.responses[0].header.revision == replica.revision
        finally:
            watch.cancel()

    def test_resume_from_history(
        self,
        replica: Replica,
        served: Served,
        etcd_client: pyetcd.MultiEndpointEtcd3Client,
        layout: KeyLayout,
    ) -> None:
        """A watch from an older revision (still in the history) replays every revision since,
        then follows live, with nothing missed or repeated."""
        written = [
            _put(etcd_client, layout.settings(f"r{i}"), group_bytes(f"r{i}")) for i in range(5)
        ]
        replica.wait_for_revision(written[-1], 5)
        prefix = layout.prefix.encode()
        watch = WatchCollector(
            meta_stub(served[1]),
            mspb.WatchRequest(key=prefix, range_end=prefix_end(prefix), start_revision=written[2]),
        )
        try:
            live = _put(etcd_client, layout.settings("live"), group_bytes("live"))
            watch.wait_for(lambda w: live in w.revisions())
            assert watch.revisions() == [*written[2:], live]
        finally:
            watch.cancel()

    def test_start_before_history_is_compacted(
        self,
        replica: Replica,
        served: Served,
        etcd_client: pyetcd.MultiEndpointEtcd3Client,
        layout: KeyLayout,
    ) -> None:
        """A start the hub never saw (before it started) is answered as PD answers a
        compacted revision (pkg/mcs/metastorage/server/grpc_service.go:124-138): one response,
        header error DATA_COMPACTED, compact_revision; then the stream ends."""
        floor = replica.revision
        prefix = layout.prefix.encode()
        watch = WatchCollector(
            meta_stub(served[1]),
            mspb.WatchRequest(key=prefix, range_end=prefix_end(prefix), start_revision=1),
        )
        watch.done()
        assert len(watch.responses) == 1
        response = watch.responses[0]
        assert response.header.error.type == mspb.DATA_COMPACTED
        assert response.compact_revision == floor + 1
        assert "required watch revision: 1 is smaller than" in response.header.error.message
        assert watch.error is not None
        assert watch.error.code() == grpc.StatusCode.UNKNOWN
        assert "compacted" in (watch.error.details() or "")
        registry = served[2]
        assert registry.get_sample_value("rmwatch_grpc_watch_compacted_total") == 1.0


def test_history_bound_answers_compacted(
    replica: Replica, etcd_client: pyetcd.MultiEndpointEtcd3Client, layout: KeyLayout
) -> None:
    """With the history bounded to 2 changes, a watch from a revision evicted since answers
    DATA_COMPACTED with the oldest revision still held; one from there replays the rest."""
    with replica_server(replica, history_events=2) as (_, channel, _):
        written = [
            int(etcd_client.put(layout.settings(f"b{i}"), group_bytes(f"b{i}")).header.revision)
            for i in range(4)
        ]
        replica.wait_for_revision(written[-1], 5)
        prefix = layout.prefix.encode()
        stub = meta_stub(channel)
        deadline = time.monotonic() + 5
        while True:  # the hub seals the last revision moments after the replica applies it
            old = WatchCollector(
                stub,
                mspb.WatchRequest(
                    key=prefix, range_end=prefix_end(prefix), start_revision=written[0]
                ),
            )
            old.done()
            if old.responses[0].compact_revision == written[2] or time.monotonic() > deadline:
                break
        assert old.responses[0].header.error.type == mspb.DATA_COMPACTED
        assert old.responses[0].compact_revision == written[2]
        kept = WatchCollector(
            stub,
            mspb.WatchRequest(key=prefix, range_end=prefix_end(prefix), start_revision=written[2]),
        )
        kept.wait_for(lambda w: w.revisions() == written[2:])
        kept.cancel()
