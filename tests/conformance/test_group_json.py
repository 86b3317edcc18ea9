"""Conformance of the group and service-limit JSON with PD's REST answers, and the writer and
the replica answering the same table of requests the same way.

PD's REST group is ``server.ResourceGroup`` (pkg/mcs/resourcemanager/server/resource_group.go:
39-50, HEAD a186e0c) marshalled by Go's encoding/json after ``FromProtoResourceGroup``
(resource_group.go:247-270) and ``SetStatesIntoResourceGroup`` (resource_group.go:378-391).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sidecar_support import API, layout, replica, sidecar

from rmwatch.http.pdjson import consumption_json, group_json
from rmwatch.http.service_limit import limit_json
from rmwatch.store import go_json
from rmwatch.store.codec import encode_settings, encode_states
from rmwatch.store.keys import KeyLayout
from rmwatch.store.models import (
    Consumption,
    GroupMode,
    GroupRawResourceSettings,
    GroupRequestUnitSettings,
    GroupStates,
    ResourceGroup,
    TokenBucket,
    TokenLimitSettings,
    TokenState,
    default_group,
)
from rmwatch.watcher.replica import Replica

from .support import f_len, f_str, f_varint, go_indent, ru_settings, writer_http

__all__ = ["layout", "replica", "sidecar"]  # fixtures, re-exported so pytest finds them here

# PD's reserved default group as GET config/group/default shows it where none is stored.
# PD: pkg/mcs/resourcemanager/server/keyspace_manager.go:229-242
DEFAULT_JSON = {
    "name": "default",
    "mode": 1,
    "r_u_settings": {
        "r_u": {
            "settings": {"fill_rate": 2147483647, "burst_limit": -1},
            "state": {"initialized": False},
        }
    },
    "priority": 8,
}


def _ru(fill: int, burst: int, tokens: float = 0.0) -> GroupRequestUnitSettings:
    limits = TokenLimitSettings(fill_rate=fill, burst_limit=burst)
    return GroupRequestUnitSettings(r_u=TokenBucket(settings=limits, tokens=tokens))


class TestGroupShape:
    """``group_json`` against PD's REST struct, case by case."""

    def test_default_group(self) -> None:
        """The reserved default shows PD's settings, state uninitialized, priority 8."""
        assert group_json(default_group(7)) == DEFAULT_JSON

    def test_ru_group_without_r_u_settings(self) -> None:
        """An RU group stored without ``r_u_settings`` still shows an empty bucket.

        PD: resource_group.go:258-259 and token_buckets.go:410-411 (an empty GroupTokenBucket)
        """
        got = group_json(ResourceGroup(name="g", priority=3))
        assert got == {
            "name": "g",
            "mode": 1,
            "r_u_settings": {"r_u": {"state": {"initialized": False}}},
            "priority": 3,
        }

    def test_bucket_without_settings_drops_its_tokens(self) -> None:
        """A bucket with tokens but no limit settings shows as empty, as PD's constructor
        makes it. PD: token_buckets.go:409-412"""
        group = ResourceGroup(
            name="g", r_u_settings=GroupRequestUnitSettings(r_u=TokenBucket(tokens=5.0))
        )
        assert group_json(group)["r_u_settings"] == {"r_u": {"state": {"initialized": False}}}

    def test_tokens_from_settings_when_no_states_key(self) -> None:
        """Without a states key, the tokens kept in the settings' bucket show.

        PD: token_buckets.go:414-418 (tokens from TokenBucket.tokens)
        """
        group = ResourceGroup(name="g", r_u_settings=_ru(100, 200, tokens=123.0))
        state = group_json(group)["r_u_settings"]["r_u"]["state"]
        assert state == {"tokens": 123, "initialized": False}

    def test_states_key_replaces_tokens_update_and_initialized(self) -> None:
        """A states key's ``r_u`` replaces all three state fields (tokens 0 when absent).

        PD: token_buckets.go:131-135 (setState), resource_group.go:381-383
        """
        group = ResourceGroup(name="g", r_u_settings=_ru(100, 200, tokens=123.0))
        stamp = "2024-05-01T10:00:00.5Z"
        with_state = GroupStates(r_u=TokenState(tokens=7.5, last_update=stamp, initialized=True))
        state = group_json(group, with_state)["r_u_settings"]["r_u"]["state"]
        assert state == {"tokens": 7.5, "last_update": stamp, "initialized": True}
        empty = group_json(group, GroupStates(r_u=TokenState()))["r_u_settings"]["r_u"]["state"]
        assert empty == {"initialized": False}
        no_r_u = group_json(group, GroupStates())["r_u_settings"]["r_u"]["state"]
        assert no_r_u == {"tokens": 123, "initialized": False}

    def test_unknown_mode_has_no_r_u_settings(self) -> None:
        """Mode 0 gets no RU settings in PD (neither branch of FromProtoResourceGroup)."""
        group = ResourceGroup(name="g", mode=GroupMode.UNKNOWN, r_u_settings=_ru(1, 2))
        assert group_json(group) == {"name": "g", "mode": 0, "priority": 0}

    def test_raw_resource_settings_never_show(self) -> None:
        """PD's REST struct has no ``raw_resource_settings``; a stored one is not shown."""
        raw = GroupRawResourceSettings(cpu=TokenBucket(settings=TokenLimitSettings(fill_rate=5)))
        group = ResourceGroup(name="g", r_u_settings=_ru(1, 2), raw_resource_settings=raw)
        assert "raw_resource_settings" not in group_json(group)

    def test_whole_floats_print_as_go_prints_them(self) -> None:
        """``max_tokens`` 1e6 is ``1000000`` (Go), not ``1000000.0``; 0.5 stays 0.5; 2**60
        is Go's shortest ``1152921504606847000``, not the exact ``1152921504606846976``
        (strconv.FormatFloat(f, 'f', -1, 64), encoding/json/encode.go floatEncoder)."""
        limits = TokenLimitSettings(fill_rate=1, max_tokens=1e6)
        group = ResourceGroup(name="g", r_u_settings=GroupRequestUnitSettings(
            r_u=TokenBucket(settings=limits, tokens=0.5)))  # fmt: skip
        body = go_json.marshal(group_json(group)["r_u_settings"]["r_u"])
        assert (
            body == b'{"settings":{"fill_rate":1,"max_tokens":1000000},'
            b'"state":{"tokens":0.5,"initialized":false}}'
        )
        big = ResourceGroup(name="g", r_u_settings=_ru(1, 2, tokens=2.0**60))
        state = go_json.marshal(group_json(big)["r_u_settings"]["r_u"]["state"])
        assert state == b'{"tokens":1152921504606847000,"initialized":false}'


