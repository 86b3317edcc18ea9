"""One replica's watch fanned out over MetaStorage Watch: across a compaction rebuild (checked
against an independent raw etcd watch), a slow watcher cut off without hurting the others, and
100 watchers at once. Against real etcd processes."""

from __future__ import annotations

import threading
from typing import Any

import grpc
from grpc_support import RawWatch, WatchCollector, meta_stub, replica_server
from harness import EtcdMember, TcpProxy, compact, etcd_items, group_bytes, make_client, wait_until
from sidecar_support import replica

from rmwatch.store._pb import meta_storagepb_pb2 as mspb
from rmwatch.store.keys import KeyLayout
from rmwatch.watcher.replica import Replica
from rmwatch.watcher.watch_stream import prefix_end

__all__ = ["replica"]  # fixture used by name

Event = tuple[int, str, bytes, bytes]


def _request(prefix: str, start: int) -> mspb.WatchRequest:
    key = prefix.encode()
    return mspb.WatchRequest(key=key, range_end=prefix_end(key), start_revision=start)


def _state(client: Any, prefix: str, revision: int | None = None) -> dict[bytes, bytes]:
    return {k.encode(): v for k, (v, _) in etcd_items(client, prefix, revision).items()}


def _replay(state: dict[bytes, bytes], events: list[Event]) -> dict[bytes, bytes]:
    out = dict(state)
    for _, kind, key, value in events:
        if kind == "DELETE":
            out.pop(key, None)
        else:
            out[key] = value
    return out


def _assert_whole_revisions(watch: WatchCollector) -> None:
    """Each revision arrives once, in one response, in increasing order."""
    revisions = watch.revisions()
    assert revisions == sorted(set(revisions)), revisions
    for response in watch.event_responses():
        # A rebuild's PUTs keep their own mod revisions (<= the rebuild revision); a live
        # revision's events all carry it.
        assert all(e.kv.mod_revision <= response.header.revision for e in response.events)


class TestCompactionRebuild:
    """After etcd compacts what the replica needed, watchers get the net change at the rebuild
    revision; a start inside the lost range is told to reload."""

    def test_watchers_across_a_rebuild_match_raw_etcd(self, etcd_member: EtcdMember) -> None:
        """Live revisions equal the raw watch's exactly; the rebuild group equals the raw
        watch's net effect over the gap; replaying the stream gives etcd's final state."""
        layout = KeyLayout("/fan/")
        client = make_client([etcd_member.endpoint])
        for name in ("a", "b", "c"):
            client.put(layout.settings(name), group_bytes(name))
        with (
            TcpProxy(etcd_member.endpoint) as proxy,
            Replica(endpoints=[proxy.endpoint], root_prefix="/fan/") as replica,
        ):
            replica.wait_ready(10)
            with replica_server(replica) as (_, channel, registry):
                stub = meta_stub(channel)
                base = replica.revision
                initial = {
                    k.encode(): v for k, (v, _) in etcd_items(client, layout.prefix, base).items()
                }
                raw = RawWatch(client, layout.prefix, base + 1)
                watch = WatchCollector(stub, _request(layout.prefix, base + 1))
                try:
                    live1 = int(client.put(layout.settings("d"), group_bytes("d")).header.revision)
                    client.put(layout.settings("a"), group_bytes("a", 3))
                    watch.wait_for(lambda w: len(w.revisions()) == 2)
                    applied = replica.revision
                    proxy.cut()
                    client.delete(layout.settings("a"))
                    client.put(layout.settings("b"), group_bytes("b", 9))
                    client.put(layout.settings("b"), group_bytes("b", 10))
                    client.put(layout.settings("e"), group_bytes("e"))
                    client.delete(layout.settings("e"))
                    client.put(layout.settings("f"), group_bytes("f"))
                    compacted = compact([etcd_member.endpoint])
                    proxy.restore()
                    wait_until(lambda: replica.revision >= compacted, 30, "rebuild")
                    rebuilt = replica.revision
                    after = int(client.put(layout.settings("g"), group_bytes("g")).header.revision)
                    watch.wait_for(lambda w: after in w.revisions(), timeout=15)
                    wait_until(lambda: any(e[0] == after for e in raw.events()), 10, "raw")

                    _assert_whole_revisions(watch)
                    ours, theirs = watch.events(), raw.events()
                    live_ours = [e for e in ours if e[0] <= applied]
                    assert live_ours == [e for e in theirs if e[0] <= applied]
                    assert live_ours[0][0] == live1
                    assert [e for e in ours if e[0] == after] == [
                        e for e in theirs if e[0] == after
                    ]
                    # The rebuild group: one response at the rebuild revision, the net change
                    # of the gap (a deleted, b at its last value, f added; e never seen).
                    rebuild = [
                        r for r in watch.event_responses() if applied < r.header.revision < after
                    ]
                    assert len(rebuild) == 1
                    assert rebuild[0].header.revision == rebuilt
                    gap = [e for e in theirs if applied < e[0] <= rebuilt]
                    before_gap = _replay(initial, [e for e in theirs if e[0] <= applied])
                    got = {(e.type, bytes(e.kv.key), bytes(e.kv.value)) for e in rebuild[0].events}
                    net = _replay(before_gap, gap)
                    expected = {(0, k, v) for k, v in net.items() if before_gap.get(k) != v}
                    expected |= {(1, k, b"") for k in before_gap if k not in net}
                    assert got == expected
                    # No change missed: replaying our stream gives etcd's final state.
                    final = {
                        k.encode(): v for k, (v, _) in etcd_items(client, layout.prefix).items()
                    }
                    assert _replay(initial, ours) == final

                    # A watch that starts inside the lost range must reload.
                    inside = WatchCollector(stub, _request(layout.prefix, applied + 2))
                    inside.done()
                    assert inside.responses[0].header.error.type == mspb.DATA_COMPACTED
                    assert inside.responses[0].compact_revision == rebuilt + 1
                    # A watch from the last position before the gap gets the rebuild group.
                    resumed = WatchCollector(stub, _request(layout.prefix, applied + 1))
                    resumed.wait_for(lambda w: after in w.revisions())
                    assert resumed.revisions() == [rebuilt, after]
                    resumed.cancel()
                    assert registry.get_sample_value("rmwatch_grpc_watch_compacted_total") == 1.0
                finally:
                    watch.cancel()
                    raw.close()
        client.close()


