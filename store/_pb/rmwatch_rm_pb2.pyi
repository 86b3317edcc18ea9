from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GroupMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    Unknown: _ClassVar[GroupMode]
    RUMode: _ClassVar[GroupMode]
    RawMode: _ClassVar[GroupMode]

class RunawayAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NoneAction: _ClassVar[RunawayAction]
    DryRun: _ClassVar[RunawayAction]
    CoolDown: _ClassVar[RunawayAction]
    Kill: _ClassVar[RunawayAction]
    SwitchGroup: _ClassVar[RunawayAction]

class RunawayWatchType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NoneWatch: _ClassVar[RunawayWatchType]
    Exact: _ClassVar[RunawayWatchType]
    Similar: _ClassVar[RunawayWatchType]
    Plan: _ClassVar[RunawayWatchType]
Unknown: GroupMode
RUMode: GroupMode
RawMode: GroupMode
NoneAction: RunawayAction
DryRun: RunawayAction
CoolDown: RunawayAction
Kill: RunawayAction
SwitchGroup: RunawayAction
NoneWatch: RunawayWatchType
Exact: RunawayWatchType
Similar: RunawayWatchType
Plan: RunawayWatchType

class TokenLimitSettings(_message.Message):
    __slots__ = ("fill_rate", "burst_limit", "max_tokens")
    FILL_RATE_FIELD_NUMBER: _ClassVar[int]
    BURST_LIMIT_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    fill_rate: int
    burst_limit: int
    max_tokens: float
    def __init__(self, fill_rate: _Optional[int] = ..., burst_limit: _Optional[int] = ..., max_tokens: _Optional[float] = ...) -> None: ...

class TokenBucket(_message.Message):
    __slots__ = ("settings", "tokens")
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    settings: TokenLimitSettings
    tokens: float
    def __init__(self, settings: _Optional[_Union[TokenLimitSettings, _Mapping]] = ..., tokens: _Optional[float] = ...) -> None: ...

class GroupRequestUnitSettings(_message.Message):
    __slots__ = ("r_u",)
    R_U_FIELD_NUMBER: _ClassVar[int]
    r_u: TokenBucket
    def __init__(self, r_u: _Optional[_Union[TokenBucket, _Mapping]] = ...) -> None: ...

class GroupRawResourceSettings(_message.Message):
    __slots__ = ("cpu", "io_read", "io_write")
    CPU_FIELD_NUMBER: _ClassVar[int]
    IO_READ_FIELD_NUMBER: _ClassVar[int]
    IO_WRITE_FIELD_NUMBER: _ClassVar[int]
    cpu: TokenBucket
    io_read: TokenBucket
    io_write: TokenBucket
    def __init__(self, cpu: _Optional[_Union[TokenBucket, _Mapping]] = ..., io_read: _Optional[_Union[TokenBucket, _Mapping]] = ..., io_write: _Optional[_Union[TokenBucket, _Mapping]] = ...) -> None: ...

class RunawayRule(_message.Message):
    __slots__ = ("exec_elapsed_time_ms", "processed_keys", "request_unit")
    EXEC_ELAPSED_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_KEYS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_UNIT_FIELD_NUMBER: _ClassVar[int]
    exec_elapsed_time_ms: int
    processed_keys: int
    request_unit: int
    def __init__(self, exec_elapsed_time_ms: _Optional[int] = ..., processed_keys: _Optional[int] = ..., request_unit: _Optional[int] = ...) -> None: ...

class RunawayWatch(_message.Message):
    __slots__ = ("lasting_duration_ms", "type")
    LASTING_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    lasting_duration_ms: int
    type: RunawayWatchType
    def __init__(self, lasting_duration_ms: _Optional[int] = ..., type: _Optional[_Union[RunawayWatchType, str]] = ...) -> None: ...

