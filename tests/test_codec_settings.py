"""Settings protobuf codec: golden bytes from a hand-rolled wire encoder, round-trips, unknown
fields surviving read-modify-write, bad values, and the committed generated module being current.

The wire helpers below are written from the protobuf encoding spec, independently of
``rmwatch.store.codec`` and of the generated module, so a wrong field number or type shows up here.
"""

from __future__ import annotations

import ast
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmwatch.errors import DecodeError
from rmwatch.store._pb import apipb_pb2, meta_storagepb_pb2, resource_manager_pb2
from rmwatch.store.codec import decode_settings, decode_value, encode_settings
from rmwatch.store.keys import KeyKind, KeyLayout, ParsedKey
from rmwatch.store.models import (
    BackgroundSettings,
    Consumption,
    GroupMode,
    GroupRawResourceSettings,
    GroupRequestUnitSettings,
    ResourceGroup,
    RunawayAction,
    RunawayRule,
    RunawaySettings,
    RunawayWatch,
    RunawayWatchType,
    TokenBucket,
    TokenLimitSettings,
    default_group,
)

ROOT = Path(__file__).resolve().parent.parent
KEY = "resource_group/settings/default"

# ---- a hand-rolled protobuf wire encoder / parser -------------------------------------------

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5


def varint(n: int) -> bytes:
    """Base-128 varint; negative int64 values are their 64-bit two's complement (10 bytes)."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    """A field key: field number << 3 | wire type."""
    return varint(field << 3 | wire_type)


def f_varint(field: int, n: int) -> bytes:
    """A varint field (int64, uint64, uint32, enum, bool)."""
    return tag(field, VARINT) + varint(n)


def f_len(field: int, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes, sub-message)."""
    return tag(field, LEN) + varint(len(payload)) + payload


def f_str(field: int, text: str) -> bytes:
    """A string field."""
    return f_len(field, text.encode())


