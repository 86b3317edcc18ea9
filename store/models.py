"""PD's resource-manager metadata as frozen pydantic models, validated as PD validates them.

Field names are PD's JSON/protobuf names, so request bodies and stored values map one to one.
Settings models keep the wire bytes they were decoded from (``wire``), so fields this version
does not know survive a read-modify-write (see ``rmwatch.store.codec``).
"""

from __future__ import annotations

import re
from enum import IntEnum
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
)

# Re-exported: ControllerConfig and its types moved to rmwatch.store.controller.
from rmwatch.store.controller import ControllerConfig as ControllerConfig  # noqa: PLC0414
from rmwatch.store.controller import GoDuration as GoDuration  # noqa: PLC0414
from rmwatch.store.controller import RequestUnitConfig as RequestUnitConfig  # noqa: PLC0414
from rmwatch.store.controller import StringBool as StringBool  # noqa: PLC0414
from rmwatch.store.controller import parse_go_duration as parse_go_duration  # noqa: PLC0414
from rmwatch.store.keys import NULL_KEYSPACE_ID

MAX_NAME_BYTES = 32
"""PD checks ``len(name) > 32`` on a Go string: bytes of UTF-8, not characters."""
MAX_PRIORITY = 16
DEFAULT_GROUP_NAME = "default"
DEFAULT_FILL_RATE = 2147483647  # PD's reserved default group: unlimited RU (MaxInt32)
DEFAULT_BURST_LIMIT = -1
DEFAULT_PRIORITY = 8

UINT32_MAX = 0xFFFFFFFF
UINT64_MAX = 2**64 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

Uint32 = Annotated[int, Field(ge=0, le=UINT32_MAX)]
Uint64 = Annotated[int, Field(ge=0, le=UINT64_MAX)]
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]


Double = Annotated[float, Field(allow_inf_nan=False)]
"""A protobuf double / JSON number; NaN and infinities are refused (JSON cannot carry them)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


M = TypeVar("M", bound=BaseModel)

_set = object.__setattr__
_SHAPES: dict[type[BaseModel], tuple[set[str], dict[str, Any] | None]] = {}


def construct_trusted(
    cls: type[M], fields: dict[str, Any], private: dict[str, Any] | None = None
) -> M:
    """A model from values already checked, without pydantic's validation: what
    ``cls.model_construct(**fields)`` builds when ``fields`` holds every field, at half its
    cost (no per-field walk for defaults and aliases), for the settings decoder
    (``rmwatch.store.settings_decode``).

    ``fields`` must hold every field of ``cls`` under its name with the types validation gives
    (enum members, tuples); ``private`` the private attributes, if ``cls`` has any. The
    fields-set, and the empty extras of an ``extra="allow"`` model, are one object shared by
    every instance of ``cls`` (an empty set is 216 bytes and a decoded group holds up to 16
    models): frozen models never change them in place, and ``model_copy`` copies them before
    adding to them.
    """
    shape = _SHAPES.get(cls)
    if shape is None:
        extra: dict[str, Any] | None = {} if cls.model_config.get("extra") == "allow" else None
        shape = _SHAPES[cls] = (set(cls.model_fields), extra)
    obj = cls.__new__(cls)
    _set(obj, "__dict__", fields)
    _set(obj, "__pydantic_fields_set__", shape[0])
    _set(obj, "__pydantic_extra__", shape[1])
    _set(obj, "__pydantic_private__", private)
    return obj


class GroupMode(IntEnum):
    """How a group is limited: by request units or by raw resources."""

    UNKNOWN = 0
    RU_MODE = 1
    RAW_MODE = 2


class RunawayAction(IntEnum):
    """What happens to a runaway query."""

    NONE_ACTION = 0
    DRY_RUN = 1
    COOL_DOWN = 2
    KILL = 3
    SWITCH_GROUP = 4


class RunawayWatchType(IntEnum):
    """How a runaway query is matched later."""

    NONE_WATCH = 0
    EXACT = 1
    SIMILAR = 2
    PLAN = 3


class TokenLimitSettings(_Frozen):
    """Fill rate (tokens/s), burst limit (-1: unlimited) and the cap on stored tokens."""

    fill_rate: Uint64 = 0
    burst_limit: Int64 = 0
    max_tokens: Double = 0.0


class TokenBucket(_Frozen):
    """A token bucket's settings; ``tokens`` is the legacy token count inside settings."""

    settings: TokenLimitSettings | None = None
    tokens: Double = 0.0


