"""Resource groups between rmwatch's models and PD's gRPC messages (``resource_manager``).

PD answers Get/List with ``ResourceGroup.IntoProtoResourceGroup`` (tikv/pd
pkg/mcs/resourcemanager/server/resource_group.go:310): name, mode, priority, the RU bucket with
its settings and the *state's* tokens, runaway and background settings, ``keyspace_id`` always
set to the keyspace asked for, and ``RUStats`` only when asked ``with_ru_stats``. Fields PD does
not carry (raw-mode settings of an RU group, unknown fields) are not sent.
"""

from __future__ import annotations

from typing import Any

from rmwatch.errors import group_not_found
from rmwatch.store._pb import resource_manager_pb2 as pb
from rmwatch.store.codec import decode_settings, encode_settings
from rmwatch.store.keys import NULL_KEYSPACE_ID
from rmwatch.store.models import Consumption, GroupMode, GroupStates, ResourceGroup
from rmwatch.store.stored_group import StoredGroup


def request_keyspace(request: Any) -> int:
    """PD's ``ExtractKeyspaceID`` (pkg/mcs/resourcemanager/server/utils.go:24): an unset
    ``keyspace_id`` is the null keyspace; a set one is its ``value`` (0 for a V3 identity)."""
    if not request.HasField("keyspace_id"):
        return NULL_KEYSPACE_ID
    return int(request.keyspace_id.value)


def not_exists_message(name: str) -> str:
    """PD's error text for a missing group, as a Go client sees it over gRPC
    (``rmwatch.errors.group_not_found``)."""
    return str(group_not_found(name))


def group_to_pb(
    group: ResourceGroup | StoredGroup,
    states: GroupStates | None,
    keyspace_id: int,
    *,
    with_stats: bool,
) -> pb.ResourceGroup:
    """A stored group as PD's Get/List answer it over gRPC."""
    msg = pb.ResourceGroup()
    wire = group.wire if isinstance(group, StoredGroup) else group.wire or encode_settings(group)
    msg.ParseFromString(wire)
    msg.DiscardUnknownFields()
    if msg.mode == pb.RUMode or group.mode is GroupMode.RU_MODE:
        msg.ClearField("raw_resource_settings")
    if msg.HasField("r_u_settings") and msg.r_u_settings.HasField("r_u"):
        state = states.r_u if states is not None else None
        tokens = state.tokens if state is not None and state.tokens is not None else 0.0
        msg.r_u_settings.r_u.tokens = tokens
    msg.ClearField("RUStats")
    if with_stats:
        consumption = states.ru_consumption if states is not None else None
        if consumption is None:
            consumption = group.ru_stats
        msg.RUStats.CopyFrom(consumption_to_pb(consumption))
        msg.RUStats.SetInParent()
    msg.keyspace_id.value = keyspace_id
    return msg


def consumption_to_pb(consumption: Consumption | None) -> pb.Consumption:
    """RU consumption (empty when none was recorded)."""
    msg = pb.Consumption()
    if consumption is not None:
        for name, value in consumption.model_dump().items():
            if value and name in pb.Consumption.DESCRIPTOR.fields_by_name:
                setattr(msg, name, value)
    return msg


def group_from_pb(message: pb.ResourceGroup, keyspace_id: int | None) -> ResourceGroup:
    """A group from an Add/Modify request, validated as the HTTP body is (settings only: the
    request's tokens, stats and unknown fields are not kept). Raises DecodeError."""
    group = decode_settings(f"request group {message.name!r}", message.SerializeToString())
    if keyspace_id is not None:
        group = group.model_copy(update={"keyspace_id": keyspace_id})
    return group.with_wire(None)


__all__ = [
    "consumption_to_pb",
    "group_from_pb",
    "group_to_pb",
    "not_exists_message",
    "request_keyspace",
]