def f_double(field: int, x: float) -> bytes:
    """A double field: fixed64, little-endian IEEE 754."""
    return tag(field, FIXED64) + struct.pack("<d", x)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Read a varint at pos; return (value, next position)."""
    shift = result = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def parse_wire(data: bytes) -> list[tuple[int, int, Any, bytes]]:
    """Split a message into (field, wire type, value, raw bytes of the whole field)."""
    fields = []
    pos = 0
    while pos < len(data):
        start = pos
        key, pos = read_varint(data, pos)
        field, wire_type = key >> 3, key & 7
        value: Any
        if wire_type == VARINT:
            value, pos = read_varint(data, pos)
        elif wire_type == FIXED64:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire_type == LEN:
            size, pos = read_varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        elif wire_type == FIXED32:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise AssertionError(f"unexpected wire type {wire_type}")
        fields.append((field, wire_type, value, data[start:pos]))
    assert pos == len(data)
    return fields


def field_map(data: bytes) -> dict[int, list[tuple[int, Any, bytes]]]:
    """Fields by number (each a list, as a number may repeat)."""
    out: dict[int, list[tuple[int, Any, bytes]]] = {}
    for field, wire_type, value, raw in parse_wire(data):
        out.setdefault(field, []).append((wire_type, value, raw))
    return out


def only(data: bytes, field: int) -> Any:
    """The value of a field that occurs exactly once."""
    entries = field_map(data)[field]
    assert len(entries) == 1
    return entries[0][1]


def limit_settings(fill_rate: int, burst_limit: int) -> bytes:
    """TokenLimitSettings{fill_rate, burst_limit} on the wire."""
    return f_varint(1, fill_rate) + f_varint(2, burst_limit)


def ru_settings(limit: bytes, tokens: bytes = b"") -> bytes:
    """r_u_settings (field 3) wrapping TokenBucket{settings=limit}."""
    return f_len(3, f_len(1, f_len(1, limit) + tokens))


DEFAULT_GROUP_WIRE = (
    f_str(1, "default")
    + f_varint(2, 1)
    + ru_settings(limit_settings(2147483647, -1))
    + f_varint(5, 8)
)


class TestWireHelpers:
    """The test's own encoder agrees with the protobuf spec's worked examples."""

    def test_varint_examples(self) -> None:
        """150 is 96 01, 1 is 01, and -1 as int64 is ten bytes ending in 01."""
        assert varint(150) == b"\x96\x01"
        assert varint(1) == b"\x01"
        assert varint(-1) == b"\xff" * 9 + b"\x01"
        assert len(varint(-1)) == 10
        assert read_varint(varint(-1), 0) == (2**64 - 1, 10)

    def test_field_keys(self) -> None:
        """A field key is field << 3 | wire type (field 1 string is 0x0a, field 9 LEN 0x4a)."""
        assert tag(1, LEN) == b"\x0a"
        assert tag(5, VARINT) == b"\x28"
        assert tag(9, LEN) == b"\x4a"
        assert tag(100, LEN) == b"\xa2\x06"


# ---- golden bytes ---------------------------------------------------------------------------


class TestGoldenBytes:
    """encode_settings writes exactly the bytes PD's ResourceGroup encoding has."""

    def test_default_group_bytes(self) -> None:
        """The reserved default group encodes to the hand-built bytes, burst -1 as 10 bytes."""
        encoded = encode_settings(default_group())
        assert encoded == DEFAULT_GROUP_WIRE
        assert b"\x10" + b"\xff" * 9 + b"\x01" in encoded

    def test_default_group_literal(self) -> None:
        """The default group's bytes, spelled out, match the hand-built ones."""
        assert DEFAULT_GROUP_WIRE == (
            b"\x0a\x07default\x10\x01\x1a\x15\x0a\x13\x0a\x11"
            b"\x08\xff\xff\xff\xff\x07\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"
            b"\x28\x08"
        )

    @pytest.mark.parametrize(("ks", "value_field"), [(5, f_varint(1, 5)), (0, f_varint(1, 0))])
    def test_keyspace_group_bytes(self, ks: int, value_field: bytes) -> None:
        """A keyspace group adds keyspace_id (field 9) {value}; keyspace 0 keeps its oneof case
        (``4a020800``), as kvproto's ``KeyspaceIDValue.keyspace`` oneof encodes a set zero."""
        encoded = encode_settings(default_group(ks))
        assert encoded == DEFAULT_GROUP_WIRE + f_len(9, value_field)

    def test_null_keyspace_has_no_field_9(self) -> None:
        """A group of the null keyspace is written without keyspace_id, as PD's legacy groups."""
        assert 9 not in field_map(encode_settings(default_group(4294967295)))

    def test_full_group_bytes(self) -> None:
        """Every field of a fully populated group lands on its PD field number and type."""
        # RU mode: PD refuses RawMode groups; raw_resource_settings (field 4) is still encoded.
        group = ResourceGroup(
            name="rg",
            mode=GroupMode.RU_MODE,
            raw_resource_settings=GroupRawResourceSettings(
                cpu=TokenBucket(settings=TokenLimitSettings(fill_rate=1), tokens=1.5),
                io_read=TokenBucket(settings=TokenLimitSettings(max_tokens=2.5)),
                io_write=TokenBucket(tokens=-3.0),
            ),
            priority=16,
            runaway_settings=RunawaySettings(
                rule=RunawayRule(exec_elapsed_time_ms=1, processed_keys=2, request_unit=3),
                action=RunawayAction.KILL,
                watch=RunawayWatch(lasting_duration_ms=4, type=RunawayWatchType.PLAN),
                switch_group_name="other",
            ),
            background_settings=BackgroundSettings(job_types=("br", "lightning"),
                                                   utilization_limit=70),
            ru_stats=Consumption(r_r_u=1.0, w_r_u=2.0, read_bytes=3.0, write_bytes=4.0,
                                 total_cpu_time_ms=5.0, sql_layer_cpu_time_ms=6.0,
                                 kv_read_rpc_count=7.0, kv_write_rpc_count=8.0),
            keyspace_id=4294967294,
        )  # fmt: skip
        expected = (
            f_str(1, "rg")
            + f_varint(2, 1)
            + f_len(
                4,
                f_len(1, f_len(1, f_varint(1, 1)) + f_double(2, 1.5))
                + f_len(2, f_len(1, f_double(3, 2.5)))
                + f_len(3, f_double(2, -3.0)),
            )
            + f_varint(5, 16)
            + f_len(
                6,
                f_len(1, f_varint(1, 1) + f_varint(2, 2) + f_varint(3, 3))
                + f_varint(2, 3)
                + f_len(3, f_varint(1, 4) + f_varint(2, 3))
                + f_str(4, "other"),
            )
            + f_len(7, f_str(1, "br") + f_str(1, "lightning") + f_varint(2, 70))
            + f_len(8, b"".join(f_double(i, float(i)) for i in range(1, 9)))
            + f_len(9, f_varint(1, 4294967294))
        )
        assert encode_settings(group) == expected
        assert decode_settings(KEY, expected) == group

    def test_decode_hand_built_default(self) -> None:
        """Hand-built default-group bytes decode to default_group() and remember their wire."""
        group = decode_settings(KEY, DEFAULT_GROUP_WIRE)
        assert group == default_group()
        assert group.wire == DEFAULT_GROUP_WIRE

    def test_decode_hand_built_keyspace_group(self) -> None:
        """Hand-built bytes with tokens, max_tokens and keyspace_id{5} decode field by field."""
        data = (
            f_str(1, "rg1")
            + f_varint(2, 1)
            + ru_settings(limit_settings(500, 800) + f_double(3, 1e6), f_double(2, 123.25))
            + f_varint(5, 3)
            + f_len(9, f_varint(1, 5))
        )
        expected = ResourceGroup(
            name="rg1",
            mode=GroupMode.RU_MODE,
            r_u_settings=GroupRequestUnitSettings(
                r_u=TokenBucket(
                    settings=TokenLimitSettings(fill_rate=500, burst_limit=800, max_tokens=1e6),
                    tokens=123.25,
                )
            ),
            priority=3,
            keyspace_id=5,
        )
        assert decode_settings("k", data) == expected

    def test_decode_field_order_irrelevant(self) -> None:
        """Fields in any order decode to the same group (proto parsers do not depend on order)."""
        shuffled = f_varint(5, 8) + ru_settings(limit_settings(2147483647, -1)) + f_varint(2, 1)
        assert decode_settings(KEY, shuffled + f_str(1, "default")) == default_group()

    def test_missing_mode_is_unknown(self) -> None:
        """A value with no mode field decodes to mode 0 (Unknown), proto3's zero value."""
        assert decode_settings("k", f_str(1, "a")).mode is GroupMode.UNKNOWN

    def test_protoc_decode_raw_agrees(self) -> None:
        """protoc --decode_raw reads our default-group bytes as the documented field tree."""
        pytest.importorskip("grpc_tools")
        proc = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", "--decode_raw"],
            input=encode_settings(default_group(7)),
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0:
            pytest.skip(f"grpc_tools.protoc has no working --decode_raw: {proc.stderr[:200]!r}")
        text = proc.stdout.decode()
        lines = [line.strip() for line in text.splitlines()]
        assert lines[:2] == ['1: "default"', "2: 1"]
        assert "1: 2147483647" in lines
        assert "2: 18446744073709551615" in lines
        assert "5: 8" in lines
        assert lines[-3:] == ["9 {", "1: 7", "}"]


