"""The history checker itself: a correct history passes, and each rule catches a hand-built
broken history (and names the rule, with the events around the violation). Plus the truth
recorder against a real etcd."""

from __future__ import annotations

import dataclasses
import time

import pytest
from harness import make_client
from history import (
    UNKNOWN,
    AppliedRecord,
    History,
    HistoryViolation,
    ReadRecord,
    TrueEvent,
    TruthLog,
    TruthWatcher,
    WriteRecord,
    check_history,
)
from history.checker import HistoryIncompleteError, violations

ROOT = "/h/"
P = "/h/resource_group/"
K1, K2 = P + "keyspace/service_limits/1", P + "keyspace/service_limits/2"
LK = "/h/rmwatch/writer/leader"


def good_history() -> History:
    """Leader elected at 2 (epoch 2); put k1@3, put k2@4, delete k1@5, k2@6; replicas agree."""
    truth = TruthLog(1, {}, [
        TrueEvent(2, LK, b'{"name":"w1"}', 2),
        TrueEvent(3, K1, b"10", 3),
        TrueEvent(4, K2, b"20", 4),
        TrueEvent(5, K1, None, 0),
        TrueEvent(6, K2, b"21", 4),
    ])  # fmt: skip
    writes = [
        WriteRecord("set_service_limit", K1, b"10", 3, "w1", 2),
        WriteRecord("set_service_limit", K2, b"20", 4, "w1", 2),
        WriteRecord("delete", K1, None, 5, "w1", 2),
        WriteRecord("modify", K2, UNKNOWN, 6, "w1", 2),
        # unknown outcome, never committed: accepted
        WriteRecord("set_service_limit", K1, b"99", None, "w1", None, "maybe"),
    ]
    reads = [
        ReadRecord("r1", K1, b"10", 3),
        ReadRecord("r1", K2, None, 3),
        ReadRecord("r1", K1, b"10", 4),
        ReadRecord("r1", K2, b"20", 4),
        ReadRecord("r2", K1, None, 5),
        ReadRecord("r2", K2, b"21", 6),
    ]
    applied = [
        AppliedRecord("r1", 3, 1.0), AppliedRecord("r1", 4, 2.0),
        AppliedRecord("r2", 5, 1.5), AppliedRecord("r2", 6, 2.5),
        AppliedRecord("r1", 3, 1.0, "event:watch", K1),
        AppliedRecord("r1", 4, 2.0, "event:watch", K2),
        AppliedRecord("r1", 6, 3.0, "event:rebuild", K2),
    ]  # fmt: skip
    return History(
        truth=truth,
        data_prefix=P,
        leader_key=LK,
        writes=writes,
        reads=reads,
        applied=applied,
        replica_finals={"r1": (4, {K1: (b"10", 3), K2: (b"20", 4)}), "r2": (6, {K2: (b"21", 6)})},
        etcd_final=(6, {LK: (b'{"name":"w1"}', 2), K2: (b"21", 6)}),
        fenced_from=3,
    )


def rule_of(h: History) -> HistoryViolation:
    with pytest.raises(HistoryViolation) as info:
        check_history(h)
    return info.value


def test_good_history_passes() -> None:
    stats = check_history(good_history())
    assert stats.acked_writes == 4
    assert stats.maybe_writes == 1
    assert stats.leader_epochs == 1
    assert all(not v for v in violations(good_history()).values())


class TestDurability:
    def test_acked_write_missing_from_etcd(self) -> None:
        h = good_history()
        h.writes.append(WriteRecord("set_service_limit", K2, b"30", 5, "w1", 2))
        err = rule_of(h)
        assert err.rule == "durability"
        assert "no such put" in str(err)
        assert "history of " + K2 in str(err)  # the minimal history is shown
        assert "leader at 5" in str(err)

    def test_acked_value_differs(self) -> None:
        h = good_history()
        h.writes[1] = dataclasses.replace(h.writes[1], value=b"25")
        err = rule_of(h)
        assert err.rule == "durability"
        assert "b'25'" in str(err)

    def test_acked_beyond_history(self) -> None:
        h = good_history()
        h.writes.append(WriteRecord("set_service_limit", K1, b"1", 60, "w1", 2))
        assert rule_of(h).rule == "durability"

    def test_acked_delete_but_key_still_there(self) -> None:
        h = good_history()
        h.writes.append(WriteRecord("delete", K2, None, 4, "w1", 2))
        assert rule_of(h).rule == "durability"

    def test_acked_write_missing_from_replica_at_later_revision(self) -> None:
        h = good_history()
        # r2 at 6 never got k2@6 (holds the older value): the write is lost on that replica
        h.replica_finals["r2"] = (6, {K2: (b"20", 4)})
        err = rule_of(h)
        assert err.rule == "durability"
        assert "missing from replica r2" in str(err)


