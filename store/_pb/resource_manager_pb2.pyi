# Generated from store/proto/resource_manager.proto by scripts/gen_proto. Do not edit.
from rmwatch.store._pb import apipb_pb2 as _apipb_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RequestUnitType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RU: _ClassVar[RequestUnitType]

class RawResourceType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CPU: _ClassVar[RawResourceType]
    IOReadFlow: _ClassVar[RawResourceType]
    IOWriteFlow: _ClassVar[RawResourceType]

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
RU: RequestUnitType
CPU: RawResourceType
IOReadFlow: RawResourceType
IOWriteFlow: RawResourceType
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

class KeyspaceIDValue(_message.Message):
    __slots__ = ("value", "keyspace_identity")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    KEYSPACE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    value: int
    keyspace_identity: _apipb_pb2.KeyspaceIdentity
    def __init__(self, value: _Optional[int] = ..., keyspace_identity: _Optional[_Union[_apipb_pb2.KeyspaceIdentity, _Mapping]] = ...) -> None: ...

class ListResourceGroupsRequest(_message.Message):
    __slots__ = ("with_ru_stats", "keyspace_id")
    WITH_RU_STATS_FIELD_NUMBER: _ClassVar[int]
    KEYSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    with_ru_stats: bool
    keyspace_id: KeyspaceIDValue
    def __init__(self, with_ru_stats: _Optional[bool] = ..., keyspace_id: _Optional[_Union[KeyspaceIDValue, _Mapping]] = ...) -> None: ...

class ListResourceGroupsResponse(_message.Message):
    __slots__ = ("error", "groups")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    error: Error
    groups: _containers.RepeatedCompositeFieldContainer[ResourceGroup]
    def __init__(self, error: _Optional[_Union[Error, _Mapping]] = ..., groups: _Optional[_Iterable[_Union[ResourceGroup, _Mapping]]] = ...) -> None: ...

class GetResourceGroupRequest(_message.Message):
    __slots__ = ("resource_group_name", "with_ru_stats", "keyspace_id")
    RESOURCE_GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    WITH_RU_STATS_FIELD_NUMBER: _ClassVar[int]
    KEYSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    resource_group_name: str
    with_ru_stats: bool
    keyspace_id: KeyspaceIDValue
    def __init__(self, resource_group_name: _Optional[str] = ..., with_ru_stats: _Optional[bool] = ..., keyspace_id: _Optional[_Union[KeyspaceIDValue, _Mapping]] = ...) -> None: ...

class GetResourceGroupResponse(_message.Message):
    __slots__ = ("error", "group")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    error: Error
    group: ResourceGroup
    def __init__(self, error: _Optional[_Union[Error, _Mapping]] = ..., group: _Optional[_Union[ResourceGroup, _Mapping]] = ...) -> None: ...

class DeleteResourceGroupRequest(_message.Message):
    __slots__ = ("resource_group_name", "keyspace_id")
    RESOURCE_GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    KEYSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    resource_group_name: str
    keyspace_id: KeyspaceIDValue
    def __init__(self, resource_group_name: _Optional[str] = ..., keyspace_id: _Optional[_Union[KeyspaceIDValue, _Mapping]] = ...) -> None: ...

class DeleteResourceGroupResponse(_message.Message):
    __slots__ = ("error", "body")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    error: Error
    body: str
    def __init__(self, error: _Optional[_Union[Error, _Mapping]] = ..., body: _Optional[str] = ...) -> None: ...

class PutResourceGroupRequest(_message.Message):
    __slots__ = ("group",)
    GROUP_FIELD_NUMBER: _ClassVar[int]
    group: ResourceGroup
    def __init__(self, group: _Optional[_Union[ResourceGroup, _Mapping]] = ...) -> None: ...

class PutResourceGroupResponse(_message.Message):
    __slots__ = ("error", "body")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    error: Error
    body: str
    def __init__(self, error: _Optional[_Union[Error, _Mapping]] = ..., body: _Optional[str] = ...) -> None: ...

class TokenBucketsRequest(_message.Message):
    __slots__ = ("requests", "target_request_period_ms", "client_unique_id")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    TARGET_REQUEST_PERIOD_MS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_UNIQUE_ID_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[TokenBucketRequest]
    target_request_period_ms: int
    client_unique_id: int
    def __init__(self, requests: _Optional[_Iterable[_Union[TokenBucketRequest, _Mapping]]] = ..., target_request_period_ms: _Optional[int] = ..., client_unique_id: _Optional[int] = ...) -> None: ...