# ---- round-trips ----------------------------------------------------------------------------

_doubles = st.floats(allow_nan=False, allow_infinity=False)
_u64 = st.integers(0, 2**64 - 1)
_i64 = st.integers(-(2**63), 2**63 - 1)
_names = st.one_of(
    st.text(min_size=1, max_size=8),
    st.text(alphabet=st.characters(max_codepoint=127), min_size=1, max_size=32),
)
_limits = st.builds(TokenLimitSettings, fill_rate=_u64, burst_limit=_i64, max_tokens=_doubles)
_buckets = st.builds(TokenBucket, settings=st.none() | _limits, tokens=_doubles)
_opt_bucket = st.none() | _buckets
_runaway = st.builds(
    RunawaySettings,
    rule=st.none()
    | st.builds(RunawayRule, exec_elapsed_time_ms=_u64, processed_keys=_i64, request_unit=_i64),
    action=st.sampled_from(RunawayAction),
    watch=st.none()
    | st.builds(RunawayWatch, lasting_duration_ms=_i64, type=st.sampled_from(RunawayWatchType)),
    switch_group_name=st.text(max_size=10),
)
_background = st.builds(
    BackgroundSettings,
    job_types=st.lists(st.text(max_size=10), max_size=3).map(tuple),
    utilization_limit=_u64,
)
_CONSUMPTION_FIELDS = (
    "r_r_u", "w_r_u", "read_bytes", "write_bytes", "total_cpu_time_ms",
    "sql_layer_cpu_time_ms", "kv_read_rpc_count", "kv_write_rpc_count",
)  # fmt: skip
_consumption = st.builds(Consumption, **dict.fromkeys(_CONSUMPTION_FIELDS, _doubles))
groups = st.builds(
    ResourceGroup,
    name=_names,
    mode=st.sampled_from([GroupMode.UNKNOWN, GroupMode.RU_MODE]),  # RawMode is refused
    r_u_settings=st.none() | st.builds(GroupRequestUnitSettings, r_u=_opt_bucket),
    raw_resource_settings=st.none()
    | st.builds(GroupRawResourceSettings, cpu=_opt_bucket, io_read=_opt_bucket,
                io_write=_opt_bucket),
    priority=st.integers(0, 16),
    runaway_settings=st.none() | _runaway,
    background_settings=st.none() | _background,
    ru_stats=st.none() | _consumption,
    keyspace_id=st.none() | st.integers(0, 2**32 - 1),
)  # fmt: skip


