"""Review findings: each test demonstrates one correctness bug in the replica (fails today)."""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

import grpc
import pytest
from harness import put_group, wait_until

import rmwatch.watcher.replica as replica_mod
from rmwatch.store.etcd import connect
from rmwatch.store.keys import KeyLayout
from rmwatch.watcher.cache import ChangeEvent, gc_paused
from rmwatch.watcher.replica import Replica


class _FakeRpcError(grpc.RpcError):  # type: ignore[misc]  # grpc ships no type hints
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class _ClientProxy:
    """A real client, except that the first store_mark range (sort_order=descend) fails once
    with a non-transient gRPC error (etcd 3.5 answers INTERNAL from a stopping member)."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.fail_marks = 1

    def get_range_response(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("sort_order") == "descend" and self.fail_marks > 0:
            self.fail_marks -= 1
            raise _FakeRpcError(grpc.StatusCode.INTERNAL, "injected: member stopping")
        return self._real.get_range_response(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class TestMarkFailureAfterFirstLoad:
    def test_replica_becomes_ready_after_store_mark_fails_once(
        self, etcd_endpoints: list[str], etcd_client: Any, root_prefix: str
    ) -> None:
        """_load publishes the first snapshot and clears _need_load BEFORE store_mark; if
        store_mark then fails (retryable), _mark stays None and _check_caught_up returns early
        forever: the replica never becomes ready (until a compaction forces a rebuild)."""
        layout = KeyLayout(root_prefix)
        put_group(etcd_client, layout, "g1", 1)
        proxies: list[_ClientProxy] = []

        def factory(config: Any) -> Any:
            proxy = _ClientProxy(connect(config))
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


class TestRelabelVersusRebuild:
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
        real_build = replica_mod.build_snapshot  # type: ignore[attr-defined]
        armed = threading.Event()
        building = threading.Event()
        release = threading.Event()
        built: list[int] = []

        def slow_build(*args: Any, **kwargs: Any) -> Any:
            snap = real_build(*args, **kwargs)
            if armed.is_set():
                built.append(snap.revision)
                building.set()
                release.wait(10)  # a 100k-key rebuild takes this long for real
            return snap

        monkeypatch.setattr(replica_mod, "build_snapshot", slow_build)
        with Replica(endpoints=etcd_endpoints, root_prefix=root_prefix) as replica:
            replica.wait_ready(10)
            wait_until(lambda: replica._session is not None, 5, "the watch stream")
            seen: list[int] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    seen.append(replica.revision)

            sampler = threading.Thread(target=sample)
            sampler.start()
            try:
                # A rebuild, as check_digest asks for one on a mismatch.
                armed.set()
                replica._pending_rebuild = ("digest_mismatch", "review test")
                session = replica._session
                assert session is not None
                session.cancel()
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


class TestRelabelVersusPendingEvents:
    def test_relabel_past_undelivered_events_forces_a_spurious_rebuild(
        self, etcd_endpoints: list[str], etcd_client: Any, root_prefix: str
    ) -> None:
        """_unchanged_since proves etcd@S == cache, but not that no events exist in (r, S]: a
        key created and deleted in that window leaves M and the count unchanged. The confirmer
        relabels to S while those events are still on their way (here: a listener is slow,
        which the API allows), then _apply sees revisions <= applied and rebuilds the whole
        cache with cause 'duplicate or out of order'."""
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


class TestGcPaused:
    def test_gc_stays_off_if_it_was_off_when_holders_leave_out_of_order(self) -> None:
        """Two threads pause the GC (worker building, validator validating). Only the first
        holder records whether the GC was on; the *last* leaver decides with its own flag,
        which is True for every holder but the first: the GC is re-enabled although the
        application had disabled it."""
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