class TestStats:
    """``with_stats=true`` adds ``ru_consumption`` (never ``RUStats``), at least ``{}``.

    PD: resource_group.go:49 (json ``ru_consumption``), 105-106 (Clone withStats), 254
    (always a non-nil Consumption)
    """

    def test_no_stats_without_the_flag(self) -> None:
        """Without ``with_stats`` there is no consumption key at all."""
        group = ResourceGroup(name="g", ru_stats=Consumption(r_r_u=1.0))
        assert "ru_consumption" not in group_json(group)
        assert "RUStats" not in group_json(group, with_stats=True)

    def test_empty_consumption_is_an_empty_object(self) -> None:
        """A group with no consumption anywhere shows ``"ru_consumption": {}``."""
        assert group_json(default_group(), with_stats=True)["ru_consumption"] == {}

    def test_fields_9_to_13_show(self) -> None:
        """Cross-AZ bytes (uint64) and the RU v2 doubles show under their kvproto names."""
        stats = Consumption(
            read_cross_az_traffic_bytes=10, write_cross_az_traffic_bytes=20,
            tikv_r_u_v2=0.25, tidb_r_u_v2=0.5, tiflash_r_u_v2=0.75,
        )  # fmt: skip
        assert consumption_json(stats) == {
            "read_cross_az_traffic_bytes": 10, "write_cross_az_traffic_bytes": 20,
            "tikv_r_u_v2": 0.25, "tidb_r_u_v2": 0.5, "tiflash_r_u_v2": 0.75,
        }  # fmt: skip

    def test_settings_stats_plus_states_consumption(self) -> None:
        """PD starts from the settings' RUStats and adds the states key's consumption.

        PD: resource_group.go:263-264, 385-386, 394-411 (UpdateRUConsumption adds)
        """
        group = ResourceGroup(name="g", ru_stats=Consumption(r_r_u=1.0, tidb_r_u_v2=2.0))
        states = GroupStates(ru_consumption=Consumption(r_r_u=0.5, w_r_u=3.0))
        got = group_json(group, states, with_stats=True)["ru_consumption"]
        assert got == {"r_r_u": 1.5, "w_r_u": 3, "tidb_r_u_v2": 2}

    def test_unknown_consumption_keys_are_not_shown(self) -> None:
        """Keys Go's struct does not have (kept in the stored JSON) are not in the answer."""
        states = GroupStates.model_validate({"ru_consumption": {"r_r_u": 1, "newer": 9}})
        assert group_json(default_group(), states, with_stats=True)["ru_consumption"] == {
            "r_r_u": 1
        }