class TestReads:
    def test_stale_read(self) -> None:
        h = good_history()
        h.reads.append(ReadRecord("r1", K1, b"10", 5))  # deleted at 5
        err = rule_of(h)
        assert err.rule == "read"
        assert ">>> revision 5" in str(err)

    def test_read_of_a_maybe_write_that_never_committed(self) -> None:
        h = good_history()
        h.reads.append(ReadRecord("r1", K1, b"99", 4))
        assert rule_of(h).rule == "read"

    def test_read_from_the_future(self) -> None:
        h = good_history()
        h.reads.append(ReadRecord("r1", K2, b"21", 40))
        assert rule_of(h).rule == "read"


class TestMonotonic:
    def test_served_revision_goes_back(self) -> None:
        h = good_history()
        h.applied.append(AppliedRecord("r2", 5, 3.0))
        err = rule_of(h)
        assert err.rule == "monotonic"
        assert "went backwards" in str(err)

    def test_watch_event_out_of_order(self) -> None:
        h = good_history()
        h.applied.append(AppliedRecord("r1", 3, 4.0, "event:watch", K1))
        assert rule_of(h).rule == "monotonic"

    def test_rebuild_event_not_past_last_watch_event(self) -> None:
        h = good_history()
        h.applied.append(AppliedRecord("r2", 6, 1.0, "event:watch", K2))
        h.applied.append(AppliedRecord("r2", 4, 2.0, "event:rebuild", K2))
        assert rule_of(h).rule == "monotonic"


class TestFinal:
    def test_replica_cache_has_extra_key(self) -> None:
        h = good_history()
        ghost = P + "settings/ghost"
        h.replica_finals["r2"] = (6, {K2: (b"21", 6), ghost: (b"x", 5)})
        err = rule_of(h)
        assert err.rule == "final"
        assert ghost in str(err)

    def test_acked_delete_still_in_replica_is_a_lost_write(self) -> None:
        h = good_history()
        h.replica_finals["r2"] = (6, {K2: (b"21", 6), K1: (b"10", 3)})
        assert rule_of(h).rule == "durability"

    def test_replica_cache_wrong_mod_revision(self) -> None:
        h = good_history()
        h.writes = [w for w in h.writes if w.key != K2]  # not acked: only "final" can see it
        h.replica_finals["r1"] = (4, {K1: (b"10", 3), K2: (b"20", 3)})
        assert rule_of(h).rule == "final"

    def test_truth_log_missed_an_event(self) -> None:
        h = good_history()
        h.etcd_final = (6, {LK: (b'{"name":"w1"}', 2), K2: (b"21", 6), P + "x": (b"7", 6)})
        assert rule_of(h).rule == "final"


class TestFencing:
    def test_commit_without_a_leader(self) -> None:
        h = good_history()
        h.truth.append(TrueEvent(7, LK, None, 0))  # leader resigned
        h.truth.append(TrueEvent(8, K2, b"22", 4))  # ... and something still wrote
        h.etcd_final = (8, {K2: (b"22", 8)})
        err = rule_of(h)
        assert err.rule == "fencing"
        assert "no writer held the leader key" in str(err)

    def test_commit_by_a_deposed_epoch(self) -> None:
        h = good_history()
        h.truth.append(TrueEvent(7, LK, None, 0))
        h.truth.append(TrueEvent(8, LK, b'{"name":"w2"}', 8))
        h.truth.append(TrueEvent(9, K2, b"23", 4))
        h.writes.append(WriteRecord("set_service_limit", K2, b"23", 9, "w1", 2))
        h.etcd_final = (9, {LK: (b'{"name":"w2"}', 8), K2: (b"23", 9)})
        err = rule_of(h)
        assert err.rule == "fencing"
        assert "epoch 2" in str(err)
        assert "epoch 8" in str(err)


def test_incomplete_truth_is_not_blamed_on_the_product() -> None:
    h = good_history()
    h.truth.complete = False
    h.truth.hole = "compacted"
    with pytest.raises(HistoryIncompleteError):
        check_history(h)


def test_truth_watcher_records_everything_and_compacts_safely(
    etcd_endpoints: list[str], root_prefix: str
) -> None:
    """The oracle against a real etcd: txn events, deletes, sync and a compaction."""
    with make_client(etcd_endpoints) as client:
        client.put(root_prefix + "resource_group/pre", b"0")
        with TruthWatcher(etcd_endpoints, root_prefix) as truth:
            revs = [int(client.put(root_prefix + f"resource_group/k{i}", str(i)).header.revision)
                    for i in range(5)]  # fmt: skip
            client.delete(root_prefix + "resource_group/k1")
            compacted = truth.compact()
            last = int(client.put(root_prefix + "resource_group/k2", b"x").header.revision)
            synced = truth.sync()
            assert synced > last >= compacted
            log = truth.log
            assert log is not None
            assert log.complete
            assert log.value(root_prefix + "resource_group/pre", log.start_revision) == b"0"
            assert log.value(root_prefix + "resource_group/k1", revs[1]) == b"1"
            assert log.value(root_prefix + "resource_group/k1", synced) is None
            assert log.value(root_prefix + "resource_group/k2", last) == b"x"
            rev, items = truth.range_now()
            assert dict(items) == log.fold("", rev)
            time.sleep(0.01)
