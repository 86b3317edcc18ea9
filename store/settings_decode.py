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

import math
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

__all__ = ["InvalidGroupError", "group_from_message"]


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


def _finite(value: float, where: str) -> float:
    # models.Double refuses NaN and infinities (JSON cannot carry them); protobuf can.
    if not math.isfinite(value):
        raise InvalidGroupError(f"{where}: must be a finite number, got {value}")
    return value


def _limits(msg: pb.TokenLimitSettings, where: str) -> TokenLimitSettings:
    return construct_trusted(
        TokenLimitSettings,
        {
            "fill_rate": msg.fill_rate,
            "burst_limit": msg.burst_limit,
            "max_tokens": _finite(msg.max_tokens, where + ".max_tokens"),
        },
    )


def _bucket(msg: pb.TokenBucket, where: str) -> TokenBucket:
    settings = _limits(msg.settings, where + ".settings") if msg.HasField("settings") else None
    return construct_trusted(
        TokenBucket,
        {"settings": settings, "tokens": _finite(msg.tokens, where + ".tokens")},
    )


def _optional_bucket(parent: Any, name: str, where: str) -> TokenBucket | None:
    return _bucket(getattr(parent, name), f"{where}.{name}") if parent.HasField(name) else None


def _ru_settings(msg: pb.GroupRequestUnitSettings) -> GroupRequestUnitSettings:
    return construct_trusted(
        GroupRequestUnitSettings, {"r_u": _optional_bucket(msg, "r_u", "r_u_settings")}
    )


def _raw_settings(msg: pb.GroupRawResourceSettings) -> GroupRawResourceSettings:
    where = "raw_resource_settings"
    return construct_trusted(
        GroupRawResourceSettings,
        {
            "cpu": _optional_bucket(msg, "cpu", where),
            "io_read": _optional_bucket(msg, "io_read", where),
            "io_write": _optional_bucket(msg, "io_write", where),
        },
    )


def _runaway(msg: pb.RunawaySettings) -> RunawaySettings:
    action = _ACTIONS.get(msg.action)
    if action is None:
        raise InvalidGroupError(f"runaway_settings.action: unknown RunawayAction {msg.action}")
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
        kind = _WATCH_TYPES.get(w.type)
        if kind is None:
            raise InvalidGroupError(
                f"runaway_settings.watch.type: unknown RunawayWatchType {w.type}"
            )
        watch = construct_trusted(
            RunawayWatch, {"lasting_duration_ms": w.lasting_duration_ms, "type": kind}
        )
    return construct_trusted(
        RunawaySettings,
        {
            "rule": rule,
            "action": action,
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
    fields = {name: getattr(msg, name) for name in _CONSUMPTION_FIELDS}
    for name in _CONSUMPTION_DOUBLES:
        _finite(fields[name], "RUStats." + name)
    return construct_trusted(Consumption, fields)


def _keyspace(msg: pb.ResourceGroup) -> tuple[int | None, KeyspaceIdentity | None]:
    # kvproto's KeyspaceIDValue is a oneof: ``value`` (V1/V2, 0 included) or the V3
    # ``keyspace_identity``. An empty message (no case set) reads as value 0, as Go's
    # GetValue() does. kvproto: proto/resource_manager.proto:32-40 (HEAD b6cdca1)
    if not msg.HasField("keyspace_id"):
        return None, None
    case = msg.keyspace_id
    if case.WhichOneof("keyspace") == "keyspace_identity":
        v3 = case.keyspace_identity
        identity = construct_trusted(
            KeyspaceIdentity, {"namespace_id": v3.namespace_id, "keyspace_id": v3.keyspace_id}
        )
        return v3.keyspace_id, identity
    return case.value, None


def group_from_message(msg: pb.ResourceGroup, wire: bytes | None) -> ResourceGroup:
    """The ``ResourceGroup`` model of a parsed message, remembering ``wire`` as its encoding.

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
    keyspace_id, identity = _keyspace(msg)
    fields = {
        "name": name,
        "mode": mode,
        "r_u_settings": _ru_settings(msg.r_u_settings) if has("r_u_settings") else None,
        "raw_resource_settings": (
            _raw_settings(msg.raw_resource_settings) if has("raw_resource_settings") else None
        ),
        "priority": priority,
        "runaway_settings": _runaway(msg.runaway_settings) if has("runaway_settings") else None,
        "background_settings": (
            _background(msg.background_settings) if has("background_settings") else None
        ),
        "ru_stats": _consumption(msg.RUStats) if has("RUStats") else None,
        "keyspace_id": keyspace_id,
    }
    return construct_trusted(ResourceGroup, fields, private={"_wire": wire, "_identity": identity})