class TestServiceLimitShape:
    """``{"service_limit", "available_tokens", "last_update"}`` with PD's field types.

    PD: pkg/mcs/resourcemanager/server/service_limit.go:34-49 (the limiter's JSON tags)
    """

    def test_stored_limit(self) -> None:
        """A stored limit as Go prints a float64; the running state as Go's zero values."""
        got = limit_json(100.0)
        assert got == {
            "service_limit": 100,
            "available_tokens": 0,
            "last_update": "0001-01-01T00:00:00Z",
        }
        assert limit_json(2.5)["service_limit"] == 2.5

    def test_nothing_stored_is_zero(self) -> None:
        """No stored limit shows 0, as PD's limiter starts at 0 (service_limit.go:61-64)."""
        assert limit_json(None)["service_limit"] == 0


# ---- writer and replica through one table ----------------------------------------------------

_V3 = (
    f_str(1, "v3")
    + f_varint(2, 1)
    + ru_settings(10, 20)
    + f_varint(5, 4)
    + f_len(9, f_len(2, f_varint(1, 1) + f_varint(2, 5)))
)
_TOKENS = ResourceGroup(name="tok", r_u_settings=_ru(100, 200, tokens=42.0), priority=2)
# 2**60 tokens: past 2**53, where Go's shortest digits and the exact integer part ways.
_BIG = ResourceGroup(name="big", r_u_settings=_ru(100, 200, tokens=2.0**60))
_BARE = ResourceGroup(name="bare", priority=9)
_HTML_NAME = ResourceGroup(name="a<b&c>", priority=1)
_STATS = ResourceGroup(name="st", r_u_settings=_ru(5, 6), ru_stats=Consumption(r_r_u=1.0))
_STATS_STATES = GroupStates(
    r_u=TokenState(tokens=3.0, initialized=True),
    ru_consumption=Consumption(w_r_u=2.0, read_cross_az_traffic_bytes=7),
)

# (route under API, expected JSON): every row is asked of the writer and of the replica.
TABLE: list[tuple[str, Any]] = [
    ("/config/group/default?keyspace_id=5", DEFAULT_JSON),
    ("/config/group/default?keyspace_id=5&with_stats=true", {**DEFAULT_JSON, "ru_consumption": {}}),
    ("/config/group/default", DEFAULT_JSON),
    (
        "/config/group/v3?keyspace_id=5",
        {
            "name": "v3",
            "mode": 1,
            "r_u_settings": {
                "r_u": {
                    "settings": {"fill_rate": 10, "burst_limit": 20},
                    "state": {"initialized": False},
                }
            },
            "priority": 4,
        },
    ),
    (
        "/config/group/tok",
        {
            "name": "tok",
            "mode": 1,
            "r_u_settings": {
                "r_u": {
                    "settings": {"fill_rate": 100, "burst_limit": 200},
                    "state": {"tokens": 42, "initialized": False},
                }
            },
            "priority": 2,
        },
    ),
    (
        "/config/group/big",
        {
            "name": "big",
            "mode": 1,
            "r_u_settings": {
                "r_u": {
                    "settings": {"fill_rate": 100, "burst_limit": 200},
                    "state": {"tokens": 1152921504606847000, "initialized": False},
                }
            },
            "priority": 0,
        },
    ),
    (
        "/config/group/bare",
        {
            "name": "bare",
            "mode": 1,
            "r_u_settings": {"r_u": {"state": {"initialized": False}}},
            "priority": 9,
        },
    ),
    (
        "/config/group/st?with_stats=TRUE",
        {
            "name": "st",
            "mode": 1,
            "r_u_settings": {
                "r_u": {
                    "settings": {"fill_rate": 5, "burst_limit": 6},
                    "state": {"tokens": 3, "initialized": True},
                }
            },
            "priority": 0,
            "ru_consumption": {"r_r_u": 1, "w_r_u": 2, "read_cross_az_traffic_bytes": 7},
        },
    ),
    (
        "/config/group/a%3Cb%26c%3E",
        {
            "name": "a<b&c>",  # sent escaped: Go's Marshal escapes <, >, &
            "mode": 1,
            "r_u_settings": {"r_u": {"state": {"initialized": False}}},
            "priority": 1,
        },
    ),
    ("/config/groups?keyspace_id=6", [DEFAULT_JSON]),
]


