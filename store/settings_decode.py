"""Resource-group models straight from a parsed ``ResourceGroup`` protobuf message.

A stored settings value is checked here in plain code, with the invariants PD's loader and
``rmwatch.store.models`` enforce, then built with ``construct_trusted``: no JSON-shaped dict
and no pydantic validation per stored value, which took over half the decode time of a group
and built a dict per nested message. pydantic validation stays at the API edge, on request
bodies. What protobuf itself guarantees is not checked again: integer ranges (uint32, uint64,
int64), UTF-8 strings, and the wire type of every known field (``rmwatch.store.codec`` refuses
a known field that arrived as an unknown one).
"""

from __future__ import annotations

import re
from math import isfinite
from typing import Any

from rmwatch.store._pb import resource_manager_pb2 as pb
from rmwatch.store.models import (
    MAX_NAME_BYTES,
    MAX_PRIORITY,
    RAW_MODE_REFUSED,
    BackgroundSettings,
    Consumption,
    GroupMode,
    GroupRawResourceSettings,
    GroupRequestUnitSettings,
    KeyspaceIdentity,
    ResourceGroup,
    RunawayAction,
    RunawayRule,
    RunawaySettings,
    RunawayWatch,
    RunawayWatchType,
    TokenBucket,
    TokenLimitSettings,
    construct_trusted,
)

__all__ = [
    "InvalidGroupError",
    "check_group_message",
    "group_from_checked",
]


class InvalidGroupError(ValueError):
    """A well-formed message PD would refuse; the text names the field (``priority: ...``)."""


# Enum members by wire number: a dict lookup is ~10x cheaper than calling the IntEnum, and a
# proto3 enum field keeps numbers this version does not know, which must be refused.
_MODES = {int(m): m for m in GroupMode if m is not GroupMode.RAW_MODE}
_ACTIONS = {int(a): a for a in RunawayAction}
_WATCH_TYPES = {int(t): t for t in RunawayWatchType}
_CONSUMPTION_DOUBLES = tuple(
    name for name, info in Consumption.model_fields.items() if info.annotation is float
)
_CONSUMPTION_FIELDS = tuple(Consumption.model_fields)
_RAW_BUCKETS = ("cpu", "io_read", "io_write")
_NON_FINITE_RUN = re.compile(rb"[\xf0-\xff][\x7f\xff](?![\x01\xff])")
_VARINT_MINUS_ONE = b"\xff" * 9 + b"\x01"


def _finite(value: float, where: str) -> None:
    # models.Double refuses NaN and infinities (JSON cannot carry them); protobuf can.
    if not isfinite(value):
        raise InvalidGroupError(f"{where}: must be a finite number, got {value}")


def _check_bucket(msg: pb.TokenBucket, where: str) -> None:
    if msg.HasField("settings"):
        _finite(msg.settings.max_tokens, where + ".settings.max_tokens")
    _finite(msg.tokens, where + ".tokens")


def _check_doubles(msg: pb.ResourceGroup) -> None:
    has = msg.HasField
    if has("r_u_settings"):
        ru = msg.r_u_settings
        if ru.HasField("r_u"):
            _check_bucket(ru.r_u, "r_u_settings.r_u")
    if has("raw_resource_settings"):
        raw = msg.raw_resource_settings
        for name in _RAW_BUCKETS:
            if raw.HasField(name):
                _check_bucket(getattr(raw, name), "raw_resource_settings." + name)
    if has("RUStats"):
        stats = msg.RUStats
        for name in _CONSUMPTION_DOUBLES:
            _finite(getattr(stats, name), "RUStats." + name)


def _may_hold_non_finite(wire: bytes | None) -> bool:
    # A NaN or an infinity is a double whose exponent bits are all ones: its last two bytes on
    # the wire (little-endian) are [0xF0-0xFF][0x7F or 0xFF], and the byte after them, if any,
    # starts the next tag, which is never 0x01 (field 0) or 0xFF (wire type 7): both fail to
    # parse. No such run means no such double, and the per-field check (~10 us of attribute
    # reads) is skipped. A varint -1 (burst_limit's unlimited) is nine 0xFF and a 0x01, which
    # the lookahead excludes; 0.9% of the benchmark's values still match and take the check.
    # The regex costs ~2.8 us over a 193-byte value; two byte tests first (~0.1 us) settle 44%
    # of the benchmark's values, and removing every varint -1 (which never holds a match, and
    # whose removal can only join bytes into a false match, i.e. one more full check) settles
    # another 22%: ~1.2 us on average.
    if wire is None:
        return True
    if 0x7F not in wire and 0xFF not in wire:
        return False
    wire = wire.replace(_VARINT_MINUS_ONE, b"")
    if 0x7F not in wire and 0xFF not in wire:
        return False
    return _NON_FINITE_RUN.search(wire) is not None


