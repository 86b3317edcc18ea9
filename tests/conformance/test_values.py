"""Conformance of stored values and keys with PD: golden protobuf bytes, RawMode, the
``KeyspaceIDValue`` oneof, keyspace ids in keys, PD's load order, the reserved ``default``.

Each test cites the PD (tikv/pd, HEAD a186e0c) or kvproto (pingcap/kvproto, HEAD b6cdca1)
file and line whose behaviour it pins.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sidecar_support import API, layout, replica, sidecar, wait_listed_bad
from writer_support import raw_get

from rmwatch.errors import DecodeError, InvalidKeyError
from rmwatch.store.codec import decode_settings, decode_value, encode_settings
from rmwatch.store.keys import NULL_KEYSPACE_ID, KeyKind, KeyLayout, ParsedKey
from rmwatch.store.models import (
    KEYSPACE_ID_NOT_LEGACY,
    Consumption,
    GroupMode,
    KeyspaceIdentity,
    ResourceGroup,
    ServiceLimit,
    default_group,
)
from rmwatch.watcher.cache import RawChange, apply_changes, build_snapshot
from rmwatch.watcher.replica import Replica

from .support import f_double, f_len, f_str, f_varint, ru_settings, writer_http

__all__ = ["layout", "replica", "sidecar"]  # fixtures, re-exported so pytest finds them here

LAYOUT = KeyLayout()
NULL = NULL_KEYSPACE_ID

# PD's reserved default group as its writer stores it under the legacy key: name, RUMode, the
# unlimited bucket, priority 8, an empty RUStats and keyspace_id {value: 4294967295}.
# PD: pkg/mcs/resourcemanager/server/keyspace_manager.go:229-242 (newDefaultResourceGroup),
# resource_group.go:310-331 (IntoProtoResourceGroup: RUStats copied even when empty, the
# keyspace always set as a value).
PD_WRITTEN_DEFAULT = (
    f_str(1, "default")
    + f_varint(2, 1)
    + ru_settings(2147483647, -1)
    + f_varint(5, 8)
    + f_len(8, b"")
    + f_len(9, f_varint(1, 4294967295))
)


def _raw_mode_bytes(name: str) -> bytes:
    return f_str(1, name) + f_varint(2, 2) + f_varint(5, 8)


class TestRawMode:
    """PD panics loading a RawMode group, so none is stored and a stored one is bad data.

    PD: pkg/mcs/resourcemanager/server/resource_group.go:266-267 (``panic("no implementation")``)
    """

    def test_model_refuses_raw_mode(self) -> None:
        """A RawMode group fails validation with PD's panic text "no implementation"."""
        with pytest.raises(ValidationError, match="no implementation"):
            ResourceGroup(name="raw", mode=GroupMode.RAW_MODE)

    def test_stored_raw_mode_is_a_decode_error(self) -> None:
        """A stored RawMode value decodes to a DecodeError naming its key, not a group."""
        key = LAYOUT.settings("raw")
        with pytest.raises(DecodeError, match="no implementation") as info:
            decode_value(key, LAYOUT.parse(key), _raw_mode_bytes("raw"))
        assert info.value.key == key

    def test_writer_refuses_raw_mode_and_stores_nothing(
        self, etcd_endpoints: list[str], root_prefix: str
    ) -> None:
        """POST and PUT of a RawMode group answer 400 with PD's text; nothing is written."""
        with writer_http(etcd_endpoints, root_prefix) as (node, http):
            body = {"name": "raw", "mode": 2, "priority": 8}
            for method in ("POST", "PUT"):
                response = http.request(method, "/config/group", json=body)
                assert response.status_code == 400, response.text
                assert "no implementation" in response.text
            assert raw_get(node.client, node.layout.settings("raw"))[0] is None

    def test_replica_contains_a_stored_raw_mode_group(
        self, sidecar: httpx.Client, replica: Replica, etcd_client: Any, layout: KeyLayout
    ) -> None:
        """A RawMode value in etcd is not served (404), is listed on /status, and its
        neighbours still serve."""
        key = layout.settings("raw")
        bad_rev = int(etcd_client.put(key, _raw_mode_bytes("raw")).header.revision)
        good = ResourceGroup(name="ok", priority=3)
        rev = int(etcd_client.put(layout.settings("ok"), encode_settings(good)).header.revision)
        replica.wait_for_revision(rev, 5)
        assert sidecar.get(f"{API}/config/group/raw").status_code == 404
        assert sidecar.get(f"{API}/config/group/ok").json()["priority"] == 3
        names = [g["name"] for g in sidecar.get(f"{API}/config/groups").json()]
        assert names == ["default", "ok"]
        wait_listed_bad(sidecar, [(key, bad_rev)], "the RawMode key on /status")