class TokenBucketRequest(_message.Message):
    __slots__ = ("resource_group_name", "ru_items", "raw_resource_items", "consumption_since_last_request", "is_background", "is_tiflash", "keyspace_id")
    class RequestRU(_message.Message):
        __slots__ = ("request_r_u",)
        REQUEST_R_U_FIELD_NUMBER: _ClassVar[int]
        request_r_u: _containers.RepeatedCompositeFieldContainer[RequestUnitItem]
        def __init__(self, request_r_u: _Optional[_Iterable[_Union[RequestUnitItem, _Mapping]]] = ...) -> None: ...
    class RequestRawResource(_message.Message):
        __slots__ = ("request_raw_resource",)
        REQUEST_RAW_RESOURCE_FIELD_NUMBER: _ClassVar[int]
        request_raw_resource: _containers.RepeatedCompositeFieldContainer[RawResourceItem]
        def __init__(self, request_raw_resource: _Optional[_Iterable[_Union[RawResourceItem, _Mapping]]] = ...) -> None: ...
    RESOURCE_GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    RU_ITEMS_FIELD_NUMBER: _ClassVar[int]
    RAW_RESOURCE_ITEMS_FIELD_NUMBER: _ClassVar[int]
    CONSUMPTION_SINCE_LAST_REQUEST_FIELD_NUMBER: _ClassVar[int]
    IS_BACKGROUND_FIELD_NUMBER: _ClassVar[int]
    IS_TIFLASH_FIELD_NUMBER: _ClassVar[int]
    KEYSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    resource_group_name: str
    ru_items: TokenBucketRequest.RequestRU
    raw_resource_items: TokenBucketRequest.RequestRawResource
    consumption_since_last_request: Consumption
    is_background: bool
    is_tiflash: bool
    keyspace_id: KeyspaceIDValue
    def __init__(self, resource_group_name: _Optional[str] = ..., ru_items: _Optional[_Union[TokenBucketRequest.RequestRU, _Mapping]] = ..., raw_resource_items: _Optional[_Union[TokenBucketRequest.RequestRawResource, _Mapping]] = ..., consumption_since_last_request: _Optional[_Union[Consumption, _Mapping]] = ..., is_background: _Optional[bool] = ..., is_tiflash: _Optional[bool] = ..., keyspace_id: _Optional[_Union[KeyspaceIDValue, _Mapping]] = ...) -> None: ...

class TokenBucketsResponse(_message.Message):
    __slots__ = ("error", "responses")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    error: Error
    responses: _containers.RepeatedCompositeFieldContainer[TokenBucketResponse]
    def __init__(self, error: _Optional[_Union[Error, _Mapping]] = ..., responses: _Optional[_Iterable[_Union[TokenBucketResponse, _Mapping]]] = ...) -> None: ...

class TokenBucketResponse(_message.Message):
    __slots__ = ("resource_group_name", "granted_r_u_tokens", "granted_resource_tokens", "keyspace_id")
    RESOURCE_GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    GRANTED_R_U_TOKENS_FIELD_NUMBER: _ClassVar[int]
    GRANTED_RESOURCE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    KEYSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    resource_group_name: str
    granted_r_u_tokens: _containers.RepeatedCompositeFieldContainer[GrantedRUTokenBucket]
    granted_resource_tokens: _containers.RepeatedCompositeFieldContainer[GrantedRawResourceTokenBucket]
    keyspace_id: KeyspaceIDValue
    def __init__(self, resource_group_name: _Optional[str] = ..., granted_r_u_tokens: _Optional[_Iterable[_Union[GrantedRUTokenBucket, _Mapping]]] = ..., granted_resource_tokens: _Optional[_Iterable[_Union[GrantedRawResourceTokenBucket, _Mapping]]] = ..., keyspace_id: _Optional[_Union[KeyspaceIDValue, _Mapping]] = ...) -> None: ...

class GrantedRUTokenBucket(_message.Message):
    __slots__ = ("type", "granted_tokens", "trickle_time_ms")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    GRANTED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TRICKLE_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    type: RequestUnitType
    granted_tokens: TokenBucket
    trickle_time_ms: int
    def __init__(self, type: _Optional[_Union[RequestUnitType, str]] = ..., granted_tokens: _Optional[_Union[TokenBucket, _Mapping]] = ..., trickle_time_ms: _Optional[int] = ...) -> None: ...