class TestRoundTrip:
    """Any valid group survives encode then decode."""

    @settings(max_examples=200, deadline=None)
    @given(group=groups)
    def test_encode_decode(self, group: ResourceGroup) -> None:
        """decode(encode(g)) == g, and re-encoding the decoded group gives the same bytes."""
        encoded = encode_settings(group)
        decoded = decode_settings("k", encoded)
        assert decoded == group
        assert decoded.wire == encoded
        assert encode_settings(decoded) == encoded

    @settings(max_examples=100, deadline=None)
    @given(group=groups, other=groups)
    def test_encode_over_other_base(self, group: ResourceGroup, other: ResourceGroup) -> None:
        """Encoding on top of another group's bytes still yields exactly this group's fields."""
        encoded = encode_settings(group, base=encode_settings(other))
        assert decode_settings("k", encoded) == group

    def test_present_but_empty_submessages(self) -> None:
        """Empty sub-messages stay present: r_u_settings{} is not the same as no r_u_settings."""
        group = ResourceGroup(
            name="a", r_u_settings=GroupRequestUnitSettings(), runaway_settings=RunawaySettings()
        )
        encoded = encode_settings(group)
        assert encoded == f_str(1, "a") + f_varint(2, 1) + f_len(3, b"") + f_len(6, b"")
        assert decode_settings("k", encoded) == group
        assert decode_settings("k", f_str(1, "a")).r_u_settings is None


# ---- unknown fields -------------------------------------------------------------------------

UNKNOWN_TOP = f_varint(99, 12345) + f_len(100, b"\x01future\xff") + f_double(101, 2.75)
UNKNOWN_NESTED = f_len(15, b"nested-future") + f_varint(16, 1)


def _with_unknowns() -> bytes:
    """A keyspace group with unknown fields at the top level and inside r_u.settings."""
    return (
        f_str(1, "rg1")
        + f_varint(2, 1)
        + ru_settings(limit_settings(100, 200) + UNKNOWN_NESTED)
        + f_varint(5, 8)
        + f_len(9, f_varint(1, 5))
        + UNKNOWN_TOP
    )


def _unknown_raws(data: bytes, numbers: range) -> list[bytes]:
    """Raw bytes of the fields of data whose numbers are in numbers, in order."""
    return [raw for field, _, _, raw in parse_wire(data) if field in numbers]


def _limit_bytes(data: bytes) -> bytes:
    """The TokenLimitSettings bytes inside r_u_settings.r_u.settings."""
    return bytes(only(only(only(data, 3), 1), 1))