class TestKeyspaceIdOneof:
    """``KeyspaceIDValue`` is a oneof: ``value`` (0 included) or a V3 ``keyspace_identity``.

    kvproto: proto/resource_manager.proto:32-40
    """

    def test_keyspace_zero_keeps_its_oneof_case(self) -> None:
        """Keyspace 0 is written with its case set, ``4a 02 08 00``, not an empty ``4a 00``."""
        encoded = encode_settings(ResourceGroup(name="g", keyspace_id=0))
        assert encoded.endswith(bytes.fromhex("4a020800"))
        assert decode_settings("k", encoded).keyspace_id == 0

    def test_null_keyspace_has_no_field_9(self) -> None:
        """A group of the null keyspace (None) is written without field 9, as legacy groups."""
        assert encode_settings(ResourceGroup(name="g")) == f_str(1, "g") + f_varint(2, 1)

    @pytest.mark.parametrize(
        ("key", "expected"),
        [
            ("resource_group/keyspace/settings/42/v3", 42),
            ("resource_group/keyspace/settings/7/v3", 7),
            ("resource_group/settings/v3", None),
        ],
    )
    def test_keyspace_identity_value_decodes_with_the_keys_keyspace(
        self, key: str, expected: int | None
    ) -> None:
        """A stored V3 ``keyspace_identity`` decodes; its keyspace is the key's, as PD takes
        a stored group's keyspace from its key path (even when the identity says 42).

        PD: pkg/storage/endpoint/resource_group.go:58-73
        """
        identity = f_len(2, f_varint(1, 1) + f_varint(2, 42))
        data = f_str(1, "v3") + f_varint(2, 1) + f_varint(5, 8) + f_len(9, identity)
        group = decode_value(key, LAYOUT.parse(key), data)
        assert isinstance(group, ResourceGroup)
        assert group.keyspace_id == expected
        assert group.keyspace_identity == KeyspaceIdentity(namespace_id=1, keyspace_id=42)
        assert group.wire == data

    def test_keyspace_identity_is_rewritten_as_a_value(self) -> None:
        """Re-encoding a V3 group writes its keyspace as ``value``, as PD persists every group.

        PD: pkg/mcs/resourcemanager/server/resource_group.go:325
        """
        key = "resource_group/keyspace/settings/42/v3"
        identity = f_len(2, f_varint(1, 1) + f_varint(2, 42))
        data = f_str(1, "v3") + f_varint(2, 1) + f_len(9, identity)
        group = decode_value(key, LAYOUT.parse(key), data)
        assert isinstance(group, ResourceGroup)
        assert encode_settings(group) == f_str(1, "v3") + f_varint(2, 1) + f_len(9, f_varint(1, 42))

    def test_request_body_with_keyspace_identity_is_refused_with_pds_text(self) -> None:
        """A request body's ``keyspace_id`` must be a legacy value, as PD's decoder says.

        PD: pkg/mcs/resourcemanager/metadataapi/config_service.go:346-361
        """
        body = {"name": "g", "keyspace_id": {"keyspace_identity": {"keyspace_id": 1}}}
        with pytest.raises(ValidationError, match=KEYSPACE_ID_NOT_LEGACY):
            ResourceGroup.model_validate(body)
        assert ResourceGroup.model_validate({"name": "g", "keyspace_id": {}}).keyspace_id == 0


