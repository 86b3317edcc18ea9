"""No silent loss: the replica recovers from every break of etcd or the network, against real
etcd processes, and each recovery is recorded with its reason."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
from grpc_support import FakeRpcError
from harness import (
    EtcdCluster,
    EtcdMember,
    TcpProxy,
    compact,
    etcd_items,
    group_bytes,
    make_client,
    put_group,
    wait_until,
)
from pyetcd import exceptions as etcd_exc

from rmwatch.store.etcd import connect
from rmwatch.store.etcd.watch import WatchSession
from rmwatch.store.keys import KeyLayout
from rmwatch.watcher.cache import ChangeEvent, ChangeKind
from rmwatch.watcher.replica import Replica
from rmwatch.watcher.state import ReplicaState


class _MarkFailsOnce:
    """A real client, except that the first store-mark range (sort_order=descend) fails once
    with a gRPC error (etcd 3.5 answers INTERNAL from a stopping member)."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.fail_marks = 1

    def get_range_response(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("sort_order") == "descend" and self.fail_marks > 0:
            self.fail_marks -= 1
            raise FakeRpcError(grpc.StatusCode.INTERNAL, "injected: member stopping")
        return self._real.get_range_response(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _causes(replica: Replica) -> list[str]:
    return [t.cause for t in replica.transitions()]


def _assert_matches_etcd(replica: Replica, client: Any, layout: KeyLayout) -> None:
    snap = replica.snapshot()
    assert snap.raw_items() == etcd_items(client, layout.prefix, snap.revision)


class TestMemberRestart:
    def test_sigkill_and_restart_resumes_with_no_gap_and_no_duplicate(
        self, etcd_member: EtcdMember
    ) -> None:
        """A writer keeps writing while the only member is SIGKILLed and restarted: the
        replica's listener sees every acknowledged revision exactly once, in order."""
        layout = KeyLayout("/kill/")
        client = make_client([etcd_member.endpoint], timeout=2)
        delivered: list[ChangeEvent] = []
        acked: list[int] = []
        unknown = [0]
        stop = threading.Event()

        def writer() -> None:
            i = 0
            while not stop.is_set():
                try:
                    acked.append(put_group(client, layout, f"k{i % 13}", i % 17))
                    i += 1
                except etcd_exc.Etcd3Exception:
                    # Outcome unknown: the kill may have landed after the commit.
                    unknown[0] += 1
                    time.sleep(0.05)
                time.sleep(0.002)

        with Replica(endpoints=[etcd_member.endpoint], root_prefix="/kill/") as replica:
            replica.subscribe(delivered.append)
            replica.wait_ready(10)
            thread = threading.Thread(target=writer)
            thread.start()
            try:
                wait_until(lambda: len(acked) > 50, 10, "writes before the kill")
                etcd_member.kill()
                time.sleep(0.5)
                etcd_member.restart()
                count = len(acked)
                wait_until(lambda: len(acked) > count + 50, 20, "writes after the restart")
            finally:
                stop.set()
                thread.join()
            replica.wait_for_revision(acked[-1], 20)
            revisions = [e.revision for e in delivered]
            assert revisions == sorted(set(revisions)), "a revision delivered twice or out of order"
            assert set(acked) <= set(revisions), "an acknowledged write was never delivered"
            assert len(revisions) - len(acked) <= unknown[0]
            assert any("lost" in c or "UNAVAILABLE" in c for c in _causes(replica))
            _assert_matches_etcd(replica, client, layout)
        client.close()


class TestStoreMarkFailure:
    def test_replica_becomes_ready_after_store_mark_fails_once(
        self, etcd_endpoints: list[str], etcd_client: Any, root_prefix: str
    ) -> None:
        """The first snapshot is published before the store mark is taken; when that mark
        fails once (a retried etcd error), the retry takes it again, so the replica still
        catches up instead of streaming forever without a target."""
        layout = KeyLayout(root_prefix)
        put_group(etcd_client, layout, "g1", 1)
        proxies: list[_MarkFailsOnce] = []

        def factory(config: Any) -> Any:
            proxy = _MarkFailsOnce(connect(config))
            proxies.append(proxy)
            return proxy

        with Replica(
            endpoints=etcd_endpoints, root_prefix=root_prefix, client_factory=factory,
            progress_interval=0.2,
        ) as replica:  # fmt: skip
            # Writes keep the watch busy; caught-up would be reached at once with a mark.
            put_group(etcd_client, layout, "g2", 2)
            try:
                replica.wait_ready(5)
            finally:
                assert proxies[0].fail_marks == 0, "the injected failure did not happen"
            assert replica.state is ReplicaState.SERVING


class TestCompaction:
    def test_compaction_while_disconnected_rebuilds_and_delivers_the_diff(
        self, etcd_member: EtcdMember
    ) -> None:
        """Cut off by a proxy while etcd deletes, modifies, adds and compacts, the replica
        rebuilds from a fresh snapshot: the cache equals etcd, the delete is reconciled, and
        listeners get exactly the diff as rebuild events."""
        layout = KeyLayout("/cmp/")
        client = make_client([etcd_member.endpoint])
        for name in ("a", "b", "c"):
            put_group(client, layout, name)
        delivered: list[ChangeEvent] = []
        with (
            TcpProxy(etcd_member.endpoint) as proxy,
            Replica(endpoints=[proxy.endpoint], root_prefix="/cmp/") as replica,
        ):
            replica.subscribe(delivered.append)
            replica.wait_ready(10)
            applied = replica.revision
            proxy.cut()
            client.delete(layout.settings("a"))
            put_group(client, layout, "b", 9)
            put_group(client, layout, "d", 4)
            compacted = compact([etcd_member.endpoint])
            proxy.restore()
            wait_until(lambda: replica.revision >= compacted, 30, "rebuild after compaction")
            replica.wait_ready(5)
            _assert_matches_etcd(replica, client, layout)
            changes = {(e.kind, e.key, e.source) for e in delivered}
            assert changes == {
                (ChangeKind.DELETE, layout.settings("a"), "rebuild"),
                (ChangeKind.PUT, layout.settings("b"), "rebuild"),
                (ChangeKind.PUT, layout.settings("d"), "rebuild"),
            }
            assert f"compacted {compacted} > applied {applied}" in _causes(replica)
            assert replica.metrics.rebuilds.labels("compacted")._value.get() == 1
        client.close()

    def test_compaction_in_the_middle_of_a_paginated_load_restarts_the_load(
        self, etcd_member: EtcdMember
    ) -> None:
        """When the pinned revision is compacted between pages, the load starts over at a fresh
        revision, records why, and ends equal to etcd (a key deleted meanwhile, seen by the
        abandoned try, is gone)."""
        layout = KeyLayout("/mid/")
        client = make_client([etcd_member.endpoint])
        for i in range(9):
            put_group(client, layout, f"g{i}")
        fired: list[int] = []

        class Hooked:
            def __init__(self, inner: Any) -> None:
                self._inner = inner

            def __getattr__(self, name: str) -> Any:
                return getattr(self._inner, name)

            def get_range_response(self, *args: Any, **kwargs: Any) -> Any:
                response = self._inner.get_range_response(*args, **kwargs)
                if not fired and kwargs.get("limit") == 2:
                    put_group(client, layout, "late")
                    # g0 was on the first page of the try that is abandoned: it must not
                    # survive into the snapshot of the try that succeeds.
                    client.delete(layout.settings("g0"))
                    fired.append(compact([etcd_member.endpoint]))
                return response

        with Replica(
            endpoints=[etcd_member.endpoint],
            root_prefix="/mid/",
            page_size=2,
            client_factory=lambda c: Hooked(connect(c)),
        ) as replica:
            replica.wait_ready(10)
            assert replica.snapshot().get_group("late") is not None
            assert replica.snapshot().get_group("g0") is None
            assert any("compacted during paginated load" in c for c in _causes(replica))
            assert replica.revision >= fired[0]
            _assert_matches_etcd(replica, client, layout)
        client.close()


class _MeasuredSession(WatchSession):
    largest = 0

    def __iter__(self) -> Any:
        for response in super().__iter__():
            _MeasuredSession.largest = max(_MeasuredSession.largest, response.ByteSize())
            yield response


class TestLargeCatchUp:
    def test_catch_up_messages_over_4_mib_are_received(self, etcd_member: EtcdMember) -> None:
        """A replay of 140 hundred-put transactions arrives as watch messages far above gRPC's
        default 4 MiB limit; the replica applies all of it."""
        layout = KeyLayout("/big/")
        client = make_client([etcd_member.endpoint])
        filler: dict[str, Any] = {"background_settings": {"job_types": ["x" * 900]}}
        _MeasuredSession.largest = 0
        with (
            TcpProxy(etcd_member.endpoint) as proxy,
            Replica(
                endpoints=[proxy.endpoint], root_prefix="/big/", session_factory=_MeasuredSession
            ) as replica,
        ):
            replica.wait_ready(10)
            proxy.cut()
            last = 0
            for t in range(140):
                ops = [
                    client.transactions.put(
                        layout.settings(f"b{t}-{i}"), group_bytes(f"b{t}-{i}", **filler)
                    )
                    for i in range(100)
                ]
                client.transaction(compare=[], success=ops, failure=[])
            last = int(client.get_response(layout.settings("b139-99")).kvs[0].mod_revision)
            proxy.restore()
            replica.wait_for_revision(last, 60)
            assert len(replica.snapshot().list_groups()) == 14_001  # + the reserved default
            assert _MeasuredSession.largest > 4 * 1024 * 1024
        client.close()


class TestFrozenMember:
    def test_sigstop_of_the_serving_member_is_detected_and_failed_over(
        self, etcd_cluster: EtcdCluster
    ) -> None:
        """SIGSTOP of the member the replica streams from (no FIN, no RST) is detected within
        ~10 s and the replica resumes on another member without losing a write."""
        layout = KeyLayout("/frz/")
        with Replica(endpoints=etcd_cluster.endpoints, root_prefix="/frz/") as replica:
            replica.wait_ready(10)
            wait_until(lambda: replica.status()["endpoint"] is not None, 5, "a watch stream")
            endpoint = replica.status()["endpoint"]
            frozen = next(m for m in etcd_cluster.members if m.endpoint in endpoint)
            others = [m.endpoint for m in etcd_cluster.members if m is not frozen]
            client = make_client(others)
            frozen.pause()
            try:
                started = time.monotonic()
                deadline = started + 30
                revision = 0
                while not revision:
                    try:
                        revision = put_group(client, layout, "after-freeze", 3)
                    except etcd_exc.Etcd3Exception:
                        # The frozen member may have been leader: wait for a new election.
                        assert time.monotonic() < deadline
                        time.sleep(0.2)
                replica.wait_for_revision(revision, 25)
                detected = time.monotonic() - started
                assert detected < 20
                assert replica.status()["endpoint"] != endpoint
                group = replica.snapshot().get_group("after-freeze")
                assert group is not None
                assert any(frozen.endpoint in c for c in _causes(replica))
            finally:
                frozen.resume()
                client.close()


class _DuplicatingSession(WatchSession):
    duplicated = False

    def __iter__(self) -> Any:
        for response in super().__iter__():
            yield response
            if response.events and not _DuplicatingSession.duplicated:
                _DuplicatingSession.duplicated = True
                yield response  # the same revision again, as a buggy proxy might


class TestOutOfOrder:
    def test_a_duplicate_revision_is_never_applied_and_forces_a_resync(
        self, etcd_endpoints: list[str], etcd_client: Any, root_prefix: str
    ) -> None:
        """A response repeated on a real stream is not applied twice: the replica resyncs from
        a fresh snapshot, records why, and listeners see each revision once."""
        layout = KeyLayout(root_prefix)
        delivered: list[ChangeEvent] = []
        _DuplicatingSession.duplicated = False
        with Replica(
            endpoints=etcd_endpoints, root_prefix=root_prefix, session_factory=_DuplicatingSession
        ) as replica:
            replica.subscribe(delivered.append)
            replica.wait_ready(10)
            first = put_group(etcd_client, layout, "dup", 1)
            wait_until(
                lambda: any(c.startswith("rebuilt at") for c in _causes(replica)),
                10,
                "resync after the duplicate",
            )
            assert replica.metrics.rebuilds.labels("out_of_order")._value.get() == 1
            second = put_group(etcd_client, layout, "dup", 2)
            replica.wait_for_revision(second, 10)
            replica.wait_ready(5)
            assert [e.revision for e in delivered if e.source == "watch"] == [first, second]
            assert any("duplicate or out of order" in c for c in _causes(replica))
            assert replica.state is ReplicaState.SERVING
            _assert_matches_etcd(replica, etcd_client, layout)
