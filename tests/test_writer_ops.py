"""Writer operations against a real etcd: roles, groups, modify semantics, controller, limits."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import ClassVar

import pytest
from writer_support import WriterNode, node, nodes, raw_get

from rmwatch.errors import (
    ConflictError,
    DecodeError,
    InvalidInputError,
    NotFoundError,
    ReservedGroupError,
    WriteRefusedError,
)
from rmwatch.store import codec
from rmwatch.store.keys import NULL_KEYSPACE_ID
from rmwatch.store.models import (
    GroupRequestUnitSettings,
    GroupStates,
    ResourceGroup,
    TokenBucket,
    TokenLimitSettings,
    TokenState,
)
from rmwatch.store.roles import WriteRole

__all__ = ["node"]  # the fixture, re-exported so pytest finds it here


def ru_group(name: str, fill: int = 100, burst: int = 200, **kw: object) -> ResourceGroup:
    """An RU-mode group with the given fill rate and burst limit."""
    return ResourceGroup(
        name=name,
        r_u_settings=GroupRequestUnitSettings(
            r_u=TokenBucket(settings=TokenLimitSettings(fill_rate=fill, burst_limit=burst))
        ),
        priority=8,
        **kw,
    )


STATES_123 = GroupStates(
    r_u=TokenState(tokens=123.0, last_update="2024-05-01T10:00:00.123456789Z", initialized=True)
)


class TestRoles:
    """Every role x operation, asserted on etcd's contents."""

    OPS = ("add", "modify", "delete", "controller", "service_limit", "put_states",
           "delete_states")  # fmt: skip
    METADATA: ClassVar[set[str]] = {"add", "modify", "delete", "controller", "service_limit"}
    ALLOWED: ClassVar[dict[WriteRole, set[str]]] = {
        WriteRole.LEGACY_ALL: set(OPS),
        WriteRole.PD_META_ONLY: METADATA,
        WriteRole.RM_TOKEN_ONLY: set(OPS) - METADATA,
    }

    @pytest.mark.parametrize("role", list(WriteRole))
    @pytest.mark.parametrize("op", OPS)
    def test_gate(
        self, etcd_endpoints: list[str], root_prefix: str, role: WriteRole, op: str
    ) -> None:
        """An allowed op changes exactly its keys; a refused one raises 403 and changes nothing."""
        with nodes(
            WriterNode(etcd_endpoints, root_prefix, name="seed").start(),
        ) as (seed,):
            seed.writer.add_group(ru_group("g1"))
            seed.writer.put_states("g1", STATES_123)
            seed.leadership.resign()  # type: ignore[union-attr]
            layout = seed.layout
            keys = [layout.settings("g1"), layout.states("g1"), layout.controller(),
                    layout.service_limit(7), layout.settings("g2")]  # fmt: skip
            before = {k: raw_get(seed.client, k) for k in keys}
            with nodes(WriterNode(etcd_endpoints, root_prefix, name="x", role=role).start()) as (
                n,
            ):
                w = n.writer
                run: Callable[[], int] = {
                    "add": lambda: w.add_group(ru_group("g2")),
                    "modify": lambda: w.modify_group(ru_group("g1", fill=5)),
                    "delete": lambda: w.delete_group("g1"),
                    "controller": lambda: w.update_controller({"read-base-cost": 2}),
                    "service_limit": lambda: w.set_service_limit(7, 10),
                    "put_states": lambda: w.put_states("g1", GroupStates()),
                    "delete_states": lambda: w.delete_states("g1"),
                }[op]
                if op in self.ALLOWED[role]:
                    run()
                    after = {k: raw_get(seed.client, k) for k in keys}
                    assert after != before
                else:
                    with pytest.raises(WriteRefusedError) as info:
                        run()
                    assert info.value.status == 403
                    if op in self.METADATA:
                        assert str(info.value) == "metadata write is disabled"
                    assert {k: raw_get(seed.client, k) for k in keys} == before