class GroupRequestUnitSettings(_Frozen):
    """RU-mode settings."""

    r_u: TokenBucket | None = None


class GroupRawResourceSettings(_Frozen):
    """Raw-mode settings."""

    cpu: TokenBucket | None = None
    io_read: TokenBucket | None = None
    io_write: TokenBucket | None = None


class RunawayRule(_Frozen):
    """When a query counts as runaway."""

    exec_elapsed_time_ms: Uint64 = 0
    processed_keys: Int64 = 0
    request_unit: Int64 = 0


class RunawayWatch(_Frozen):
    """How long and how runaway queries are watched."""

    lasting_duration_ms: Int64 = 0
    type: RunawayWatchType = RunawayWatchType.NONE_WATCH


class RunawaySettings(_Frozen):
    """Runaway-query handling of a group."""

    rule: RunawayRule | None = None
    action: RunawayAction = RunawayAction.NONE_ACTION
    watch: RunawayWatch | None = None
    switch_group_name: str = ""


class BackgroundSettings(_Frozen):
    """Which job types run as background tasks, and their utilization cap (percent)."""

    job_types: tuple[str, ...] = ()
    utilization_limit: Uint64 = 0


class Consumption(_Frozen):
    """RU consumption statistics (kvproto ``Consumption``, fields 1-13); unknown keys kept."""

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)

    r_r_u: Double = 0.0
    w_r_u: Double = 0.0
    read_bytes: Double = 0.0
    write_bytes: Double = 0.0
    total_cpu_time_ms: Double = 0.0
    sql_layer_cpu_time_ms: Double = 0.0
    kv_read_rpc_count: Double = 0.0
    kv_write_rpc_count: Double = 0.0
    read_cross_az_traffic_bytes: Uint64 = 0
    write_cross_az_traffic_bytes: Uint64 = 0
    tikv_r_u_v2: Double = 0.0
    tidb_r_u_v2: Double = 0.0
    tiflash_r_u_v2: Double = 0.0

    def plus(self, other: Consumption) -> Consumption:
        """Field-wise sum, as PD's ``UpdateRUConsumption`` adds a states key's consumption to
        the settings' ``RUStats`` on load (extras of ``self`` are kept, not summed)."""
        summed = {
            name: getattr(self, name) + getattr(other, name) for name in Consumption.model_fields
        }
        return self.model_copy(update=summed)


class KeyspaceIdentity(_Frozen):
    """apipb ``KeyspaceIdentity``: the V3 form of a keyspace id (the second oneof case)."""

    namespace_id: Uint32 = 0
    keyspace_id: Uint32 = 0


KEYSPACE_ID_NOT_LEGACY = "keyspace_id must contain a legacy value"
"""PD's answer to a request body whose ``keyspace_id`` is a V3 ``keyspace_identity``."""


def _unwrap_keyspace_id(value: Any) -> Any:
    # The protobuf JSON form is {"value": N} ({} is a legacy value 0); plain N is accepted too.
    # PD refuses the V3 case in a request body.
    # PD: pkg/mcs/resourcemanager/metadataapi/config_service.go:346-361 (HEAD a186e0c)
    if isinstance(value, dict):
        if set(value) - {"value"}:
            raise ValueError(KEYSPACE_ID_NOT_LEGACY)
        return value.get("value", 0)
    return value


RAW_MODE_REFUSED = "RawMode: no implementation (PD does not implement raw-mode groups)"
"""Why a RawMode group is refused: PD panics with ``no implementation`` on loading one."""