class TestUnknownFields:
    """Fields this version does not know survive a read-modify-write byte for byte."""

    def test_decode_ignores_unknowns(self) -> None:
        """A value with unknown fields of every wire type decodes to its known fields."""
        group = decode_settings("k", _with_unknowns())
        assert group.name == "rg1"
        assert group.keyspace_id == 5
        assert group.r_u_settings is not None
        assert group.r_u_settings.r_u is not None
        assert group.r_u_settings.r_u.settings == TokenLimitSettings(fill_rate=100, burst_limit=200)

    def test_priority_change_keeps_unknowns(self) -> None:
        """Changing priority keeps top-level varint/LEN/fixed64 and nested unknowns intact."""
        group = decode_settings("k", _with_unknowns())
        changed = group.model_copy(update={"priority": 3})
        out = encode_settings(changed)
        assert only(out, 5) == 3
        assert _unknown_raws(out, range(99, 102)) == [
            f_varint(99, 12345),
            f_len(100, b"\x01future\xff"),
            f_double(101, 2.75),
        ]
        assert _limit_bytes(out) == limit_settings(100, 200) + UNKNOWN_NESTED
        assert decode_settings("k", out) == changed

    def test_fill_rate_change_keeps_nested_unknowns(self) -> None:
        """Changing fill_rate in r_u.settings rewrites it and keeps that message's unknowns."""
        group = decode_settings("k", _with_unknowns())
        new_ru = GroupRequestUnitSettings(
            r_u=TokenBucket(settings=TokenLimitSettings(fill_rate=500, burst_limit=200))
        )
        out = encode_settings(group.model_copy(update={"r_u_settings": new_ru}))
        limit = _limit_bytes(out)
        assert only(limit, 1) == 500
        assert only(limit, 2) == 200
        assert _unknown_raws(limit, range(15, 17)) == [f_len(15, b"nested-future"), f_varint(16, 1)]
        assert _unknown_raws(out, range(99, 102)) == _unknown_raws(UNKNOWN_TOP, range(99, 102))

    def test_unchanged_group_reencodes_identically(self) -> None:
        """A decoded group re-encoded without changes gives back its original bytes."""
        data = _with_unknowns()
        assert encode_settings(decode_settings("k", data)) == data

    def test_explicit_base_keeps_unknowns(self) -> None:
        """encode_settings(g, base=old) keeps old's unknown fields for a group built afresh."""
        fresh = ResourceGroup(name="rg1", priority=1, keyspace_id=5)
        out = encode_settings(fresh, base=_with_unknowns())
        assert _unknown_raws(out, range(99, 102)) == _unknown_raws(UNKNOWN_TOP, range(99, 102))
        assert decode_settings("k", out) == fresh

    def test_removed_submessage_drops_its_unknowns(self) -> None:
        """Removing r_u_settings removes it entirely, unknowns inside it included."""
        group = decode_settings("k", _with_unknowns())
        out = encode_settings(group.model_copy(update={"r_u_settings": None}))
        assert 3 not in field_map(out)
        assert _unknown_raws(out, range(99, 102)) == _unknown_raws(UNKNOWN_TOP, range(99, 102))

    def test_revalidated_group_has_no_wire(self) -> None:
        """A group re-built by model_validate has no wire: pass base= to keep unknown fields."""
        group = decode_settings("k", _with_unknowns())
        rebuilt = ResourceGroup.model_validate(group.model_dump())
        assert rebuilt.wire is None
        assert _unknown_raws(encode_settings(rebuilt), range(99, 102)) == []


# ---- bad values -----------------------------------------------------------------------------