class TestGroups:
    """Add, get, list and delete of groups, keyspace-aware."""

    def test_add_and_get(self, node: WriterNode) -> None:
        """An added group reads back equal, at the legacy key for the null keyspace."""
        rev = node.writer.add_group(ru_group("g1"))
        value, mod = raw_get(node.client, node.layout.settings("g1"))
        assert mod == rev
        assert value is not None
        assert codec.decode_settings("k", value) == ru_group("g1")
        view = node.writer.get_group("g1")
        assert view.group == ru_group("g1")
        assert view.mod_revision == rev
        assert view.states is None

    def test_add_existing_upserts(self, node: WriterNode) -> None:
        """Adding a group twice stores the second value, as PD's addResourceGroup persists
        whatever is stored (pkg/mcs/resourcemanager/server/keyspace_manager.go:252)."""
        first = node.writer.add_group(ru_group("g1"))
        second = node.writer.add_group(ru_group("g1", fill=9))
        assert second > first
        assert node.writer.get_group("g1").group == ru_group("g1", fill=9)

    def test_keyspace_keys(self, node: WriterNode) -> None:
        """Keyspace 0 uses keyspace keys; the null keyspace the legacy ones."""
        node.writer.add_group(ru_group("g1", keyspace_id=0))
        node.writer.add_group(ru_group("g1"))
        assert raw_get(node.client, node.layout.settings("g1", 0))[0] is not None
        assert raw_get(node.client, node.layout.settings("g1", NULL_KEYSPACE_ID))[0] is not None
        assert node.writer.get_group("g1", 0).group.keyspace_id == 0
        assert node.writer.get_group("g1").group.keyspace_id is None

    def test_list(self, node: WriterNode) -> None:
        """List returns one keyspace's groups with states, plus the reserved default."""
        node.writer.add_group(ru_group("b", keyspace_id=1))
        node.writer.add_group(ru_group("a", keyspace_id=1))
        node.writer.add_group(ru_group("x", keyspace_id=12))
        node.writer.put_states("a", STATES_123, 1)
        views, _ = node.writer.list_groups(1)
        assert [v.group.name for v in views] == ["a", "b", "default"]
        assert views[0].states == STATES_123

    def test_get_missing(self, node: WriterNode) -> None:
        """A missing group is NotFoundError; default is synthesized when never stored."""
        with pytest.raises(NotFoundError):
            node.writer.get_group("nope")
        assert node.writer.get_group("default").group.priority == 8

    def test_delete(self, node: WriterNode) -> None:
        """Delete removes settings and states in one revision."""
        node.writer.add_group(ru_group("g1"))
        node.writer.put_states("g1", STATES_123)
        rev = node.writer.delete_group("g1")
        assert raw_get(node.client, node.layout.settings("g1"))[0] is None
        assert raw_get(node.client, node.layout.states("g1"))[0] is None
        assert rev > 0
        with pytest.raises(NotFoundError):
            node.writer.delete_group("g1")

    def test_delete_default_refused(self, node: WriterNode) -> None:
        """The reserved default group cannot be deleted."""
        with pytest.raises(ReservedGroupError):
            node.writer.delete_group("default")

    def test_resolve_keyspace(self, node: WriterNode) -> None:
        """A keyspace name resolves through PD's index key, as the sidecar resolves it; an
        unknown name is NotFoundError, an index that holds no id is DecodeError."""
        node.client.put(node.layout.keyspace_index("ks7"), b"7")
        node.client.put(node.layout.keyspace_index("bad"), b"seven")
        assert node.writer.resolve_keyspace("ks7") == 7
        with pytest.raises(NotFoundError):
            node.writer.resolve_keyspace("nope")
        with pytest.raises(DecodeError):
            node.writer.resolve_keyspace("bad")


