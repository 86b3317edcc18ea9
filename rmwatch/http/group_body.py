"""A resource group from a POST/PUT body, decoded as PD's ``decodeResourceGroup`` decodes it.

PD (pkg/mcs/resourcemanager/metadataapi/config_service.go:179, HEAD a186e0c):

1. ``keyspace_id`` (also spelled ``keyspaceId``, any case) is split off: it became a protobuf
   oneof that encoding/json cannot decode. Given twice: ``keyspace_id must be set only once``.
2. The rest is decoded with encoding/json (``rmwatch.http.gojson``: keys case-insensitive,
   unknown fields ignored).
3. If that fails, the whole body is decoded as strict protobuf JSON (enum names such as
   ``"RU_MODE"``, quoted 64-bit integers, lowerCamelCase names; unknown fields refused), and
   both errors are reported: ``invalid resource group JSON: legacy JSON: ...; protobuf JSON: ...``.
4. The oneof must carry ``value`` (``{}`` is the legacy form of value 0); a bare
   ``keyspace_identity`` is refused: ``keyspace_id must contain a legacy value``.

A bare number for ``keyspace_id`` is an rmwatch extension (PD answers 400).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from pydantic import ValidationError

from rmwatch.errors import DecodeError, InvalidInputError
from rmwatch.http import gojson
from rmwatch.store import codec
from rmwatch.store._pb import resource_manager_pb2 as pb
from rmwatch.store.models import ResourceGroup

_KEYSPACE_NAMES = ("keyspace_id", "keyspaceid")


def _is_keyspace_field(name: str) -> bool:
    return name.casefold() in _KEYSPACE_NAMES


def _keyspace_value(raw: Any) -> int | None:
    """The keyspace id a split-off ``keyspace_id`` carries (steps 1 and 4 of the module doc)."""
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw  # rmwatch extension: a bare number
    if not isinstance(raw, dict):
        raise InvalidInputError("keyspace_id", 'must be an object {"value": id}')
    value: Any = None
    seen: set[str] = set()
    keys = raw.keys_seen if isinstance(raw, gojson.Pairs) else list(raw)
    for key in keys:
        name = key.casefold()
        if name in ("keyspace_identity", "keyspaceidentity"):
            name = "keyspace_identity"
        if name in ("value", "keyspace_identity"):
            if name in seen:
                raise InvalidInputError("keyspace_id", f"keyspace_id {name} must be set only once",
                                        pd_text=True)  # fmt: skip
            seen.add(name)
            if name == "value":
                value = raw[key]
    if "value" not in seen:
        if seen:  # keyspace_identity alone (config_service.go:360)
            raise InvalidInputError("keyspace_id", "keyspace_id must contain a legacy value",
                                    pd_text=True)  # fmt: skip
        return 0  # {}: the legacy encoding of value 0 (config_service.go:354)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)  # protobuf JSON quotes 64-bit ints, and accepts quoted uint32
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        raise InvalidInputError("keyspace_id.value", f"{value!r} is not a uint32")
    return value


def _split(data: dict[str, Any]) -> tuple[bool, Any]:
    keys = data.keys_seen if isinstance(data, gojson.Pairs) else list(data)
    found = [k for k in keys if _is_keyspace_field(k)]
    if len(found) > 1:
        raise InvalidInputError("keyspace_id", "keyspace_id must be set only once", pd_text=True)
    return (True, data[found[0]]) if found else (False, None)


_PD_INVALID_GROUP = "[PD:resourcemanager:ErrInvalidGroup]invalid group settings, please check"


def _validate(fields: dict[str, Any]) -> ResourceGroup:
    try:
        return ResourceGroup.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        if where in ("name", "priority"):
            # PD answers 500 with errs.ErrInvalidGroup (keyspace_manager.go:118); rmwatch
            # answers 400 (the client's mistake) with PD's words, then the detail.
            what = "the group name" if where == "name" else "the group priority"
            raise InvalidInputError(where, f"{_PD_INVALID_GROUP} {what} ({err['msg']})",
                                    pd_text=True) from None  # fmt: skip
        # pydantic prefixes a validator's own ValueError with "Value error, ": the reason alone
        # reads better and is what the writer's library path says too.
        raise InvalidInputError(where, err["msg"].removeprefix("Value error, ")) from None


def _from_protobuf_json(body: bytes, legacy: InvalidInputError) -> ResourceGroup:
    message = pb.ResourceGroup()
    try:
        json_format.Parse(body, message)
    except json_format.ParseError as exc:
        raise InvalidInputError(
            "body",
            f"invalid resource group JSON: legacy JSON: {legacy}; protobuf JSON: {exc}",
            pd_text=True,  # config_service.go:197
        ) from None
    try:
        return codec.decode_settings("body", message.SerializeToString())
    except DecodeError as exc:
        raise InvalidInputError("body", exc.reason) from None


def parse_group_body(body: bytes, keyspace: int | None = None) -> ResourceGroup:
    """The group in a POST/PUT body (see the module doc).

    Args:
        body: the request body.
        keyspace: the keyspace the request names (``keyspace_name``); it overrides the body's.

    Raises:
        InvalidInputError: the body is not a group PD would take (400, naming the problem).
    """
    data = gojson.loads(body)
    if data is None:
        data = gojson.Pairs()
        data.keys_seen = []
    if not isinstance(data, dict):
        raise InvalidInputError("body", "must be a JSON object (a resource group)")
    has_keyspace, raw_keyspace = _split(data)
    try:
        fields = gojson.go_fields(data, ResourceGroup, skip=frozenset({"keyspace_id"}))
    except InvalidInputError as exc:
        group = _from_protobuf_json(body, exc)
    else:
        if has_keyspace:
            fields["keyspace_id"] = _keyspace_value(raw_keyspace)
        group = _validate(fields)
    if keyspace is not None:
        group = group.model_copy(update={"keyspace_id": keyspace})
    return group


__all__ = ["parse_group_body"]
