"""Replica faults under continuous writes, checked by the history checker: a second replica
takes over serving, every replica down while writes go on, and etcd compaction during a
snapshot load, during catch-up and while a replica is cut off."""

from __future__ import annotations

import time
from typing import Any

from harness import TcpProxy, make_client
from history.workload import LibWriter, Sampler, Scenario, WriteLoad, causes, running

from rmwatch.watcher.state import ReplicaState


def _writer(sc: Scenario, name: str = "lib") -> LibWriter:
    w = LibWriter(sc.endpoints, sc.root_prefix, name).start()
    sc.on_close(w.close)
    assert w.leadership.wait_until_leader(5)
    sc.fenced_from_now()
    return w


def _drop(sc: Scenario, rid: str) -> None:
    replica = sc.replicas.pop(rid)
    replica.close()


def test_second_replica_takes_over_serving(etcd_endpoints: list[str], root_prefix: str) -> None:
    """r1 serves; r2 starts and r1 goes away: a client that read revision R from r1 reads at
    >= R from r2 (min_revision), with the same data etcd had at r2's revision."""
    with Scenario(etcd_endpoints, root_prefix) as sc:
        w = _writer(sc)
        sc.replica("r1").wait_ready(10)
        load = WriteLoad(sc.recorder, sc.layout, lambda: [w], seed=11)
        sampler = Sampler(sc.recorder, sc.replicas, load)
        with running(load.run, threads=2), running(sampler.run):
            time.sleep(1.0)
            seen = sc.recorder.sample("r1", sc.replicas["r1"])
            assert seen is not None, sc.recorder.refusals[-3:]
            sc.replica("r2").wait_ready(10)  # a load balancer sends traffic once /ready says so
            _drop(sc, "r1")
            got = sc.recorder.sample("r2", sc.replicas["r2"], min_revision=seen, timeout=10)
            assert got is not None, sc.recorder.refusals[-3:]
            assert got >= seen
            time.sleep(1.0)
        stats = sc.finish()
        assert stats.reads > 100


def test_all_replicas_down_while_writes_continue(
    etcd_endpoints: list[str], root_prefix: str
) -> None:
    """Both replicas go away while writes continue; new ones come back complete."""
    with Scenario(etcd_endpoints, root_prefix) as sc:
        w = _writer(sc)
        for rid in ("r1", "r2"):
            sc.replica(rid).wait_ready(10)
        load = WriteLoad(sc.recorder, sc.layout, lambda: [w], seed=12)
        sampler = Sampler(sc.recorder, sc.replicas, load)
        with running(load.run, threads=2), running(sampler.run):
            time.sleep(0.7)
            _drop(sc, "r1")
            _drop(sc, "r2")
            before = load.outcomes["ok"]
            time.sleep(1.5)
            assert load.outcomes["ok"] - before > 20, "writes did not continue"
            sc.replica("r3")
            sc.replica("r4")
            time.sleep(1.0)
        sc.finish()


def _preload(endpoints: list[str], prefix: str, count: int) -> None:
    """``count`` keys under the metadata prefix (unknown kinds: kept, not decoded)."""
    with make_client(endpoints) as client:
        tx = client.transactions
        for start in range(0, count, 100):
            client.transaction(compare=[], success=[
                tx.put(f"{prefix}zz-bulk/{i:06d}", b"x" * 64)
                for i in range(start, min(count, start + 100))], failure=[])  # fmt: skip


def test_compaction_during_snapshot_load(etcd_endpoints: list[str], root_prefix: str) -> None:
    """A replica loads 15k keys page by page (150 a page) while etcd is compacted three times
    150 ms apart: the load restarts at a fresh revision, and the replica ends consistent."""
    with Scenario(etcd_endpoints, root_prefix) as sc:
        _preload(etcd_endpoints, sc.layout.prefix, 15_000)
        w = _writer(sc)
        load = WriteLoad(sc.recorder, sc.layout, lambda: [w], seed=13)
        sampler = Sampler(sc.recorder, sc.replicas, load, extra=30)
        with running(load.run, threads=2), running(sampler.run):
            time.sleep(0.2)
            replica = sc.replica("r1", page_size=150)
            for _ in range(3):
                time.sleep(0.15)
                sc.truth.compact()
            replica.wait_ready(20)
            time.sleep(0.3)
        log = causes(replica)
        print(f"transitions: {log}")
        assert any("compacted during paginated load" in c for c in log), log
        sc.finish()