class TestPdWrittenValues:
    """Values exactly as PD writes them decode, and re-encode to the same bytes."""

    def test_pd_written_default_with_null_keyspace_value_and_empty_stats(self) -> None:
        """PD's stored default (keyspace_id 4294967295, empty RUStats) is PD's reserved group
        and survives decode-encode byte for byte."""
        key = LAYOUT.settings("default")
        group = decode_value(key, LAYOUT.parse(key), PD_WRITTEN_DEFAULT)
        assert isinstance(group, ResourceGroup)
        assert group.keyspace_id == NULL
        assert group.ru_stats == Consumption()
        assert group.model_copy(update={"keyspace_id": None, "ru_stats": None}) == default_group()
        assert encode_settings(group) == PD_WRITTEN_DEFAULT

    def test_consumption_fields_9_to_13(self) -> None:
        """RUStats fields 9-10 (uint64) and 11-13 (double) decode to named fields and back.

        kvproto: proto/resource_manager.proto (message Consumption, fields 9-13)
        """
        stats = (
            f_double(1, 1.5)
            + f_varint(9, 10)
            + f_varint(10, 20)
            + f_double(11, 0.25)
            + f_double(12, 0.5)
            + f_double(13, 0.75)
        )
        data = f_str(1, "g") + f_varint(2, 1) + f_len(8, stats)
        group = decode_settings("k", data)
        assert group.ru_stats == Consumption(
            r_r_u=1.5,
            read_cross_az_traffic_bytes=10,
            write_cross_az_traffic_bytes=20,
            tikv_r_u_v2=0.25,
            tidb_r_u_v2=0.5,
            tiflash_r_u_v2=0.75,
        )
        assert encode_settings(group) == data
        fresh = ResourceGroup(name="g", ru_stats=group.ru_stats)
        assert encode_settings(fresh) == data


class TestKeyspaceIdInKeys:
    """PD parses a key's keyspace id with ``strconv.ParseUint(s, 10, 32)``.

    PD: pkg/utils/keypath/resource_group.go:92-103, pkg/storage/endpoint/resource_group.go:132
    """

    @pytest.mark.parametrize(
        ("key", "parsed"),
        [
            ("resource_group/keyspace/settings/07/a", ParsedKey(KeyKind.SETTINGS, 7, "a")),
            ("resource_group/keyspace/states/00/a", ParsedKey(KeyKind.STATES, 0, "a")),
            ("resource_group/keyspace/service_limits/007", ParsedKey(KeyKind.SERVICE_LIMIT, 7)),
            (
                "resource_group/keyspace/settings/04294967295/a",
                ParsedKey(KeyKind.SETTINGS, NULL, "a"),
            ),
        ],
    )
    def test_zero_padded_id_is_the_same_keyspace(self, key: str, parsed: ParsedKey) -> None:
        """``07`` is keyspace 7; the key is marked non-canonical (PD never writes it)."""
        got = LAYOUT.parse(key)
        assert got == parsed
        assert got.canonical is False

    @pytest.mark.parametrize(
        "key",
        [
            "resource_group/keyspace/settings/4294967295/a",
            "resource_group/keyspace/states/4294967295/a",
        ],
    )
    def test_null_keyspace_in_keyspace_form_is_not_canonical(self, key: str) -> None:
        """PD writes the null keyspace's groups under the legacy keys only."""
        assert LAYOUT.parse(key).canonical is False

    def test_canonical_keys_stay_canonical(self) -> None:
        """Keys PD writes parse as canonical."""
        for key in (LAYOUT.settings("a", 7), LAYOUT.settings("a"), LAYOUT.service_limit(NULL)):
            assert LAYOUT.parse(key).canonical is True

    @pytest.mark.parametrize("text", ["4294967296", "04294967296", "+7", "-0", " 7", "٣"])
    def test_what_parseuint_refuses_is_refused(self, text: str) -> None:
        """Out of range, signs, spaces and non-ASCII digits are not keyspace ids."""
        with pytest.raises(InvalidKeyError):
            LAYOUT.parse(f"resource_group/keyspace/settings/{text}/a")


