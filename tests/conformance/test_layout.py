"""PD's key layout, pinned to PD's source (tikv/pd, commit a186e0cc): where the RM keys sit, where
the cluster id and the keyspace-name index sit, and how their values are encoded.

Each test names the PD file and line it encodes. Paths are relative to the PD repository.
"""

from __future__ import annotations

import struct

import pytest
from harness import EtcdMember, make_client

from rmwatch.errors import DecodeError
from rmwatch.store.keys import (
    CLUSTER_ID_KEY,
    NULL_KEYSPACE_ID,
    KeyLayout,
    decode_cluster_id,
    encode_cluster_id,
    keyspace_index_prefix,
)
from rmwatch.store.keyspaces import (
    KeyspaceResolver,
    cluster_id_at_start,
    init_cluster_id,
    keyspace_not_found,
    read_cluster_id,
)

CLUSTER = 7_000_000_000_000_000_001


class TestRmKeysAtTheEtcdRoot:
    """PD keeps ``resource_group/...`` relative to nothing: its etcd KV base has no root path."""

    def test_default_layout_has_no_prefix(self) -> None:
        """pkg/storage/kv/etcd_kv.go:51 ``NewEtcdKVBase(client)`` keeps no root path, and
        pkg/storage/storage.go:61 builds PD's storage on it: the RM paths of
        pkg/utils/keypath/absolute_key_path.go:120-131 are used as they are, at the root."""
        layout = KeyLayout()
        assert layout.prefix == "resource_group/"
        assert layout.controller() == "resource_group/controller"  # absolute_key_path.go:131
        assert layout.settings("rg") == "resource_group/settings/rg"  # :129
        assert layout.states("rg") == "resource_group/states/rg"  # :130
        assert layout.settings("rg", 7) == "resource_group/keyspace/settings/7/rg"  # :121
        assert layout.states("rg", 7) == "resource_group/keyspace/states/7/rg"  # :123
        assert layout.service_limit(7) == "resource_group/keyspace/service_limits/7"  # :126

    def test_null_keyspace_uses_legacy_group_keys_but_not_for_service_limits(self) -> None:
        """pkg/utils/keypath/resource_group.go:56-69 map the null keyspace to the legacy
        settings/states paths; :82-84 format the service-limit path with no such case."""
        layout = KeyLayout()
        assert layout.settings("rg", NULL_KEYSPACE_ID) == "resource_group/settings/rg"
        assert layout.states("rg", NULL_KEYSPACE_ID) == "resource_group/states/rg"
        assert layout.service_limit() == "resource_group/keyspace/service_limits/4294967295"

    def test_rm_root_prefix_moves_only_rm_keys(self) -> None:
        """Our optional RM root prefix (for test clusters sharing one etcd) never touches PD's
        absolute keys (absolute_key_path.go:37 and :97 start with ``/pd/``)."""
        layout = KeyLayout("/t/abc", cluster_id=CLUSTER)
        assert layout.settings("rg") == "/t/abc/resource_group/settings/rg"
        assert layout.keyspace_index("ks1") == f"/pd/{CLUSTER}/keyspaces/id/ks1"
        assert CLUSTER_ID_KEY == "/pd/cluster_id"


class TestClusterId:
    """``/pd/cluster_id``: 8 bytes, big-endian uint64, 0 meaning "not set"."""

    def test_key(self) -> None:
        """pkg/utils/keypath/absolute_key_path.go:37 ``ClusterIDPath = "/pd/cluster_id"``."""
        assert CLUSTER_ID_KEY == "/pd/cluster_id"

    def test_value_is_eight_bytes_big_endian(self) -> None:
        """pkg/utils/typeutil/conversion.go:24-37 (``BytesToUint64`` / ``Uint64ToBytes``:
        exactly 8 bytes, ``binary.BigEndian``), read at pkg/storage/endpoint/cluster_id.go:73."""
        assert encode_cluster_id(CLUSTER) == struct.pack(">Q", CLUSTER)
        assert decode_cluster_id(struct.pack(">Q", CLUSTER)) == CLUSTER
        assert decode_cluster_id(b"\xff" * 8) == 2**64 - 1
        for bad in (b"", b"\x01" * 7, b"\x01" * 9, str(CLUSTER).encode()):
            with pytest.raises(DecodeError) as info:
                decode_cluster_id(bad)
            assert info.value.key == CLUSTER_ID_KEY

    def test_zero_is_not_a_cluster_id(self) -> None:
        """pkg/storage/endpoint/cluster_id.go:44 and :61 treat 0 as "no cluster id yet"."""
        with pytest.raises(DecodeError):
            decode_cluster_id(bytes(8))
        with pytest.raises(ValueError, match="not in"):
            KeyLayout(cluster_id=0)
        with pytest.raises(ValueError, match="not in"):
            encode_cluster_id(2**64)

    def test_read_absent_then_created_as_pd_creates_it(self, etcd_member: EtcdMember) -> None:
        """pkg/storage/endpoint/cluster_id.go:88-102: a random id of (unix seconds << 32) +
        32 random bits, put only while the key's create revision is 0; :112-122: a second
        starter reads the id the first one committed."""
        with make_client([etcd_member.endpoint]) as client:
            assert read_cluster_id(client) is None
            first = init_cluster_id(client)
            assert 0 < first >> 32 <= 2**32  # seconds since the epoch in the high half
            value, _meta = client.get(CLUSTER_ID_KEY)
            assert bytes(value) == struct.pack(">Q", first)
            assert init_cluster_id(client) == first
            assert read_cluster_id(client) == first

    def test_configured_id_wins_and_a_malformed_key_fails_without_one(
        self, etcd_member: EtcdMember
    ) -> None:
        """``--cluster-id`` wins over ``/pd/cluster_id``; without it a value PD would refuse
        (conversion.go:25-26, not 8 bytes) is an error naming the key, not a silent guess."""
        with make_client([etcd_member.endpoint]) as client:
            assert cluster_id_at_start(client, None) is None
            assert cluster_id_at_start(client, CLUSTER) == CLUSTER
            client.put(CLUSTER_ID_KEY, struct.pack(">Q", 42))
            assert cluster_id_at_start(client, None) == 42
            assert cluster_id_at_start(client, CLUSTER) == CLUSTER
            client.put(CLUSTER_ID_KEY, b"42")
            with pytest.raises(DecodeError, match="/pd/cluster_id"):
                cluster_id_at_start(client, None)
            assert cluster_id_at_start(client, CLUSTER) == CLUSTER


