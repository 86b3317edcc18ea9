"""Honest staleness, contained bad data, reasons for every recovery, digest checks, and a clean
close, against a real etcd."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest
from harness import (
    EtcdMember,
    TcpProxy,
    etcd_items,
    group_bytes,
    make_client,
    put_group,
    wait_until,
)

from rmwatch.errors import DigestMismatchError, NotReadyError, ReplicaClosedError
from rmwatch.store.keys import KeyLayout
from rmwatch.watcher.cache import Entry, Snapshot
from rmwatch.watcher.replica import Replica
from rmwatch.watcher.state import ReplicaState


class TestStaleness:
    def test_past_the_bound_a_frozen_etcd_makes_the_replica_not_ready_and_it_recovers(
        self, etcd_member: EtcdMember
    ) -> None:
        """With the only member frozen, the replica keeps its data but stops serving once the
        last confirmation is older than max_staleness; after SIGCONT it serves again."""
        layout = KeyLayout("/stale/")
        client = make_client([etcd_member.endpoint])
        put_group(client, layout, "s1")
        with Replica(
            endpoints=[etcd_member.endpoint], root_prefix="/stale/", max_staleness=1.5
        ) as replica:
            replica.wait_ready(10)
            assert replica.get_group("s1").value is not None
            etcd_member.pause()
            try:
                wait_until(lambda: not replica.ready, 10, "staleness to be reported")
                with pytest.raises(NotReadyError) as err:
                    replica.get_group("s1")
                assert "stale" in err.value.reason
                # status() rounds the age to 0.1 s: 1.54 s past the bound reads as 1.5.
                assert replica.status()["age_seconds"] >= 1.5
            finally:
                etcd_member.resume()
            replica.wait_ready(30)
            assert replica.get_group("s1").value is not None
        client.close()


class TestDegraded:
    def test_etcd_down_degrades_but_keeps_serving_within_the_bound_and_recovers(
        self, etcd_member: EtcdMember
    ) -> None:
        """With the only member killed, a caught-up replica goes DEGRADED after repeated
        failures and keeps serving its snapshot (it is within max_staleness); once etcd is
        back, the watch resumes and it is SERVING again, every step with its cause."""
        layout = KeyLayout("/degraded/")
        client = make_client([etcd_member.endpoint])
        put_group(client, layout, "d1", 3)
        client.close()
        with Replica(
            endpoints=[etcd_member.endpoint], root_prefix="/degraded/", max_staleness=120
        ) as replica:
            replica.wait_ready(10)
            etcd_member.kill()
            try:
                wait_until(
                    lambda: replica.state is ReplicaState.DEGRADED, 30, "DEGRADED to be reported"
                )
                assert replica.ready
                got = replica.get_group("d1")
                assert got.value is not None
                assert got.value.priority == 3
                status = replica.status()
                assert status["state"] == "DEGRADED"
                assert status["not_ready_reason"] is None
                assert status["failed_tries"] >= 5
                degraded = replica.transitions()[-1]
                assert degraded.cause.startswith("etcd unreachable after")
            finally:
                etcd_member.restart()
            wait_until(lambda: replica.state is ReplicaState.SERVING, 30, "SERVING again")
            assert replica.get_group("d1").value is not None
            targets = [t.target for t in replica.transitions()]
            assert targets[-3:] == [
                ReplicaState.RESUMING,
                ReplicaState.DEGRADED,
                ReplicaState.SERVING,
            ]


class TestBadData:
    def test_malformed_values_are_contained_reported_and_recovered(
        self, etcd_endpoints: list[str], etcd_client: Any, root_prefix: str
    ) -> None:
        """Garbage bytes, a name differing from its key, and bad JSON, written with a raw
        client, are skipped and listed with key, revision and error; every other key keeps
        serving; a good value later replaces the bad one."""
        layout = KeyLayout(root_prefix)
        put_group(etcd_client, layout, "good")
        garbage = layout.settings("garbage")
        etcd_client.put(garbage, b"\xff\xfe\xfd")
        with Replica(endpoints=etcd_endpoints, root_prefix=root_prefix) as replica:
            replica.wait_ready(10)
            wrong = layout.settings("wrong-name")
            rev1 = int(etcd_client.put(wrong, group_bytes("other")).header.revision)
            bad_json = layout.states("good")
            rev2 = int(etcd_client.put(bad_json, b"{not json").header.revision)
            limit = layout.service_limit(7)
            rev3 = int(etcd_client.put(limit, b"-5").header.revision)
            replica.wait_for_revision(rev3, 10)
            # Reads never see a bad value; the validator lists them moments after apply.
            assert replica.get_group("wrong-name").value is None
            wait_until(
                lambda: len(replica.status()["decode_errors"]) == 4, 5, "four bad keys listed"
            )
            status = replica.status()
            errors = {e["key"]: e for e in status["decode_errors"]}
            assert set(errors) == {garbage, wrong, bad_json, limit}
            assert errors[wrong]["revision"] == rev1
            assert "differs from the key" in errors[wrong]["error"]
            assert errors[bad_json]["revision"] == rev2
            assert replica.metrics.decode_errors._value.get() == 4
            assert replica.get_group("good").value is not None
            assert replica.get_group("wrong-name").value is None
            assert replica.get_service_limit(7).value is None
            assert replica.ready
            fixed = put_group(etcd_client, layout, "garbage", 4)
            got = replica.get_group("garbage", min_revision=fixed)
            assert got.value is not None
            assert got.value.priority == 4
            wait_until(
                lambda: garbage not in {e["key"] for e in replica.status()["decode_errors"]},
                5,
                "the repaired key to leave the list",
            )


class TestReasons:
    def test_every_transition_is_recorded_with_cause_and_revision(
        self, etcd_endpoints: list[str], root_prefix: str
    ) -> None:
        """Start-up records NEW → LOADING → CATCHING_UP → SERVING with causes naming
        revisions, and close records STOPPED; /status shows them."""
        with Replica(endpoints=etcd_endpoints, root_prefix=root_prefix) as replica:
            replica.wait_ready(10)
            path = [(t.source, t.target) for t in replica.transitions()]
            assert path == [
                (ReplicaState.NEW, ReplicaState.LOADING),
                (ReplicaState.LOADING, ReplicaState.CATCHING_UP),
                (ReplicaState.CATCHING_UP, ReplicaState.SERVING),
            ]
            started, first, second = replica.transitions()
            assert started.cause == "started"
            assert first.cause.startswith(f"snapshot loaded at {first.applied_revision}")
            assert second.cause.startswith("caught up: applied")
            assert replica.status()["transitions"][1]["cause"] == first.cause
        assert replica.transitions()[-1].target is ReplicaState.STOPPED


class TestDigest:
    def _tamper(self, replica: Replica) -> str:
        published = replica._published
        snap = published.current
        assert snap is not None
        key = next(iter(snap.entries))
        entry = snap.entries[key]
        forged = Entry(key, entry.raw + b"!", entry.mod_revision, entry.parsed, value=entry.value)
        published.current = Snapshot(
            snap.layout, snap.revision, snap.entries.updated({key: forged})
        )
        return key

    def test_digest_finds_a_divergent_cache_and_a_rebuild_repairs_it(
        self, etcd_endpoints: list[str], etcd_client: Any, root_prefix: str
    ) -> None:
        """A cache that differs from etcd at its own revision is detected by the digest check,
        counted, and repaired by a rebuild with the reason recorded."""
        layout = KeyLayout(root_prefix)
        for i in range(5):
            put_group(etcd_client, layout, f"d{i}")
        with Replica(endpoints=etcd_endpoints, root_prefix=root_prefix) as replica:
            replica.wait_ready(10)
            clean = replica.check_digest()
            assert clean is not None
            assert clean.ok
            assert replica.status()["last_digest"] == {
                "revision": clean.revision,
                "keys": 5,
                "mismatched": [],
                "mismatched_count": 0,
                "ok": True,
                "error": None,
            }
            key = self._tamper(replica)
            result = replica.check_digest()
            assert result is not None
            assert result.mismatched == [key]
            reported = replica.status()["last_digest"]
            assert reported["mismatched"] == [key]
            assert reported["mismatched_count"] == 1
            assert reported["ok"] is False
            assert reported["error"] is None  # not strict: nothing was raised
            wait_until(
                lambda: replica.metrics.rebuilds.labels("digest_mismatch")._value.get() == 1,
                10,
                "a rebuild after the mismatch",
            )
            wait_until(
                lambda: any(t.cause.startswith("rebuilt at") for t in replica.transitions()),
                10,
                "the rebuild to finish",
            )
            snap = replica.snapshot()
            assert snap.raw_items() == etcd_items(etcd_client, layout.prefix, snap.revision)
            assert any("digest mismatch" in t.cause for t in replica.transitions())

    def test_strict_mode_raises(
        self, etcd_endpoints: list[str], etcd_client: Any, root_prefix: str
    ) -> None:
        """In strict mode a mismatch raises DigestMismatchError (for tests and audits)."""
        put_group(etcd_client, KeyLayout(root_prefix), "x")
        with Replica(
            endpoints=etcd_endpoints, root_prefix=root_prefix, strict_digest=True
        ) as replica:
            replica.wait_ready(10)
            self._tamper(replica)
            with pytest.raises(DigestMismatchError):
                replica.check_digest()

    def test_strict_mode_error_and_result_are_reported_on_status(
        self, etcd_endpoints: list[str], etcd_client: Any, root_prefix: str
    ) -> None:
        """The periodic digest in strict mode cannot raise to anyone: status() shows the last
        result (revision, keys, mismatched count, ok) and the error it raised."""
        put_group(etcd_client, KeyLayout(root_prefix), "x")
        with Replica(
            endpoints=etcd_endpoints, root_prefix=root_prefix, strict_digest=True,
            digest_interval=0.2,
        ) as replica:  # fmt: skip
            replica.wait_ready(10)
            wait_until(lambda: replica.status()["last_digest"] is not None, 5, "a digest")
            assert replica.status()["last_digest"]["ok"] is True
            at = replica.revision
            key = self._tamper(replica)

            def mismatch_reported() -> bool:
                digest = replica.status()["last_digest"]
                return digest is not None and not digest["ok"]

            wait_until(mismatch_reported, 5, "the periodic digest to find the mismatch")
            digest = replica.status()["last_digest"]
            assert digest["revision"] == at
            assert digest["keys"] == 1
            assert digest["mismatched"] == [key]
            assert digest["mismatched_count"] == 1
            assert digest["error"].startswith(f"cache differs from etcd at {at}")


class TestClose:
    def test_close_stops_every_thread_and_later_use_fails_clearly(
        self, etcd_endpoints: list[str], root_prefix: str
    ) -> None:
        """After close no replica thread is left, reads raise NotReadyError, and waiting on a
        closed replica raises ReplicaClosedError."""
        before = {t.ident for t in threading.enumerate()}
        replica = Replica(endpoints=etcd_endpoints, root_prefix=root_prefix, digest_interval=0.2)
        replica.start()
        replica.wait_ready(10)
        replica.close()
        replica.close()  # idempotent
        leftover = [
            t.name for t in threading.enumerate()
            if t.ident not in before and t.name.startswith("rmwatch")
        ]  # fmt: skip
        assert leftover == []
        with pytest.raises(NotReadyError):
            replica.get_group("x")
        with pytest.raises(ReplicaClosedError):
            replica.wait_for_revision(10**9, 0.1)
        with pytest.raises(ReplicaClosedError):
            replica.start()

    def test_closing_while_the_load_retries_is_prompt_and_leaves_nothing(
        self, etcd_endpoints: list[str], root_prefix: str
    ) -> None:
        """A replica whose first load keeps failing (its etcd cut off: the load's reads are
        retried with backoff) closes within a second, again and again, with no thread left:
        the load starts no call once stop is set, and a call already under way meets a closed
        client (EtcdClientClosedError) instead of building a stub on a closed channel, which
        crashed the interpreter in grpc 1.85 (seen once in the soak)."""
        rng = random.Random(14)
        before = {t.ident for t in threading.enumerate()}
        with TcpProxy(etcd_endpoints[0]) as proxy:
            proxy.cut()
            for _ in range(8):
                replica = Replica(endpoints=[proxy.endpoint], root_prefix=root_prefix)
                replica.start()
                time.sleep(rng.uniform(0.0, 1.5))  # inside a call, a wait, or a failover
                assert replica.state is not ReplicaState.SERVING
                started = time.monotonic()
                replica.close()
                assert time.monotonic() - started < 1.5
                assert replica.state is ReplicaState.STOPPED
        leftover = [
            t.name for t in threading.enumerate()
            if t.ident not in before and t.name.startswith("rmwatch")
        ]  # fmt: skip
        assert leftover == []


class TestWorkerCrash:
    def test_a_crashed_worker_stops_serving_and_says_why(
        self,
        etcd_endpoints: list[str],
        etcd_client: Any,
        root_prefix: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A bug in the apply path (not an etcd failure, which is retried) stops the replica
        from serving: reads raise NotReadyError naming the crash, and the transition to
        FAILED carries the cause."""
        import rmwatch.watcher.sync as sync_mod  # noqa: PLC0415

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("injected apply bug")

        with Replica(endpoints=etcd_endpoints, root_prefix=root_prefix) as replica:
            replica.wait_ready(10)
            monkeypatch.setattr(sync_mod, "apply_changes", broken)
            put_group(etcd_client, KeyLayout(root_prefix), "boom")
            wait_until(
                lambda: replica.transitions()[-1].target is ReplicaState.FAILED,
                10,
                "the crash to be recorded",
            )
            with pytest.raises(NotReadyError) as err:
                replica.get_group("boom")
            assert "injected apply bug" in err.value.reason
            last = replica.transitions()[-1]
            assert last.target is ReplicaState.FAILED
            assert last.cause.startswith("worker crashed: RuntimeError")