class GrantedRawResourceTokenBucket(_message.Message):
    __slots__ = ("type", "granted_tokens", "trickle_time_ms")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    GRANTED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TRICKLE_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    type: RawResourceType
    granted_tokens: TokenBucket
    trickle_time_ms: int
    def __init__(self, type: _Optional[_Union[RawResourceType, str]] = ..., granted_tokens: _Optional[_Union[TokenBucket, _Mapping]] = ..., trickle_time_ms: _Optional[int] = ...) -> None: ...

class Consumption(_message.Message):
    __slots__ = ("r_r_u", "w_r_u", "read_bytes", "write_bytes", "total_cpu_time_ms", "sql_layer_cpu_time_ms", "kv_read_rpc_count", "kv_write_rpc_count", "read_cross_az_traffic_bytes", "write_cross_az_traffic_bytes", "tikv_r_u_v2", "tidb_r_u_v2", "tiflash_r_u_v2")
    R_R_U_FIELD_NUMBER: _ClassVar[int]
    W_R_U_FIELD_NUMBER: _ClassVar[int]
    READ_BYTES_FIELD_NUMBER: _ClassVar[int]
    WRITE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CPU_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    SQL_LAYER_CPU_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    KV_READ_RPC_COUNT_FIELD_NUMBER: _ClassVar[int]
    KV_WRITE_RPC_COUNT_FIELD_NUMBER: _ClassVar[int]
    READ_CROSS_AZ_TRAFFIC_BYTES_FIELD_NUMBER: _ClassVar[int]
    WRITE_CROSS_AZ_TRAFFIC_BYTES_FIELD_NUMBER: _ClassVar[int]
    TIKV_R_U_V2_FIELD_NUMBER: _ClassVar[int]
    TIDB_R_U_V2_FIELD_NUMBER: _ClassVar[int]
    TIFLASH_R_U_V2_FIELD_NUMBER: _ClassVar[int]
    r_r_u: float
    w_r_u: float
    read_bytes: float
    write_bytes: float
    total_cpu_time_ms: float
    sql_layer_cpu_time_ms: float
    kv_read_rpc_count: float
    kv_write_rpc_count: float
    read_cross_az_traffic_bytes: int
    write_cross_az_traffic_bytes: int
    tikv_r_u_v2: float
    tidb_r_u_v2: float
    tiflash_r_u_v2: float
    def __init__(self, r_r_u: _Optional[float] = ..., w_r_u: _Optional[float] = ..., read_bytes: _Optional[float] = ..., write_bytes: _Optional[float] = ..., total_cpu_time_ms: _Optional[float] = ..., sql_layer_cpu_time_ms: _Optional[float] = ..., kv_read_rpc_count: _Optional[float] = ..., kv_write_rpc_count: _Optional[float] = ..., read_cross_az_traffic_bytes: _Optional[int] = ..., write_cross_az_traffic_bytes: _Optional[int] = ..., tikv_r_u_v2: _Optional[float] = ..., tidb_r_u_v2: _Optional[float] = ..., tiflash_r_u_v2: _Optional[float] = ...) -> None: ...

class RequestUnitItem(_message.Message):
    __slots__ = ("type", "value")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    type: RequestUnitType
    value: float
    def __init__(self, type: _Optional[_Union[RequestUnitType, str]] = ..., value: _Optional[float] = ...) -> None: ...

class RawResourceItem(_message.Message):
    __slots__ = ("type", "value")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    type: RawResourceType
    value: float
    def __init__(self, type: _Optional[_Union[RawResourceType, str]] = ..., value: _Optional[float] = ...) -> None: ...

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

class TokenBucket(_message.Message):
    __slots__ = ("settings", "tokens")
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    settings: TokenLimitSettings
    tokens: float
    def __init__(self, settings: _Optional[_Union[TokenLimitSettings, _Mapping]] = ..., tokens: _Optional[float] = ...) -> None: ...

class TokenLimitSettings(_message.Message):
    __slots__ = ("fill_rate", "burst_limit", "max_tokens")
    FILL_RATE_FIELD_NUMBER: _ClassVar[int]
    BURST_LIMIT_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    fill_rate: int
    burst_limit: int
    max_tokens: float
    def __init__(self, fill_rate: _Optional[int] = ..., burst_limit: _Optional[int] = ..., max_tokens: _Optional[float] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

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

class Participant(_message.Message):
    __slots__ = ("name", "id", "listen_urls")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    LISTEN_URLS_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: int
    listen_urls: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., id: _Optional[int] = ..., listen_urls: _Optional[_Iterable[str]] = ...) -> None: ...