class TestBadSettings:
    """Every undecodable settings value raises DecodeError naming the key."""

    @pytest.mark.parametrize(
        "data",
        [
            DEFAULT_GROUP_WIRE[:-1],  # priority tag without its value
            DEFAULT_GROUP_WIRE[:10],  # inside r_u_settings
            DEFAULT_GROUP_WIRE[:5],  # inside the name
            b"\x0a",  # name tag without length
            b"\x0a\x7f" + b"x",  # length past the end
            b"\xff" * 11,  # endless varint key
            f_str(1, "a") + b"\x0f",  # wire type 7 does not exist
            f_str(1, "a") + b"\x0e",  # wire type 6 does not exist
            f_str(1, "a") + b"\x0c",  # end-group without a start
            b"\x00",  # field number 0
            f_len(1, b"\xff\xfe"),  # name is not UTF-8
            f_len(1, b"a") + f_len(3, b"\x0a\x05\x0a"),  # nested length past parent's end
        ],
    )
    def test_malformed_protobuf(self, data: bytes) -> None:
        """Truncated or corrupt protobuf raises DecodeError with .key set to the given key."""
        with pytest.raises(DecodeError) as info:
            decode_settings("resource_group/settings/x", data)
        assert info.value.key == "resource_group/settings/x"

    @pytest.mark.parametrize(
        "data",
        [
            f_varint(1, 5),  # name as a varint: no name at all
            b"",  # empty value: no name
            f_str(1, "x" * 33),  # name over 32 bytes
            f_str(1, "组" * 11),  # 33 bytes in 11 characters
            f_str(1, "a") + f_varint(5, 17),  # priority over 16
            f_str(1, "a") + f_varint(2, 7),  # unknown GroupMode
            f_str(1, "a") + f_len(6, f_varint(2, 9)),  # unknown RunawayAction
            f_str(1, "a") + f_len(8, f_double(1, float("nan"))),  # NaN RU stats
            f_str(1, "a") + f_len(3, f_len(1, f_double(2, float("inf")))),  # inf tokens
        ],
    )
    def test_invalid_group(self, data: bytes) -> None:
        """Well-formed protobuf that PD would refuse raises DecodeError with .key set."""
        with pytest.raises(DecodeError) as info:
            decode_settings("the-key", data)
        assert info.value.key == "the-key"

    @pytest.mark.parametrize(
        "data",
        [
            f_str(1, "a") + f_len(5, b"\x08"),  # priority as LEN
            f_str(1, "a") + f_double(2, 1.0),  # mode as fixed64
            f_str(1, "a") + f_varint(3, 1),  # r_u_settings as varint
        ],
    )
    def test_wrong_wire_type_for_known_field(self, data: bytes) -> None:
        """A known field sent with another wire type is refused, as PD refuses it."""
        with pytest.raises(DecodeError):
            decode_settings("k", data)

    @settings(max_examples=200, deadline=None)
    @given(data=st.binary(max_size=64))
    def test_garbage_never_escapes(self, data: bytes) -> None:
        """Any bytes either decode to a group or raise DecodeError, never another exception."""
        try:
            group = decode_settings("g", data)
        except DecodeError as exc:
            key = exc.key
            assert key == "g"
        else:
            assert isinstance(group, ResourceGroup)

    @settings(max_examples=200, deadline=None)
    @given(group=groups, cut=st.integers(0, 200), junk=st.binary(min_size=1, max_size=8))
    def test_mangled_valid_value(self, group: ResourceGroup, cut: int, junk: bytes) -> None:
        """A valid value cut short or with junk appended decodes or raises DecodeError only."""
        encoded = encode_settings(group)
        for data in (encoded[: cut % (len(encoded) + 1)], encoded + junk):
            try:
                decode_settings("g", data)
            except DecodeError as exc:
                key = exc.key
                assert key == "g"


class TestDecodeValueSettings:
    """decode_value checks a settings value agrees with its key."""

    layout = KeyLayout("/pd/1")

    def test_matching_legacy_key(self) -> None:
        """The default group under its legacy key decodes to default_group()."""
        key = self.layout.settings("default")
        assert decode_value(key, self.layout.parse(key), DEFAULT_GROUP_WIRE) == default_group()

    def test_matching_keyspace_key(self) -> None:
        """A keyspace group under its keyspace key decodes with its keyspace id."""
        key = self.layout.settings("default", 5)
        value = decode_value(key, self.layout.parse(key), encode_settings(default_group(5)))
        assert value == default_group(5)

    def test_name_with_slash(self) -> None:
        """A group whose name holds '/' decodes under its key."""
        key = self.layout.settings("a/b", 7)
        group = ResourceGroup(name="a/b", keyspace_id=7)
        assert decode_value(key, self.layout.parse(key), encode_settings(group)) == group

    @pytest.mark.parametrize("ks", [4294967295, 0, 5])
    def test_name_mismatch(self, ks: int) -> None:
        """A value whose name differs from the key's raises DecodeError naming both names."""
        key = self.layout.settings("rg-key", ks)
        data = encode_settings(ResourceGroup(name="rg-value", keyspace_id=None))
        with pytest.raises(DecodeError, match="rg-value") as info:
            decode_value(key, self.layout.parse(key), data)
        assert "rg-key" in str(info.value)
        assert info.value.key == key

    @pytest.mark.parametrize(
        ("key_ks", "value_ks"), [(5, 6), (5, 0), (0, 5), (4294967295, 5), (4294967295, 0)]
    )
    def test_keyspace_mismatch(self, key_ks: int, value_ks: int) -> None:
        """A keyspace_id in the value that differs from the key's keyspace raises DecodeError."""
        key = self.layout.settings("default", key_ks)
        with pytest.raises(DecodeError, match="keyspace") as info:
            decode_value(key, self.layout.parse(key), encode_settings(default_group(value_ks)))
        assert info.value.key == key
        assert str(value_ks) in str(info.value)

    def test_explicit_null_keyspace_under_legacy_key(self) -> None:
        """keyspace_id{4294967295} written out under a legacy key agrees with the key."""
        key = self.layout.settings("default")
        data = DEFAULT_GROUP_WIRE + f_len(9, f_varint(1, 4294967295))
        group = decode_value(key, self.layout.parse(key), data)
        assert isinstance(group, ResourceGroup)
        assert group.effective_keyspace_id == 4294967295

    def test_garbage_under_settings_key(self) -> None:
        """Undecodable bytes under a settings key raise DecodeError naming that key."""
        parsed = ParsedKey(KeyKind.SETTINGS, 3, "a")
        with pytest.raises(DecodeError) as info:
            decode_value("kk", parsed, b"\x0f")
        assert info.value.key == "kk"