class ResourceGroup(_Frozen):
    """A resource group's settings: what PD stores as protobuf under ``settings/{name}``.

    ``keyspace_id`` None means the null keyspace (legacy keys), as a missing field does in PD.
    """

    name: str
    mode: GroupMode = GroupMode.RU_MODE
    r_u_settings: GroupRequestUnitSettings | None = None
    raw_resource_settings: GroupRawResourceSettings | None = None
    priority: Uint32 = 0
    runaway_settings: RunawaySettings | None = None
    background_settings: BackgroundSettings | None = None
    ru_stats: Consumption | None = Field(default=None, alias="RUStats")
    keyspace_id: Annotated[Uint32 | None, BeforeValidator(_unwrap_keyspace_id)] = None

    _wire: bytes | None = PrivateAttr(default=None)
    _identity: KeyspaceIdentity | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        size = len(name.encode("utf-8"))
        if size == 0 or size > MAX_NAME_BYTES:
            raise ValueError(f"name must be 1-{MAX_NAME_BYTES} bytes, got {size}")
        return name

    @field_validator("mode")
    @classmethod
    def _check_mode(cls, mode: GroupMode) -> GroupMode:
        # PD: pkg/mcs/resourcemanager/server/resource_group.go:266-267 (HEAD a186e0c) panics
        # loading a RawMode group, so one must never be stored, and a stored one is bad data.
        if mode is GroupMode.RAW_MODE:
            raise ValueError(RAW_MODE_REFUSED)
        return mode

    @field_validator("priority")
    @classmethod
    def _check_priority(cls, priority: int) -> int:
        if priority > MAX_PRIORITY:
            raise ValueError(f"priority must be 0-{MAX_PRIORITY}, got {priority}")
        return priority

    def __eq__(self, other: object) -> bool:
        # Two groups with the same fields are equal whatever wire bytes they came from.
        if not isinstance(other, ResourceGroup):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash(tuple(self.__dict__.values()))

    @property
    def effective_keyspace_id(self) -> int:
        """The keyspace id, with None mapped to the null keyspace 0xFFFFFFFF."""
        return NULL_KEYSPACE_ID if self.keyspace_id is None else self.keyspace_id

    @property
    def keyspace_identity(self) -> KeyspaceIdentity | None:
        """The V3 ``keyspace_identity`` a stored value carried in field 9, if it did.

        Such a group's keyspace is the one of its key (PD takes a stored group's keyspace from
        its key path); ``encode_settings`` writes it back as a plain ``value``, as PD does.
        """
        return self._identity

    @property
    def wire(self) -> bytes | None:
        """The protobuf bytes this group was decoded from, if any."""
        return self._wire

    def with_wire(self, wire: bytes | None) -> ResourceGroup:
        """Return a copy remembering ``wire`` as its original encoding."""
        clone = self.model_copy()
        clone._wire = wire
        return clone


def default_group(keyspace_id: int | None = None) -> ResourceGroup:
    """The reserved ``default`` group PD creates in every keyspace."""
    return ResourceGroup(
        name=DEFAULT_GROUP_NAME,
        mode=GroupMode.RU_MODE,
        r_u_settings=GroupRequestUnitSettings(
            r_u=TokenBucket(
                settings=TokenLimitSettings(
                    fill_rate=DEFAULT_FILL_RATE, burst_limit=DEFAULT_BURST_LIMIT
                )
            )
        ),
        priority=DEFAULT_PRIORITY,
        keyspace_id=None if keyspace_id == NULL_KEYSPACE_ID else keyspace_id,
    )


class TokenState(_Frozen):
    """A bucket's running state. ``last_update`` stays the RFC3339 text Go wrote (ns precision)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    tokens: Double | None = None
    last_update: str | None = None
    initialized: bool | None = None

    @field_validator("last_update")
    @classmethod
    def _check_time(cls, value: str | None) -> str | None:
        if value is not None and not _RFC3339.match(value):
            raise ValueError(f"last_update {value!r} is not RFC3339")
        return value


_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})\Z", re.ASCII
)


class GroupStates(_Frozen):
    """A group's running states (JSON under ``states/{name}``); unknown keys are kept."""

    model_config = ConfigDict(frozen=True, extra="allow")

    r_u: TokenState | None = None
    ru_consumption: Consumption | None = None


class ServiceLimit(_Frozen):
    """A keyspace's service limit (RU/s); stored as a bare JSON number."""

    keyspace_id: Uint32 = NULL_KEYSPACE_ID
    service_limit: Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