def _store(client: Any, layout: KeyLayout) -> int:
    client.put(layout.settings("v3", 5), _V3)
    client.put(layout.settings("tok"), encode_settings(_TOKENS))
    client.put(layout.settings("bare"), encode_settings(_BARE))
    client.put(layout.settings("big"), encode_settings(_BIG))
    client.put(layout.settings(_HTML_NAME.name), encode_settings(_HTML_NAME))
    client.put(layout.settings("st"), encode_settings(_STATS))
    return int(client.put(layout.states("st"), encode_states(_STATS_STATES)).header.revision)


def test_writer_and_replica_answer_the_table_alike(
    sidecar: httpx.Client,
    replica: Replica,
    etcd_client: Any,
    layout: KeyLayout,
    etcd_endpoints: list[str],
    root_prefix: str,
) -> None:
    """Each row, asked of the writer and of the replica on one etcd, gets PD's JSON from both:
    an unstored default (plain, with stats, per keyspace), a V3 ``keyspace_identity`` group,
    tokens from settings (2**60 in Go's shortest digits), an RU group without settings, stats
    summed, HTML characters in a name, a keyspace's list. Byte for byte as gin's
    ``c.IndentedJSON`` writes it: Go's MarshalIndent with four spaces, ``application/json;
    charset=utf-8`` (PD: metadataapi/config_service.go:381 for a group, :397 for the list)."""
    revision = _store(etcd_client, layout)
    replica.wait_for_revision(revision, 5)
    with writer_http(etcd_endpoints, root_prefix) as (_, writer):
        for route, expected in TABLE:
            from_writer = writer.get(route)
            from_replica = sidecar.get(API + route)
            assert from_writer.status_code == 200, (route, from_writer.text)
            assert from_replica.status_code == 200, (route, from_replica.text)
            assert from_writer.json() == expected, route
            assert from_replica.json() == expected, route
            # The rows hold only strings and integers, so Python's compact JSON is Go's Marshal
            # but for HTML escaping, which Go's Marshal adds.
            compact = json.dumps(expected, separators=(",", ":"), ensure_ascii=False).encode()
            compact = compact.replace(b"<", b"\\u003c").replace(b">", b"\\u003e")
            compact = compact.replace(b"&", b"\\u0026")
            for answer in (from_writer, from_replica):
                assert answer.content == go_indent(compact), (route, answer.content)
                assert answer.headers["content-type"] == "application/json; charset=utf-8"


@pytest.mark.parametrize("route", ["/config/group/tok", "/config/group/st?with_stats=true"])
def test_no_rustats_key_on_either_service(
    sidecar: httpx.Client,
    replica: Replica,
    etcd_client: Any,
    layout: KeyLayout,
    etcd_endpoints: list[str],
    root_prefix: str,
    route: str,
) -> None:
    """Neither service ever sends ``RUStats`` or ``raw_resource_settings`` (PD's REST struct
    has neither)."""
    replica.wait_for_revision(_store(etcd_client, layout), 5)
    with writer_http(etcd_endpoints, root_prefix) as (_, writer):
        for body in (writer.get(route).text, sidecar.get(API + route).text):
            assert "RUStats" not in body
            assert "raw_resource_settings" not in body
