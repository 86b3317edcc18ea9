"""The replica's consistency promises against a real etcd: never early, one revision at a time,
monotonic, read your writes."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from harness import (
    EtcdMember,
    etcd_items,
    group_bytes,
    make_client,
    put_group,
    wait_until,
)

from rmwatch.errors import NotReadyError, RevisionTimeoutError
from rmwatch.store.etcd import connect
from rmwatch.store.keys import KeyLayout
from rmwatch.watcher.cache import ChangeEvent, PageDecoder, Snapshot
from rmwatch.watcher.replica import Replica


class _HookedClient:
    """A real pyetcd client whose first full-prefix range runs ``hook`` right after it returns."""

    def __init__(self, inner: Any, hook: Any) -> None:
        self._inner = inner
        self._hook = hook
        self._fired = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def get_range_response(self, *args: Any, **kwargs: Any) -> Any:
        response = self._inner.get_range_response(*args, **kwargs)
        if not self._fired and "sort_target" not in kwargs:
            self._fired = True
            self._hook(response)
        return response


def _hooked_factory(hook: Any) -> Any:
    return lambda config: _HookedClient(connect(config), hook)


class TestNeverEarly:
    def test_reads_raise_not_ready_before_the_first_snapshot(self, etcd_member: EtcdMember) -> None:
        """With etcd frozen, the replica never loads: reads and wait_ready raise NotReadyError."""
        etcd_member.pause()
        try:
            replica = Replica(endpoints=[etcd_member.endpoint])
            with replica:
                with pytest.raises(NotReadyError) as err:
                    replica.get_group("default")
                assert "loading" in err.value.reason
                with pytest.raises(NotReadyError):
                    replica.wait_ready(0.5)
                assert not replica.ready
        finally:
            etcd_member.resume()

    def test_not_ready_until_writes_after_the_load_are_applied(
        self, etcd_endpoints: list[str], etcd_client: Any, root_prefix: str
    ) -> None:
        """Writes that land between the snapshot load and the store-revision check must be
        applied before the replica calls itself ready."""
        layout = KeyLayout(root_prefix)
        put_group(etcd_client, layout, "before")
        late: list[str] = []
        seen_not_ready: list[bool] = []
        holder: dict[str, Replica] = {}

        def hook(_response: Any) -> None:
            # Runs in the worker right after page one: the snapshot is at R, these land after R.
            seen_not_ready.append(not holder["replica"].ready)
            for i in range(30):
                name = f"late{i}"
                put_group(etcd_client, layout, name)
                late.append(name)
            etcd_client.delete(layout.settings("before"))

        replica = Replica(
            endpoints=etcd_endpoints, root_prefix=root_prefix, client_factory=_hooked_factory(hook)
        )
        holder["replica"] = replica
        with replica:
            replica.wait_ready(10)
            snap = replica.snapshot()
            assert seen_not_ready == [True]
            assert [g.name for g in snap.list_groups()] == sorted([*late, "default"])
            assert snap.get_group("before") is None
            assert snap.raw_items() == etcd_items(etcd_client, layout.prefix, snap.revision)


class TestOneRevisionAtATime:
    def test_every_read_equals_etcd_at_its_revision_while_a_writer_hammers(
        self, etcd_endpoints: list[str], etcd_client: Any, root_prefix: str
    ) -> None:
        """A small-page snapshot and live watch under a writer rewriting 10 keys per txn:
        every sampled snapshot equals etcd's range at the same revision, and no snapshot
        shows half a transaction."""
        layout = KeyLayout(root_prefix)
        names = [f"g{i}" for i in range(10)]
        stop = threading.Event()
        writes = [0]

        def writer() -> None:
            client = make_client(etcd_endpoints)
            gen = 0
            while not stop.is_set():
                gen += 1
                ops = [
                    client.transactions.put(layout.settings(n), group_bytes(n, gen % 17))
                    for n in names
                ]
                client.transaction(compare=[], success=ops, failure=[])
                writes[0] += 1
            client.close()

        for n in names:
            put_group(etcd_client, layout, n)
        thread = threading.Thread(target=writer)
        thread.start()
        samples: list[Snapshot] = []
        try:
            # page_size=3: the 10 keys span 4 pages, all of which must be read at one revision.
            with Replica(endpoints=etcd_endpoints, root_prefix=root_prefix, page_size=3) as replica:
                replica.wait_ready(10)
                deadline = time.monotonic() + 2.0
                while time.monotonic() < deadline:
                    snap = replica.snapshot()
                    priorities = {snap.get_group(n).priority for n in names}  # type: ignore[union-attr]
                    assert len(priorities) == 1, f"half a transaction at {snap.revision}"
                    if not samples or samples[-1].revision != snap.revision:
                        samples.append(snap)
                    time.sleep(0.005)
        finally:
            stop.set()
            thread.join()
        assert writes[0] > 20
        assert len(samples) > 10
        for snap in samples[:: max(1, len(samples) // 40)]:
            assert snap.raw_items() == etcd_items(etcd_client, layout.prefix, snap.revision)


class TestMonotonic:
    def test_revisions_seen_by_readers_and_listeners_never_go_back(
        self, etcd_endpoints: list[str], etcd_client: Any, root_prefix: str
    ) -> None:
        """Revisions read by a polling reader and delivered to a listener only go up, and the
        listener sees every acknowledged write exactly once."""
        layout = KeyLayout(root_prefix)
        delivered: list[ChangeEvent] = []
        read: list[int] = []
        with Replica(endpoints=etcd_endpoints, root_prefix=root_prefix) as replica:
            replica.subscribe(delivered.append)
            replica.wait_ready(10)
            stop = threading.Event()

            def reader() -> None:
                while not stop.is_set():
                    read.append(replica.revision)

            thread = threading.Thread(target=reader)
            thread.start()
            acked = [put_group(etcd_client, layout, f"m{i % 7}", i % 17) for i in range(200)]
            replica.wait_for_revision(acked[-1], 10)
            stop.set()
            thread.join()
        assert read == sorted(read)
        revisions = [e.revision for e in delivered]
        assert revisions == acked

    def test_rebuild_publish_never_goes_below_a_relabel(
        self, etcd_endpoints: list[str], etcd_client: Any, root_prefix: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:  # fmt: skip
        """A reader asks for a revision moved on by other keys while a rebuild is building at
        an older load revision: the confirmer's relabel waits for the rebuild (it may not land
        between the worker's read of the current snapshot and its publish), so every revision
        a reader sees only goes up, and the asked-for revision is reached after the rebuild."""
        layout = KeyLayout(root_prefix)
        put_group(etcd_client, layout, "g1", 1)
        real_build = PageDecoder.snapshot
        armed = threading.Event()
        building = threading.Event()
        release = threading.Event()
        built: list[int] = []

        def slow_build(pages: PageDecoder, revision: int) -> Snapshot:
            snap = real_build(pages, revision)
            if armed.is_set():
                built.append(snap.revision)
                building.set()
                release.wait(10)  # a rebuild of a large prefix takes this long for real
            return snap

        monkeypatch.setattr(PageDecoder, "snapshot", slow_build)
        with Replica(endpoints=etcd_endpoints, root_prefix=root_prefix) as replica:
            replica.wait_ready(10)
            jobs = replica._jobs
            assert jobs is not None
            wait_until(lambda: jobs.sync.session is not None, 5, "the watch stream")
            seen: list[int] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    seen.append(replica.revision)

            sampler = threading.Thread(target=sample)
            sampler.start()
            try:
                # A rebuild, as check_digest asks for one on a mismatch (it cancels the stream).
                armed.set()
                jobs.sync.request_rebuild("digest_mismatch", "rebuild asked for by the test")
                assert building.wait(10)
                loaded_at = built[0]
                # A write outside the prefix moves the store on; a reader asks for it.
                other = int(etcd_client.put(root_prefix + "elsewhere", b"x").header.revision)
                assert other > loaded_at
                replica.request_revision(other)
                time.sleep(0.3)  # the confirmer tries now, and must wait for the rebuild
                release.set()
                replica.wait_for_revision(other, 10)
            finally:
                stop.set()
                sampler.join()
            assert seen == sorted(seen), "the applied revision went backwards"
            assert replica.revision >= other
        etcd_client.delete(root_prefix + "elsewhere")


class TestReadYourWrites:
    def test_min_revision_waits_for_the_write_and_times_out_with_the_current_revision(
        self, etcd_endpoints: list[str], etcd_client: Any, root_prefix: str
    ) -> None:
        """A read with min_revision returns the write it waited for; an unreachable revision
        raises RevisionTimeoutError carrying the current one."""
        layout = KeyLayout(root_prefix)
        with Replica(endpoints=etcd_endpoints, root_prefix=root_prefix) as replica:
            replica.wait_ready(10)
            revision = put_group(etcd_client, layout, "ryw", 5)
            got = replica.get_group("ryw", min_revision=revision, timeout=5)
            assert got.value is not None
            assert got.value.priority == 5
            assert got.revision >= revision
            with pytest.raises(RevisionTimeoutError) as err:
                replica.get_group("ryw", min_revision=revision + 10_000, timeout=0.2)
            assert err.value.current >= revision
            assert err.value.wanted == revision + 10_000


class TestRevisionsMovedElsewhere:
    def test_a_revision_moved_on_by_other_keys_is_reached_without_events(
        self, etcd_endpoints: list[str], etcd_client: Any, root_prefix: str
    ) -> None:
        """etcd's revision moves on with writes outside the prefix (no event reaches the watch);
        a min_revision read at that revision is served promptly from the unchanged snapshot,
        relabelled, and later events still apply on top."""
        layout = KeyLayout(root_prefix)
        with Replica(endpoints=etcd_endpoints, root_prefix=root_prefix) as replica:
            replica.wait_ready(10)
            put_group(etcd_client, layout, "here", 1)
            elsewhere = [
                int(etcd_client.put(f"/elsewhere{root_prefix}{i}", b"x").header.revision)
                for i in range(3)
            ]
            started = time.monotonic()
            got = replica.get_group("here", min_revision=elsewhere[-1], timeout=3)
            assert time.monotonic() - started < 1.0
            assert got.revision >= elsewhere[-1]
            assert got.value is not None
            assert replica.snapshot().raw_items() == etcd_items(
                etcd_client, layout.prefix, got.revision
            )
            after = put_group(etcd_client, layout, "later", 2)
            assert replica.get_group("later", min_revision=after).value is not None
        for i in range(3):
            etcd_client.delete(f"/elsewhere{root_prefix}{i}")

    def test_a_relabel_past_undelivered_events_does_not_force_a_rebuild(
        self, etcd_endpoints: list[str], etcd_client: Any, root_prefix: str
    ) -> None:
        """A store mark proves etcd at S equals the cache, but not that no events are pending
        in (r, S]: a key created and deleted in that window leaves the newest mod revision and
        the count unchanged. The confirmer relabels to S while those events are still on their
        way (here: a listener is slow, which the API allows); the worker then skips events at
        or below the relabel instead of rebuilding for "duplicate or out of order"."""
        layout = KeyLayout(root_prefix)
        put_group(etcd_client, layout, "g1", 1)
        in_listener = threading.Event()
        go_on = threading.Event()

        def slow(event: ChangeEvent) -> None:
            if event.key.endswith("/slow"):
                in_listener.set()
                go_on.wait(5)

        with Replica(endpoints=etcd_endpoints, root_prefix=root_prefix) as replica:
            replica.subscribe(slow)
            replica.wait_ready(10)
            put_group(etcd_client, layout, "slow", 1)
            assert in_listener.wait(5)
            # While the worker is in the listener: a transient key, then a write elsewhere.
            put_group(etcd_client, layout, "transient", 2)
            etcd_client.delete(layout.settings("transient"))
            other = int(etcd_client.put(root_prefix + "elsewhere", b"x").header.revision)
            replica.request_revision(other)
            wait_until(lambda: replica.revision >= other, 5, "the confirmer's relabel")
            go_on.set()
            time.sleep(0.5)
            causes = [t.cause for t in replica.transitions()]
            assert not any("out of order" in c for c in causes), causes
            assert replica.status()["relabels"] >= 1