class RunawaySettings(_message.Message):
    __slots__ = ("rule", "action", "watch", "switch_group_name")
    RULE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    WATCH_FIELD_NUMBER: _ClassVar[int]
    SWITCH_GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    rule: RunawayRule
    action: RunawayAction
    watch: RunawayWatch
    switch_group_name: str
    def __init__(self, rule: _Optional[_Union[RunawayRule, _Mapping]] = ..., action: _Optional[_Union[RunawayAction, str]] = ..., watch: _Optional[_Union[RunawayWatch, _Mapping]] = ..., switch_group_name: _Optional[str] = ...) -> None: ...

class BackgroundSettings(_message.Message):
    __slots__ = ("job_types", "utilization_limit")
    JOB_TYPES_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_LIMIT_FIELD_NUMBER: _ClassVar[int]
    job_types: _containers.RepeatedScalarFieldContainer[str]
    utilization_limit: int
    def __init__(self, job_types: _Optional[_Iterable[str]] = ..., utilization_limit: _Optional[int] = ...) -> None: ...

class Consumption(_message.Message):
    __slots__ = ("r_r_u", "w_r_u", "read_bytes", "write_bytes", "total_cpu_time_ms", "sql_layer_cpu_time_ms", "kv_read_rpc_count", "kv_write_rpc_count")
    R_R_U_FIELD_NUMBER: _ClassVar[int]
    W_R_U_FIELD_NUMBER: _ClassVar[int]
    READ_BYTES_FIELD_NUMBER: _ClassVar[int]
    WRITE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CPU_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    SQL_LAYER_CPU_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    KV_READ_RPC_COUNT_FIELD_NUMBER: _ClassVar[int]
    KV_WRITE_RPC_COUNT_FIELD_NUMBER: _ClassVar[int]
    r_r_u: float
    w_r_u: float
    read_bytes: float
    write_bytes: float
    total_cpu_time_ms: float
    sql_layer_cpu_time_ms: float
    kv_read_rpc_count: float
    kv_write_rpc_count: float
    def __init__(self, r_r_u: _Optional[float] = ..., w_r_u: _Optional[float] = ..., read_bytes: _Optional[float] = ..., write_bytes: _Optional[float] = ..., total_cpu_time_ms: _Optional[float] = ..., sql_layer_cpu_time_ms: _Optional[float] = ..., kv_read_rpc_count: _Optional[float] = ..., kv_write_rpc_count: _Optional[float] = ...) -> None: ...

class KeyspaceIDValue(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: int
    def __init__(self, value: _Optional[int] = ...) -> None: ...

class ResourceGroup(_message.Message):
    __slots__ = ("name", "mode", "r_u_settings", "raw_resource_settings", "priority", "runaway_settings", "background_settings", "RUStats", "keyspace_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    R_U_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    RAW_RESOURCE_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    RUNAWAY_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    RUSTATS_FIELD_NUMBER: _ClassVar[int]
    KEYSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    mode: GroupMode
    r_u_settings: GroupRequestUnitSettings
    raw_resource_settings: GroupRawResourceSettings
    priority: int
    runaway_settings: RunawaySettings
    background_settings: BackgroundSettings
    RUStats: Consumption
    keyspace_id: KeyspaceIDValue
    def __init__(self, name: _Optional[str] = ..., mode: _Optional[_Union[GroupMode, str]] = ..., r_u_settings: _Optional[_Union[GroupRequestUnitSettings, _Mapping]] = ..., raw_resource_settings: _Optional[_Union[GroupRawResourceSettings, _Mapping]] = ..., priority: _Optional[int] = ..., runaway_settings: _Optional[_Union[RunawaySettings, _Mapping]] = ..., background_settings: _Optional[_Union[BackgroundSettings, _Mapping]] = ..., RUStats: _Optional[_Union[Consumption, _Mapping]] = ..., keyspace_id: _Optional[_Union[KeyspaceIDValue, _Mapping]] = ...) -> None: ...