def _group(name: str, priority: int, keyspace_id: int | None = None) -> bytes:
    return encode_settings(ResourceGroup(name=name, priority=priority, keyspace_id=keyspace_id))


class TestLoadOrder:
    """When two keys name one group, the value PD loads last wins; a bad value never does.

    PD loads the legacy prefix, then the keyspace prefix in key order, each later value
    replacing the earlier. PD: pkg/storage/endpoint/resource_group.go:58-73,
    pkg/mcs/resourcemanager/server/manager.go:387-396
    """

    def test_keyspace_form_overrides_legacy_for_the_null_keyspace(self) -> None:
        """``keyspace/settings/4294967295/g`` wins over ``settings/g``: get and list agree."""
        snap = build_snapshot(LAYOUT, 3, [
            (LAYOUT.settings("g"), _group("g", 1), 2),
            ("resource_group/keyspace/settings/4294967295/g", _group("g", 2), 3),
        ])  # fmt: skip
        assert snap.get_group("g").priority == 2  # type: ignore[union-attr]
        assert [g.priority for g in snap.list_groups() if g.name == "g"] == [2]

    def test_later_zero_padded_key_order(self) -> None:
        """``07/g`` and ``7/g`` are one group; ``7/g`` sorts later, so it wins."""
        snap = build_snapshot(LAYOUT, 3, [
            ("resource_group/keyspace/settings/07/g", _group("g", 1, 7), 2),
            (LAYOUT.settings("g", 7), _group("g", 2, 7), 3),
        ])  # fmt: skip
        assert snap.get_group("g", 7).priority == 2  # type: ignore[union-attr]
        assert [g.name for g in snap.list_groups(7)] == ["default", "g"]

    def test_zero_padded_key_alone_is_served(self) -> None:
        """A group stored only under ``07/g`` is keyspace 7's group ``g``."""
        snap = build_snapshot(LAYOUT, 2, [
            ("resource_group/keyspace/settings/07/g", _group("g", 4, 7), 2),
            ("resource_group/keyspace/service_limits/007", b"50", 2),
        ])  # fmt: skip
        assert snap.get_group("g", 7).priority == 4  # type: ignore[union-attr]
        assert snap.service_limit(7) == ServiceLimit(keyspace_id=7, service_limit=50)

    def test_a_bad_later_value_does_not_override(self) -> None:
        """A keyspace-form value that does not decode leaves the legacy one served."""
        snap = build_snapshot(LAYOUT, 3, [
            (LAYOUT.settings("g"), _group("g", 1), 2),
            ("resource_group/keyspace/settings/4294967295/g", b"\xff garbage", 3),
        ])  # fmt: skip
        assert snap.get_group("g").priority == 1  # type: ignore[union-attr]

    def test_watch_adds_and_removes_an_overriding_key(self) -> None:
        """A keyspace-form key put by the watch overrides; deleting it restores the legacy."""
        odd = "resource_group/keyspace/settings/4294967295/g"
        snap = build_snapshot(LAYOUT, 2, [(LAYOUT.settings("g"), _group("g", 1), 2)])
        snap, _ = apply_changes(snap, 3, [RawChange(odd, 3, _group("g", 5))])
        assert snap.odd_keys == frozenset({odd})
        assert snap.get_group("g").priority == 5  # type: ignore[union-attr]
        snap, _ = apply_changes(snap, 4, [RawChange(odd, 4, None)])
        assert snap.odd_keys == frozenset()
        assert snap.get_group("g").priority == 1  # type: ignore[union-attr]

    def test_replica_reads_odd_keys_as_pd(
        self, sidecar: httpx.Client, replica: Replica, etcd_client: Any, layout: KeyLayout
    ) -> None:
        """On a real etcd: ``07/g`` serves as keyspace 7's ``g``, and the null keyspace's
        keyspace-form key overrides its legacy key, in get and list alike."""
        prefix = layout.prefix
        etcd_client.put(f"{prefix}keyspace/settings/07/g", _group("g", 4, 7))
        etcd_client.put(layout.settings("n"), _group("n", 1))
        odd = f"{prefix}keyspace/settings/{NULL}/n"
        rev = int(etcd_client.put(odd, _group("n", 6)).header.revision)
        replica.wait_for_revision(rev, 5)
        assert sidecar.get(f"{API}/config/group/g?keyspace_id=7").json()["priority"] == 4
        assert sidecar.get(f"{API}/config/group/n").json()["priority"] == 6
        listed = sidecar.get(f"{API}/config/groups").json()
        assert [(g["name"], g["priority"]) for g in listed] == [("default", 8), ("n", 6)]
        etcd_client.delete(odd)
        rev = int(etcd_client.put(layout.settings("z"), _group("z", 0)).header.revision)
        replica.wait_for_revision(rev, 5)
        assert sidecar.get(f"{API}/config/group/n").json()["priority"] == 1