def test_compaction_during_catch_up(etcd_endpoints: list[str], root_prefix: str) -> None:
    """Between the snapshot load and the watch (the catch-up window) writes go on and etcd is
    compacted past the snapshot: the watch from snapshot + 1 is refused as compacted, the
    replica rebuilds while catching up, and ends consistent."""
    from rmwatch.store.etcd import connect  # noqa: PLC0415
    from rmwatch.store.etcd.watch import WatchSession  # noqa: PLC0415

    with Scenario(etcd_endpoints, root_prefix) as sc:
        w = _writer(sc)
        load = WriteLoad(sc.recorder, sc.layout, lambda: [w], seed=14)
        sampler = Sampler(sc.recorder, sc.replicas, load)
        opened: list[int] = []

        def session(client: Any, prefix: str, start: int, **options: Any) -> WatchSession:
            opened.append(start)
            if len(opened) == 1:  # the first watch after the first load: compact under it
                time.sleep(0.2)
                sc.truth.compact()
            return WatchSession(client, prefix, start, **options)

        class SlowMark:  # widens the catch-up window: writes land between load and store mark
            def __init__(self, inner: Any) -> None:
                self._inner = inner

            def __getattr__(self, name: str) -> Any:
                return getattr(self._inner, name)

            def get_range_response(self, *args: Any, **kwargs: Any) -> Any:
                if kwargs.get("sort_order") == "descend" and not opened:  # the first mark
                    time.sleep(0.1)
                return self._inner.get_range_response(*args, **kwargs)

        with running(load.run, threads=2), running(sampler.run):
            time.sleep(0.3)
            replica = sc.replica("r1", session_factory=session,
                                 client_factory=lambda c: SlowMark(connect(c)))  # fmt: skip
            replica.wait_ready(15)
            time.sleep(0.5)
        log = [(str(t.source), str(t.target), t.cause) for t in replica.transitions()]
        print(f"transitions: {log}")
        assert any(src == str(ReplicaState.CATCHING_UP) and dst == str(ReplicaState.REBUILDING)
                   and "compacted" in cause for src, dst, cause in log), log  # fmt: skip
        sc.finish()


def test_compaction_while_replica_is_cut_off(etcd_endpoints: list[str], root_prefix: str) -> None:
    """The replica's link is cut, writes go on, etcd compacts past its revision; when the link
    comes back the resume finds the revision compacted, the replica rebuilds (diff delivered
    to listeners) and ends consistent."""
    with Scenario(etcd_endpoints, root_prefix) as sc, TcpProxy(etcd_endpoints[0]) as proxy:
        w = _writer(sc)
        replica = sc.replica("r1", endpoints=[proxy.endpoint])
        replica.wait_ready(10)
        load = WriteLoad(sc.recorder, sc.layout, lambda: [w], seed=15)
        sampler = Sampler(sc.recorder, sc.replicas, load)
        with running(load.run, threads=2), running(sampler.run):
            time.sleep(0.5)
            proxy.cut()
            time.sleep(1.0)
            cut_at = replica.revision
            compacted = sc.truth.compact()
            assert compacted > cut_at
            proxy.restore()
            replica.wait_for_revision(compacted, 15)
            time.sleep(0.5)
        log = causes(replica)
        print(f"transitions: {log}")
        assert any(c.startswith(str(ReplicaState.REBUILDING)) and "compacted" in c
                   for c in log), log  # fmt: skip
        events = [a for a in sc.recorder.history().applied if a.source == "event:rebuild"]
        assert events, "the rebuild's diff was not delivered to listeners"
        sc.finish()