class TestModify:
    """Modify applies settings only, keeps unknown fields and detects races."""

    def test_tokens_unchanged(self, node: WriterNode) -> None:
        """Modify fill 500 / burst 800 on a group with 123 tokens leaves the states bytes."""
        node.writer.add_group(ru_group("g1"))
        node.writer.put_states("g1", STATES_123)
        before = raw_get(node.client, node.layout.states("g1"))
        node.writer.modify_group(ru_group("g1", fill=500, burst=800))
        assert raw_get(node.client, node.layout.states("g1")) == before
        got = node.writer.get_group("g1").group
        assert got.r_u_settings is not None
        assert got.r_u_settings.r_u is not None
        assert got.r_u_settings.r_u.settings == TokenLimitSettings(fill_rate=500, burst_limit=800)

    def test_legacy_tokens_in_settings_kept(self, node: WriterNode) -> None:
        """The legacy ``tokens`` inside settings gets no delta from a modify."""
        group = ru_group("g1").model_copy(
            update={
                "r_u_settings": GroupRequestUnitSettings(
                    r_u=TokenBucket(settings=TokenLimitSettings(fill_rate=1), tokens=77.0)
                )
            }
        )
        node.writer.add_group(group)
        node.writer.modify_group(ru_group("g1", fill=500))
        got = node.writer.get_group("g1").group
        assert got.r_u_settings.r_u.tokens == 77.0  # type: ignore[union-attr]

    def test_unknown_field_survives(self, node: WriterNode) -> None:
        """An unknown protobuf field (number 99) written by a newer PD survives a modify."""
        unknown = b"\x98\x06\x2a"  # field 99, varint 42
        key = node.layout.settings("g1")
        node.client.put(key, codec.encode_settings(ru_group("g1")) + unknown)
        node.writer.modify_group(ru_group("g1", fill=500))
        value, _ = raw_get(node.client, key)
        assert value is not None
        assert unknown in value
        assert codec.decode_settings(key, value).r_u_settings.r_u.settings.fill_rate == 500  # type: ignore[union-attr]

    def test_missing_is_404(self, node: WriterNode) -> None:
        """Modify of a missing group is NotFoundError and writes nothing."""
        with pytest.raises(NotFoundError):
            node.writer.modify_group(ru_group("ghost"))
        assert raw_get(node.client, node.layout.settings("ghost"))[0] is None

    def test_mode_change_refused(self, node: WriterNode) -> None:
        """Changing the mode is refused, naming the field."""
        node.writer.add_group(ru_group("g1"))
        with pytest.raises(InvalidInputError, match="mode"):
            node.writer.modify_group(ResourceGroup(name="g1", mode=0))

    def test_concurrent_cas_one_wins(self, node: WriterNode) -> None:
        """Eight modifies with the same expected_revision: exactly one wins, seven get 409."""
        rev = node.writer.add_group(ru_group("g1"))
        results: list[object] = []
        barrier = threading.Barrier(8)

        def attempt(i: int) -> None:
            barrier.wait()
            try:
                results.append(
                    node.writer.modify_group(ru_group("g1", fill=1000 + i), expected_revision=rev)
                )
            except ConflictError as exc:
                results.append(exc)

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wins = [r for r in results if isinstance(r, int)]
        conflicts = [r for r in results if isinstance(r, ConflictError)]
        assert len(wins) == 1
        assert len(conflicts) == 7
        assert all(c.current_revision >= wins[0] or c.current_revision == rev for c in conflicts)
        assert raw_get(node.client, node.layout.settings("g1"))[1] == wins[0]

    def test_concurrent_plain_modifies_all_apply(self, node: WriterNode) -> None:
        """Plain modifies racing each other re-read and succeed (3 writers, 3 attempts each)."""
        node.writer.add_group(ru_group("g1"))
        revs: list[int] = []
        threads = [
            threading.Thread(target=lambda i=i: revs.append(
                node.writer.modify_group(ru_group("g1", fill=10 + i))))
            for i in range(3)
        ]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(revs)) == 3


class TestControllerAndLimits:
    """Controller updates are all or nothing; service limits refuse negatives."""

    def test_controller_update(self, node: WriterNode) -> None:
        """A child key of request-unit updates; unknown stored keys survive."""
        key = node.layout.controller()
        node.client.put(key, b'{"ltb-max-wait-duration":"30s","push-metrics-address":"x:1"}')
        node.writer.update_controller({"read-base-cost": 0.5, "ltb-max-wait-duration": "1m0s"})
        cfg = node.writer.get_controller()
        assert cfg.request_unit.read_base_cost == 0.5
        assert cfg.ltb_max_wait_duration == "1m0s"
        assert cfg.to_json_dict()["push-metrics-address"] == "x:1"

    def test_controller_unknown_key_writes_nothing(self, node: WriterNode) -> None:
        """One unknown key fails the whole update and names the key."""
        with pytest.raises(InvalidInputError, match="no-such-key"):
            node.writer.update_controller({"read-base-cost": 0.5, "no-such-key": 1})
        assert raw_get(node.client, node.layout.controller())[0] is None

    def test_service_limit(self, node: WriterNode) -> None:
        """A service limit is a bare JSON number; negative is refused."""
        rev = node.writer.set_service_limit(None, 100)
        assert raw_get(node.client, node.layout.service_limit(NULL_KEYSPACE_ID)) == (b"100", rev)
        assert node.writer.get_service_limit(None).service_limit == 100
        with pytest.raises(InvalidInputError, match="service_limit"):
            node.writer.set_service_limit(3, -1)
        with pytest.raises(NotFoundError):
            node.writer.get_service_limit(3)