class TestReservedDefault:
    """``default`` shows in every keyspace even when not stored, with PD's settings.

    PD: pkg/mcs/resourcemanager/server/keyspace_manager.go:229-242 (fill_rate MaxInt32,
    burst_limit -1, priority 8), manager.go:299-311 and 624-631 (created on access)
    """

    @pytest.mark.parametrize("keyspace_id", [NULL, 0, 7])
    def test_unstored_default_is_served(self, keyspace_id: int) -> None:
        """An empty snapshot still has ``default`` in any keyspace, get and list alike."""
        snap = build_snapshot(LAYOUT, 1, [])
        group = snap.get_group("default", keyspace_id)
        assert group is not None
        ru = group.r_u_settings.r_u.settings  # type: ignore[union-attr]
        assert (ru.fill_rate, ru.burst_limit, group.priority) == (2147483647, -1, 8)  # type: ignore[union-attr]
        assert snap.list_groups(keyspace_id) == (group,)

    def test_stored_default_wins(self) -> None:
        """A stored ``default`` is served as stored."""
        snap = build_snapshot(
            LAYOUT, 2, [(LAYOUT.settings("default", 7), _group("default", 3, 7), 2)]
        )
        assert snap.get_group("default", 7).priority == 3  # type: ignore[union-attr]
        assert [g.priority for g in snap.list_groups(7)] == [3]

    def test_replica_serves_default_and_a_v3_group(
        self, sidecar: httpx.Client, replica: Replica, etcd_client: Any, layout: KeyLayout
    ) -> None:
        """Over HTTP on a real etcd: an unstored ``default`` in keyspace 9, and a V3
        ``keyspace_identity`` group of keyspace 9, both served."""
        identity = f_len(2, f_varint(1, 1) + f_varint(2, 9))
        data = f_str(1, "v3") + f_varint(2, 1) + ru_settings(10, 20) + f_len(9, identity)
        rev = int(etcd_client.put(layout.settings("v3", 9), data).header.revision)
        replica.wait_for_revision(rev, 5)
        default = sidecar.get(f"{API}/config/group/default?keyspace_id=9")
        assert default.status_code == 200
        assert default.json()["r_u_settings"]["r_u"]["settings"] == {
            "fill_rate": 2147483647,
            "burst_limit": -1,
        }
        v3 = sidecar.get(f"{API}/config/group/v3?keyspace_id=9")
        assert v3.status_code == 200, v3.text
        assert v3.json()["r_u_settings"]["r_u"]["settings"] == {"fill_rate": 10, "burst_limit": 20}
        names = [g["name"] for g in sidecar.get(f"{API}/config/groups?keyspace_id=9").json()]
        assert names == ["default", "v3"]