def check_group_message(
    msg: pb.ResourceGroup, wire: bytes | None = None
) -> tuple[GroupMode, int | None, tuple[int, int] | None]:
    """Check a parsed message as PD's loader would, building nothing; returns the mode, the
    keyspace id (None: not set) and the V3 identity ``(namespace_id, keyspace_id)`` if field 9
    carried one. ``wire``, the bytes ``msg`` was parsed from, lets the check of every double
    be skipped when no double can be NaN or infinite.

    Raises InvalidGroupError for a value PD refuses: a name of 0 or more than 32 UTF-8 bytes, a
    priority over 16, RawMode or an unknown mode, an unknown runaway action or watch type, a
    NaN or infinite double. A missing ``mode`` reads as Unknown (0), as on the wire.
    """
    name = msg.name
    size = len(name.encode())
    if size == 0 or size > MAX_NAME_BYTES:
        raise InvalidGroupError(f"name: name must be 1-{MAX_NAME_BYTES} bytes, got {size}")
    number: int = msg.mode
    mode = _MODES.get(number)
    if mode is None:
        reason = RAW_MODE_REFUSED if number == GroupMode.RAW_MODE else "unknown GroupMode"
        raise InvalidGroupError(f"mode: {reason} ({number})")
    priority = msg.priority
    if priority > MAX_PRIORITY:
        raise InvalidGroupError(f"priority: priority must be 0-{MAX_PRIORITY}, got {priority}")
    has = msg.HasField
    if _may_hold_non_finite(wire):
        _check_doubles(msg)
    if has("runaway_settings"):
        runaway = msg.runaway_settings
        if runaway.action not in _ACTIONS:
            raise InvalidGroupError(
                f"runaway_settings.action: unknown RunawayAction {runaway.action}"
            )
        if runaway.HasField("watch") and runaway.watch.type not in _WATCH_TYPES:
            raise InvalidGroupError(
                f"runaway_settings.watch.type: unknown RunawayWatchType {runaway.watch.type}"
            )
    # kvproto's KeyspaceIDValue is a oneof: ``value`` (V1/V2, 0 included) or the V3
    # ``keyspace_identity``. An empty message (no case set) reads as value 0, as Go's
    # GetValue() does. kvproto: proto/resource_manager.proto:32-40 (HEAD b6cdca1)
    if not has("keyspace_id"):
        return mode, None, None
    case = msg.keyspace_id
    if case.WhichOneof("keyspace") == "keyspace_identity":
        v3 = case.keyspace_identity
        return mode, v3.keyspace_id, (v3.namespace_id, v3.keyspace_id)
    return mode, case.value, None


def _limits(msg: pb.TokenLimitSettings) -> TokenLimitSettings:
    return construct_trusted(
        TokenLimitSettings,
        {"fill_rate": msg.fill_rate, "burst_limit": msg.burst_limit, "max_tokens": msg.max_tokens},
    )


def _bucket(msg: pb.TokenBucket) -> TokenBucket:
    settings = _limits(msg.settings) if msg.HasField("settings") else None
    return construct_trusted(TokenBucket, {"settings": settings, "tokens": msg.tokens})


def _optional_bucket(parent: Any, name: str) -> TokenBucket | None:
    return _bucket(getattr(parent, name)) if parent.HasField(name) else None


def _ru_settings(msg: pb.GroupRequestUnitSettings) -> GroupRequestUnitSettings:
    return construct_trusted(GroupRequestUnitSettings, {"r_u": _optional_bucket(msg, "r_u")})


def _raw_settings(msg: pb.GroupRawResourceSettings) -> GroupRawResourceSettings:
    return construct_trusted(
        GroupRawResourceSettings, {name: _optional_bucket(msg, name) for name in _RAW_BUCKETS}
    )


def _runaway(msg: pb.RunawaySettings) -> RunawaySettings:
    rule = None
    if msg.HasField("rule"):
        r = msg.rule
        rule = construct_trusted(
            RunawayRule,
            {
                "exec_elapsed_time_ms": r.exec_elapsed_time_ms,
                "processed_keys": r.processed_keys,
                "request_unit": r.request_unit,
            },
        )
    watch = None
    if msg.HasField("watch"):
        w = msg.watch
        watch = construct_trusted(
            RunawayWatch,
            {"lasting_duration_ms": w.lasting_duration_ms, "type": _WATCH_TYPES[w.type]},
        )
    return construct_trusted(
        RunawaySettings,
        {
            "rule": rule,
            "action": _ACTIONS[msg.action],
            "watch": watch,
            "switch_group_name": msg.switch_group_name,
        },
    )


def _background(msg: pb.BackgroundSettings) -> BackgroundSettings:
    return construct_trusted(
        BackgroundSettings,
        {"job_types": tuple(msg.job_types), "utilization_limit": msg.utilization_limit},
    )


def _consumption(msg: pb.Consumption) -> Consumption:
    return construct_trusted(
        Consumption, {name: getattr(msg, name) for name in _CONSUMPTION_FIELDS}
    )


def group_from_checked(
    msg: pb.ResourceGroup,
    wire: bytes | None,
    mode: GroupMode,
    keyspace_id: int | None,
    identity: tuple[int, int] | None,
) -> ResourceGroup:
    """The model of a message ``check_group_message`` accepted (with what it returned)."""
    has = msg.HasField
    fields = {
        "name": msg.name,
        "mode": mode,
        "r_u_settings": _ru_settings(msg.r_u_settings) if has("r_u_settings") else None,
        "raw_resource_settings": (
            _raw_settings(msg.raw_resource_settings) if has("raw_resource_settings") else None
        ),
        "priority": msg.priority,
        "runaway_settings": _runaway(msg.runaway_settings) if has("runaway_settings") else None,
        "background_settings": (
            _background(msg.background_settings) if has("background_settings") else None
        ),
        "ru_stats": _consumption(msg.RUStats) if has("RUStats") else None,
        "keyspace_id": keyspace_id,
    }
    v3 = None
    if identity is not None:
        v3 = construct_trusted(
            KeyspaceIdentity, {"namespace_id": identity[0], "keyspace_id": identity[1]}
        )
    return construct_trusted(ResourceGroup, fields, private={"_wire": wire, "_identity": v3})