class TestFanOut:
    """Many consumers share the replica's one watch; a slow one cannot hold the others back."""

    def test_slow_watcher_is_cut_off(
        self, replica: Replica, etcd_endpoints: list[str], root_prefix: str
    ) -> None:
        """A watcher that stops reading is cut off (RESOURCE_EXHAUSTED naming where to resume)
        once its buffer fills; a reading watcher gets every revision."""
        with replica_server(replica, watch_buffer=4) as (_, channel, registry):
            stub = meta_stub(channel)
            start = replica.revision + 1
            stalled = threading.Event()
            prefix = KeyLayout(root_prefix).prefix
            slow = WatchCollector(stub, _request(prefix, start), pause=stalled)
            fast = WatchCollector(stub, _request(prefix, start))
            written = []
            with make_client(etcd_endpoints) as client:
                # 256 KiB values: HTTP/2 and socket buffers fill after a few, then ours.
                big = b"x" * 256 * 1024
                for i in range(40):
                    key = f"{root_prefix}resource_group/blob/{i}"
                    written.append(int(client.put(key, big).header.revision))
            fast.wait_for(lambda w: written[-1] in w.revisions(), timeout=30)
            assert fast.revisions() == written
            wait_until(
                lambda: registry.get_sample_value("rmwatch_grpc_watch_cutoffs_total") == 1.0,
                15,
                "cut-off",
            )
            stalled.set()
            slow.done(15)
            assert slow.error is not None
            assert slow.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            details = slow.error.details() or ""
            assert "watcher fell behind" in details
            resume = int(details.rsplit("from revision ", 1)[1])
            # Everything before the resume point was delivered, nothing after it.
            assert slow.revisions() == [r for r in written if r < resume]
            fast.cancel()

    def test_hundred_watchers(
        self, replica: Replica, etcd_endpoints: list[str], root_prefix: str
    ) -> None:
        """100 concurrent watchers each receive every revision, once, in order."""
        with replica_server(replica) as (_, channel, registry):
            stub = meta_stub(channel)
            start = replica.revision + 1
            layout = KeyLayout(root_prefix)
            watchers = [WatchCollector(stub, _request(layout.prefix, start)) for _ in range(100)]
            try:
                wait_until(
                    lambda: registry.get_sample_value("rmwatch_grpc_watchers") == 100.0,
                    10,
                    "100 watchers registered",
                )
                written = []
                with make_client(etcd_endpoints) as client:
                    for i in range(20):
                        value = group_bytes(f"h{i % 5}", i % 16)
                        put = client.put(layout.settings(f"h{i % 5}"), value)
                        written.append(int(put.header.revision))
                for watcher in watchers:
                    watcher.wait_for(lambda w: written[-1] in w.revisions(), timeout=30)
                    assert watcher.revisions() == written
                    _assert_whole_revisions(watcher)
                assert {tuple(w.events()) for w in watchers} == {tuple(watchers[0].events())}
            finally:
                for watcher in watchers:
                    watcher.cancel()