# ---- the committed generated module is current ----------------------------------------------


def _serialized_file(source: str) -> bytes:
    """The bytes passed to AddSerializedFile(...) in a generated module's source."""
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "AddSerializedFile"
        ):
            value = ast.literal_eval(node.args[0])
            assert isinstance(value, bytes)
            return value
    raise AssertionError("no AddSerializedFile call in the generated module")


PROTOS = {
    "apipb": apipb_pb2,
    "resource_manager": resource_manager_pb2,
    "meta_storagepb": meta_storagepb_pb2,
}


class TestGeneratedModule:
    """store/_pb/*_pb2.py are what protoc makes of store/proto/*.proto today."""

    @pytest.mark.parametrize("name", sorted(PROTOS))
    def test_descriptor_matches_proto(self, tmp_path: Path, name: str) -> None:
        """Regenerating from the .proto yields the committed module's serialized descriptor."""
        pytest.importorskip("grpc_tools")
        proto_dir = ROOT / "store" / "proto"
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}",
             f"--python_out={tmp_path}", str(proto_dir / f"{name}.proto")],
            check=True, capture_output=True,
        )  # fmt: skip
        # Read the fresh module's descriptor without importing it: importing would register a
        # second copy of the file in the default descriptor pool.
        fresh = _serialized_file((tmp_path / f"{name}_pb2.py").read_text())
        assert fresh == PROTOS[name].DESCRIPTOR.serialized_pb
        committed = (ROOT / "store" / "_pb" / f"{name}_pb2.py").read_text()
        assert _serialized_file(committed) == fresh

    @pytest.mark.parametrize("name", sorted(PROTOS))
    def test_committed_module_has_no_runtime_version_check(self, name: str) -> None:
        """scripts/gen_proto stripped the runtime-version call so older protobuf can load it."""
        committed = (ROOT / "store" / "_pb" / f"{name}_pb2.py").read_text()
        assert "ValidateProtobufRuntimeVersion" not in committed
        assert committed.startswith(f"# Generated from store/proto/{name}.proto")

    @pytest.mark.parametrize("name", ["resource_manager", "meta_storagepb"])
    def test_client_stubs_name_every_method(self, name: str) -> None:
        """rmwatch/grpc/stubs/{name}_pb2_grpc.py was generated from the same .proto: it calls
        every method of every service the committed messages module describes, by full name."""
        stubs = (ROOT / "rmwatch" / "grpc" / "stubs" / f"{name}_pb2_grpc.py").read_text()
        assert stubs.startswith(f"# Generated from store/proto/{name}.proto")
        services = PROTOS[name].DESCRIPTOR.services_by_name.values()
        assert services
        for service in services:
            for method in service.methods:
                assert f"'/{service.full_name}/{method.name}'" in stubs

    def test_proto_field_numbers_are_pds(self) -> None:
        """The generated ResourceGroup message has PD's field numbers."""
        fields = {f.name: f.number for f in resource_manager_pb2.ResourceGroup.DESCRIPTOR.fields}
        assert fields == {
            "name": 1, "mode": 2, "r_u_settings": 3, "raw_resource_settings": 4, "priority": 5,
            "runaway_settings": 6, "background_settings": 7, "RUStats": 8, "keyspace_id": 9,
        }  # fmt: skip

    def test_package_is_kvprotos(self) -> None:
        """Full names are kvproto's (``resource_manager.ResourceGroup``), as PD's clients use."""
        assert resource_manager_pb2.ResourceGroup.DESCRIPTOR.full_name == (
            "resource_manager.ResourceGroup"
        )
        assert resource_manager_pb2.DESCRIPTOR.services_by_name["ResourceManager"].full_name == (
            "resource_manager.ResourceManager"
        )
        assert meta_storagepb_pb2.DESCRIPTOR.services_by_name["MetaStorage"].full_name == (
            "meta_storagepb.MetaStorage"
        )