class TestKeyspaceIndex:
    """``/pd/{cluster_id}/keyspaces/id/{name}`` → the keyspace id as decimal text."""

    def test_key(self) -> None:
        """pkg/utils/keypath/absolute_key_path.go:97 ``"/pd/%d/keyspaces/id/%s"`` and :230-231
        (formatted with the cluster id)."""
        assert keyspace_index_prefix(CLUSTER) == f"/pd/{CLUSTER}/keyspaces/id/"
        assert KeyLayout(cluster_id=CLUSTER).keyspace_index("ks1") == (
            f"/pd/{CLUSTER}/keyspaces/id/ks1"
        )
        with pytest.raises(ValueError, match="cluster id"):
            KeyLayout().keyspace_index("ks1")

    def test_resolves_decimal_ids_and_names_created_later(self, etcd_member: EtcdMember) -> None:
        """pkg/storage/endpoint/keyspace.go:82-85 stores ``strconv.FormatUint(id, 10)``,
        :102-113 reads it back; a keyspace created after the resolver started resolves at
        once, and a cluster id written after start is found at the next lookup."""
        with make_client([etcd_member.endpoint]) as client:
            resolver = KeyspaceResolver(client, KeyLayout())
            assert resolver("ks1") is None  # no cluster id anywhere: no index at all
            with pytest.raises(LookupError, match="no PD cluster id"):
                resolver.resolve("ks1")
            cluster_id = init_cluster_id(client)
            assert resolver("ks1") is None  # the index exists now, without ks1
            assert resolver.cluster_id == cluster_id
            client.put(f"/pd/{cluster_id}/keyspaces/id/ks1", b"1")
            assert resolver("ks1") == 1
            assert resolver.resolve("ks1") == 1

    def test_unknown_name_is_pds_not_found_error(self, etcd_member: EtcdMember) -> None:
        """pkg/errs/errno.go:537 ``ErrKeyspaceNotExistsByName``: "keyspace not found with
        name: %s" with RFC code ``PD:resourcemanager:ErrKeyspaceNotExistsByName`` (HTTP 404)."""
        with make_client([etcd_member.endpoint]) as client:
            resolver = KeyspaceResolver(client, KeyLayout(cluster_id=CLUSTER))
            with pytest.raises(LookupError) as info:
                resolver.resolve("ghost")
        expected = keyspace_not_found("ghost")
        assert (
            str(info.value)
            == str(expected)
            == (
                "[PD:resourcemanager:ErrKeyspaceNotExistsByName]keyspace not found with name: ghost"
            )
        )
        assert getattr(info.value, "status", None) == 404

    def test_configured_cluster_id_is_used_without_reading_etcd(self) -> None:
        """With ``--cluster-id`` the resolver reads only the index key, never
        ``/pd/cluster_id``."""
        client = _RecordingClient()
        resolver = KeyspaceResolver(client, KeyLayout(cluster_id=CLUSTER))  # type: ignore[arg-type]
        assert resolver("ks1") is None
        assert client.keys == [f"/pd/{CLUSTER}/keyspaces/id/ks1"]


class _RecordingClient:
    """Answers every get with "absent" and records the keys asked for."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def get(self, key: str) -> tuple[None, None]:
        self.keys.append(key)
        return None, None
