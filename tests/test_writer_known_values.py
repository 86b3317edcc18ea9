"""A read-modify-write planned from what the writer last committed (``KnownValues``): one txn
instead of a read and a txn, and never a lost or wrong write when the key moved behind its back
(another process's write, a delete, a caller's expected revision). Against a real etcd."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
from harness import make_client
from test_writer_ops import STATES_123 as STATES
from test_writer_ops import ru_group
from writer_support import raw_get

from rmwatch.errors import ConflictError, NotFoundError
from rmwatch.store import EtcdClient, KeyLayout, Writer, codec
from rmwatch.store.known_values import KnownValues

UNKNOWN_FIELD = b"\x98\x06\x2a"  # protobuf field 99, varint 42: what a newer PD might add


class _CountingTxn:
    """A real client that counts its Txn RPCs (the writer's reads and commits are all txns)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.txns = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @property
    def kvstub(self) -> Any:
        real, outer = self._inner.kvstub, self

        class Stub:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def Txn(self, request: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N802
                outer.txns += 1
                return real.Txn(request, *args, **kwargs)

        return Stub()


@pytest.fixture
def rig(etcd_endpoints: list[str], root_prefix: str) -> Iterator[tuple[Writer, _CountingTxn]]:
    """An unfenced writer over a Txn-counting client, and that client."""
    counting = _CountingTxn(make_client(etcd_endpoints))
    writer = Writer(client=cast(EtcdClient, counting), layout=KeyLayout(root_prefix))
    yield writer, counting
    counting.close()


def _fill(writer: Writer, name: str) -> int:
    rus = writer.get_group(name).group.r_u_settings
    assert rus is not None
    assert rus.r_u is not None
    assert rus.r_u.settings is not None
    return rus.r_u.settings.fill_rate


class TestOneTxn:
    def test_a_modify_after_a_commit_skips_the_read(self, rig: tuple[Writer, _CountingTxn]) -> None:
        """The first modify of a key the writer never saw reads it (2 txns); after a commit of
        its own it plans from the committed value (1 txn), the controller's update too."""
        writer, counting = rig
        layout = writer.layout
        counting.put(layout.settings("g1"), codec.encode_settings(ru_group("g1")))
        counting.txns = 0
        writer.modify_group(ru_group("g1", fill=300))
        assert counting.txns == 2
        counting.txns = 0
        writer.modify_group(ru_group("g1", fill=400))
        writer.modify_group(ru_group("g1", fill=500))
        assert counting.txns == 2
        assert _fill(writer, "g1") == 500
        writer.update_controller({"read-base-cost": 0.5})
        counting.txns = 0
        writer.update_controller({"read-base-cost": 0.75})
        assert counting.txns == 1
        assert writer.get_controller().request_unit.read_base_cost == 0.75


class TestMovedBehindItsBack:
    def test_another_writers_value_is_patched_not_the_remembered_one(
        self, rig: tuple[Writer, _CountingTxn]
    ) -> None:
        """A value another process wrote since (with an unknown field) is what the modify
        patches: the compare fails once, the failure branch brings the value, and the second
        plan needs no read (two txns in all). Nothing of the other write is lost."""
        writer, counting = rig
        key = writer.layout.settings("g1")
        writer.add_group(ru_group("g1"))
        theirs = codec.encode_settings(ru_group("g1", fill=900)) + UNKNOWN_FIELD
        counting.put(key, theirs)
        _, their_revision = raw_get(counting, key)
        counting.txns = 0
        revision = writer.modify_group(ru_group("g1", fill=500))
        assert counting.txns == 2  # the lost compare, then the commit planned from its answer
        value, stored_at = raw_get(counting, key)
        assert stored_at == revision > their_revision
        assert value is not None
        assert UNKNOWN_FIELD in value
        assert _fill(writer, "g1") == 500

    def test_a_group_deleted_since_is_not_found(self, rig: tuple[Writer, _CountingTxn]) -> None:
        """Deleted by someone else since the writer's commit: NotFoundError, nothing written."""
        writer, counting = rig
        key = writer.layout.settings("g1")
        writer.add_group(ru_group("g1"))
        counting.delete(key)
        with pytest.raises(NotFoundError):
            writer.modify_group(ru_group("g1", fill=500))
        assert raw_get(counting, key) == (None, 0)

    def test_default_deleted_since_is_stored_again(self, rig: tuple[Writer, _CountingTxn]) -> None:
        """``default`` exists unstored: deleted since, a modify stores it again rather than
        answering not found, as PD does: its cache always holds the reserved group and a modify
        persists it (PD: pkg/mcs/resourcemanager/server/keyspace_manager.go:209-221, 274-291,
        HEAD a186e0c)."""
        writer, counting = rig
        key = writer.layout.settings("default")
        writer.modify_group(ru_group("default", fill=11))
        counting.delete(key)
        revision = writer.modify_group(ru_group("default", fill=22))
        assert raw_get(counting, key)[1] == revision
        assert _fill(writer, "default") == 22

    def test_expected_revision_is_checked_against_etcd(
        self, rig: tuple[Writer, _CountingTxn]
    ) -> None:
        """A caller who saw another process's revision succeeds: the remembered one differs,
        so the writer reads (two txns). A caller holding the remembered revision after the key
        moved gets a conflict naming the revision it expected and the current one."""
        writer, counting = rig
        key = writer.layout.settings("g1")
        writer.add_group(ru_group("g1"))
        counting.put(key, codec.encode_settings(ru_group("g1", fill=900)))
        _, theirs = raw_get(counting, key)
        counting.txns = 0
        ours = writer.modify_group(ru_group("g1", fill=2), expected_revision=theirs)
        assert counting.txns == 2
        assert raw_get(counting, key)[1] == ours
        assert _fill(writer, "g1") == 2
        counting.put(key, codec.encode_settings(ru_group("g1", fill=901)))
        _, moved = raw_get(counting, key)
        with pytest.raises(ConflictError, match=f"revision {moved}, expected {ours}") as info:
            writer.modify_group(ru_group("g1", fill=3), expected_revision=ours)
        assert info.value.current_revision == moved
        assert raw_get(counting, key)[1] == moved

    def test_default_deleted_since_with_expected_revision_is_a_conflict(
        self, rig: tuple[Writer, _CountingTxn]
    ) -> None:
        """``default`` stored by the writer, deleted since, modified with the revision the
        writer stored it at: a conflict at revision 0 (``default`` still exists, unstored), as
        a read-first modify answers, not not-found."""
        writer, counting = rig
        ours = writer.modify_group(ru_group("default", fill=11))
        counting.delete(writer.layout.settings("default"))
        with pytest.raises(ConflictError) as info:
            writer.modify_group(ru_group("default", fill=22), expected_revision=ours)
        assert info.value.current_revision == 0

    def test_a_stale_value_does_not_use_up_the_attempts(
        self, etcd_endpoints: list[str], root_prefix: str
    ) -> None:
        """With one attempt allowed, a modify planned from a value that moved still succeeds:
        the replan from the failure branch's value is not counted as a lost race."""
        client = make_client(etcd_endpoints)
        writer = Writer(client=client, layout=KeyLayout(root_prefix), modify_attempts=1)
        key = writer.layout.settings("g1")
        writer.add_group(ru_group("g1"))
        client.put(key, codec.encode_settings(ru_group("g1", fill=900)) + UNKNOWN_FIELD)
        revision = writer.modify_group(ru_group("g1", fill=5))
        value, stored_at = raw_get(client, key)
        assert stored_at == revision
        assert value is not None
        assert UNKNOWN_FIELD in value
        client.close()

    def test_controller_keys_written_elsewhere_survive(
        self, rig: tuple[Writer, _CountingTxn]
    ) -> None:
        """The controller config another process rewrote (a key this version does not know
        included) is the one updated."""
        writer, counting = rig
        writer.update_controller({"read-base-cost": 0.5})
        counting.put(writer.layout.controller(), b'{"push-metrics-address":"x:1"}')
        writer.update_controller({"read-base-cost": 0.25})
        config = writer.get_controller()
        assert config.request_unit.read_base_cost == 0.25
        assert config.to_json_dict()["push-metrics-address"] == "x:1"


class TestKnownValues:
    def test_bounded_least_recently_used_first(self) -> None:
        """Past its capacity the least recently used key goes; a read counts as a use."""
        known = KnownValues(capacity=2)
        known.put("a", b"1", 1)
        known.put("b", b"2", 2)
        assert known.get("a") == (b"1", 1)
        known.put("c", b"3", 3)
        assert known.get("b") is None
        assert known.get("a") == (b"1", 1)
        assert len(known) == 2
        known.forget("a")
        assert known.get("a") is None

    def test_an_older_revision_never_replaces_a_newer(self) -> None:
        """Two threads committing one key may report out of order: the newer stays."""
        known = KnownValues()
        known.put("k", b"new", 9)
        known.put("k", b"old", 7)
        assert known.get("k") == (b"new", 9)

    def test_only_keys_that_are_read_modify_written_are_kept(
        self, rig: tuple[Writer, _CountingTxn]
    ) -> None:
        """Service limits and token states (never read-modify-written) take no room; a group's
        settings and the controller do."""
        writer, _ = rig
        writer.set_service_limit(1, 5.0)
        writer.put_states("g1", STATES)
        assert len(writer._known) == 0
        writer.add_group(ru_group("g1"))
        writer.update_controller({"read-base-cost": 0.5})
        assert len(writer._known) == 2
        writer.delete_group("g1")
        assert len(writer._known) == 1
