"""Value encodings, as PD writes them: protobuf settings, JSON states and controller, bare-float
service limits. ``decode_value`` is the one entry point for a (key, bytes) pair from etcd.

Unknown-field survival: ``encode_settings`` starts from the bytes a group was decoded from and
applies the model's known fields onto that message in place, so unknown fields, top-level or
nested in a known sub-message, are re-emitted untouched.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError as _PbDecodeError
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet
from pydantic import ValidationError

from rmwatch.errors import DecodeError
from rmwatch.store import go_json
from rmwatch.store._pb import resource_manager_pb2 as pb
from rmwatch.store.keys import NULL_KEYSPACE_ID, KeyKind, ParsedKey
from rmwatch.store.models import (
    ControllerConfig,
    GroupStates,
    ResourceGroup,
    ServiceLimit,
)
from rmwatch.store.settings_decode import InvalidGroupError
from rmwatch.store.stored_group import StoredGroup, checked_group

Value = ResourceGroup | GroupStates | ControllerConfig | ServiceLimit
"""What a metadata key decodes to."""

StoredValue = StoredGroup | GroupStates | ControllerConfig | ServiceLimit
"""What the replica keeps of a metadata key: a group as its lean ``StoredGroup``."""

_MESSAGE = FieldDescriptor.TYPE_MESSAGE


def _is_repeated(field: Any) -> bool:
    # protobuf >= 6.31 has `is_repeated` (and 7 dropped `label`); older ones only `label`.
    flag = getattr(field, "is_repeated", None)
    if flag is not None:
        return bool(flag)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


def _known_in_unknown(msg: Message) -> str | None:
    # A declared field that arrived with the wrong wire type lands among the unknown fields.
    # PD's decoder rejects such a value ("wrong wireType"); keeping it would make us re-emit
    # the field twice, with two wire types, on the next encode.
    declared = msg.DESCRIPTOR.fields_by_number
    unknowns = UnknownFieldSet(msg)
    for index in range(len(unknowns)):
        unknown = unknowns[index]
        if unknown.field_number in declared:
            name = declared[unknown.field_number].name
            return f"field {name} ({unknown.field_number}) has wire type {unknown.wire_type}"
    for field in msg.DESCRIPTOR.fields:
        if field.type == _MESSAGE and msg.HasField(field.name):
            found = _known_in_unknown(getattr(msg, field.name))
            if found:
                return f"{field.name}.{found}"
    return None


# ---- settings (protobuf) --------------------------------------------------------------------


def _drop_unknown_fields(msg: Message, data: bytes) -> bool:
    """Drop ``msg``'s unknown fields; True when it had any. Unknown fields count in the encoded
    size: if the message without them is as long as the input, there were none anywhere (the
    common case, ~1 us). A non-canonical input also differs in size; it only sends the caller
    down the exact (slower) check."""
    msg.DiscardUnknownFields()
    return msg.ByteSize() != len(data)


def _apply(msg: Message, data: dict[str, Any]) -> None:
    # Set known fields in place; untouched bytes of unknown fields stay in `msg`.
    for field in msg.DESCRIPTOR.fields:
        value = data.get(field.name)
        if field.type == _MESSAGE:
            if value is None:
                msg.ClearField(field.name)
            else:
                _apply(getattr(msg, field.name), value)
                # An all-default sub-message must still be emitted (present-but-empty).
                getattr(msg, field.name).SetInParent()
        elif _is_repeated(field):
            container = getattr(msg, field.name)
            del container[:]
            container.extend(value or ())
        elif value is None:
            msg.ClearField(field.name)
        else:
            setattr(msg, field.name, int(value) if isinstance(value, int) else value)


def decode_settings(key: str, data: bytes) -> ResourceGroup:
    """Decode a ``ResourceGroup`` protobuf; raise DecodeError naming ``key`` if it does not
    decode or PD would refuse it. Checked and built straight from the parsed message
    (``rmwatch.store.settings_decode``): no pydantic validation per stored value."""
    return decode_stored_group(key, data).model()


def encode_settings(group: ResourceGroup, base: bytes | None = None) -> bytes:
    """Encode settings as protobuf, on top of ``base`` (default: the group's own wire bytes)."""
    msg = pb.ResourceGroup()
    original = base if base is not None else group.wire
    if original:
        msg.ParseFromString(original)
    data = group.model_dump(mode="python", by_alias=True)
    # Always the ``value`` case, 0 included (``4a 02 08 00``): PD writes its keyspace this way,
    # replacing a V3 ``keyspace_identity``. A None keyspace stays absent (legacy groups).
    # PD: pkg/mcs/resourcemanager/server/resource_group.go:325 (HEAD a186e0c)
    data["keyspace_id"] = None if group.keyspace_id is None else {"value": group.keyspace_id}
    _apply(msg, data)  # setting ``value`` (0 too) selects its oneof case, clearing the other
    return msg.SerializeToString(deterministic=True)


# ---- states, controller, service limit (JSON) -----------------------------------------------


def _load_json(key: str, data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, int digits
        raise DecodeError(key, f"not JSON: {exc}") from None


def decode_states(key: str, data: bytes) -> GroupStates:
    """Decode a group's states JSON."""
    try:
        return GroupStates.model_validate(_load_json(key, data))
    except ValidationError as exc:
        raise DecodeError(key, _first_error(exc)) from None


def encode_states(states: GroupStates) -> bytes:
    """Encode states as PD does: empty fields omitted."""
    return _dumps(states.model_dump(mode="json", exclude_none=True))


def decode_controller(key: str, data: bytes) -> ControllerConfig:
    """Decode the controller config JSON; missing keys take PD's defaults, unknown keys stay."""
    try:
        return ControllerConfig.model_validate(_load_json(key, data))
    except ValidationError as exc:
        raise DecodeError(key, _first_error(exc)) from None


def encode_controller(config: ControllerConfig) -> bytes:
    """Encode the controller config as PD stores it (json.Marshal of its ControllerConfig):
    hyphenated keys, floats as Go writes them (``1``, ``0.0000152587890625``)."""
    return go_json.marshal(config.to_json_dict())


def decode_service_limit(key: str, data: bytes, keyspace_id: int) -> ServiceLimit:
    """Decode a bare JSON number service limit."""
    value = _load_json(key, data)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(key, f"service limit must be a JSON number, got {value!r}")
    try:
        return ServiceLimit(keyspace_id=keyspace_id, service_limit=value)
    except ValidationError as exc:
        raise DecodeError(key, _first_error(exc)) from None


def encode_service_limit(limit: ServiceLimit | float) -> bytes:
    """Encode a service limit as Go's encoding/json writes a float64 (``100``, ``0.5``)."""
    value = limit.service_limit if isinstance(limit, ServiceLimit) else float(limit)
    return go_json.format_go_float(value).encode()


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "value"
    return f"{where}: {err['msg']}"


# ---- one entry point for the replica and the writer -----------------------------------------


def decode_stored_group(key: str, data: bytes) -> StoredGroup:
    """A stored ``ResourceGroup`` checked in full and kept lean (``StoredGroup``); raises
    DecodeError naming ``key`` if it does not decode or PD would refuse it."""
    try:
        msg = pb.ResourceGroup.FromString(data)
    except (_PbDecodeError, RuntimeError, ValueError) as exc:
        raise DecodeError(key, f"not a ResourceGroup protobuf: {exc}") from None
    # The message is only read for the checks below (the bytes keep any unknown fields), so
    # its unknown fields can go; the rare value that had some is parsed again to look at them.
    if _drop_unknown_fields(msg, data):
        wrong = _known_in_unknown(pb.ResourceGroup.FromString(data))
        if wrong:
            raise DecodeError(key, f"not a ResourceGroup protobuf: {wrong}")
    try:
        return checked_group(msg, bytes(data))  # no copy when ``data`` is bytes
    except InvalidGroupError as exc:
        raise DecodeError(key, str(exc)) from None


def stored_group(group: ResourceGroup) -> StoredGroup:
    """The stored form of a model, as ``encode_settings`` writes it (its keyspace as the model
    shows it)."""
    stored = decode_stored_group("model", encode_settings(group))
    return stored if stored.keyspace_id == group.keyspace_id else stored.in_keyspace(
        group.keyspace_id)  # fmt: skip


def _group_for_key(key: str, parsed: ParsedKey, group: StoredGroup) -> StoredGroup:
    # A stored group must agree with its key: the name, and the keyspace unless field 9 holds a
    # V3 identity, in which case PD takes the keyspace from the key path.
    # PD: pkg/storage/endpoint/resource_group.go:58-73 (HEAD a186e0c)
    if group.name != parsed.name:
        raise DecodeError(key, f"name {group.name!r} differs from the key's {parsed.name!r}")
    if group.keyspace_identity is not None:
        keyspace = None if parsed.keyspace_id == NULL_KEYSPACE_ID else parsed.keyspace_id
        return group if group.keyspace_id == keyspace else group.in_keyspace(keyspace)
    if group.effective_keyspace_id != parsed.keyspace_id and group.keyspace_id is not None:
        raise DecodeError(
            key, f"keyspace_id {group.keyspace_id} differs from the key's {parsed.keyspace_id}"
        )
    return group


def decode_stored(key: str, parsed: ParsedKey, data: bytes) -> StoredValue:
    """Decode the value of a parsed key as the replica keeps it (a group as ``StoredGroup``),
    checking it agrees with its key (name, keyspace)."""
    if parsed.kind is KeyKind.SETTINGS:
        return _group_for_key(key, parsed, decode_stored_group(key, data))
    if parsed.kind is KeyKind.STATES:
        return decode_states(key, data)
    if parsed.kind is KeyKind.CONTROLLER:
        return decode_controller(key, data)
    return decode_service_limit(key, data, parsed.keyspace_id)


def decode_value(key: str, parsed: ParsedKey, data: bytes) -> Value:
    """``decode_stored`` with a group as its full ``ResourceGroup`` (for read-modify-write)."""
    value = decode_stored(key, parsed, data)
    return value.model() if isinstance(value, StoredGroup) else value


__all__ = [
    "NULL_KEYSPACE_ID",
    "StoredValue",
    "Value",
    "decode_controller",
    "decode_service_limit",
    "decode_settings",
    "decode_states",
    "decode_stored",
    "decode_stored_group",
    "decode_value",
    "encode_controller",
    "encode_service_limit",
    "encode_settings",
    "encode_states",
    "stored_group",
]
