"""rmwatch's data layer: PD's key layout, models and codecs, the etcd adapter, and the writer.

Public surface: ``Writer`` (the single metadata writer) with ``Leadership`` (its election and
fencing), ``WriteRole`` and ``WriterMetrics``; ``KeyLayout`` and the models (``StoredGroup``:
a group as a replica keeps and returns it); ``EtcdConfig``, ``connect`` and the ``EtcdClient``
protocol they are given (the rest of the etcd adapter is
``rmwatch.store.etcd``); ``KeyspaceResolver``. The errors live in ``rmwatch.errors``; those
the data layer raises are re-exported here for convenience.
"""

from rmwatch.errors import (
    AlreadyExistsError,
    ConflictError,
    DecodeError,
    DrainingError,
    EtcdAuthError,
    EtcdRefusedError,
    EtcdUnavailableError,
    InvalidInputError,
    InvalidKeyError,
    NotFoundError,
    NotLeaderError,
    ReservedGroupError,
    RmwatchError,
    WriteError,
    WriteRefusedError,
)
from rmwatch.store.etcd import EtcdClient, EtcdConfig, connect
from rmwatch.store.keys import NULL_KEYSPACE_ID, KeyKind, KeyLayout, ParsedKey
from rmwatch.store.keyspaces import KeyspaceResolver
from rmwatch.store.leadership import LeaderInfo, Leadership
from rmwatch.store.metrics import WriterMetrics
from rmwatch.store.models import (
    BackgroundSettings,
    Consumption,
    ControllerConfig,
    GroupMode,
    GroupRawResourceSettings,
    GroupRequestUnitSettings,
    GroupStates,
    KeyspaceIdentity,
    RequestUnitConfig,
    ResourceGroup,
    RunawayAction,
    RunawayRule,
    RunawaySettings,
    RunawayWatch,
    RunawayWatchType,
    ServiceLimit,
    TokenBucket,
    TokenLimitSettings,
    TokenState,
    default_group,
)
from rmwatch.store.roles import WriteRole
from rmwatch.store.stored_group import StoredGroup
from rmwatch.store.writer import GroupView, Writer

__all__ = [
    "NULL_KEYSPACE_ID",
    "AlreadyExistsError",
    "BackgroundSettings",
    "ConflictError",
    "Consumption",
    "ControllerConfig",
    "DecodeError",
    "DrainingError",
    "EtcdAuthError",
    "EtcdClient",
    "EtcdConfig",
    "EtcdRefusedError",
    "EtcdUnavailableError",
    "GroupMode",
    "GroupRawResourceSettings",
    "GroupRequestUnitSettings",
    "GroupStates",
    "GroupView",
    "InvalidInputError",
    "InvalidKeyError",
    "KeyKind",
    "KeyLayout",
    "KeyspaceIdentity",
    "KeyspaceResolver",
    "LeaderInfo",
    "Leadership",
    "NotFoundError",
    "NotLeaderError",
    "ParsedKey",
    "RequestUnitConfig",
    "ReservedGroupError",
    "ResourceGroup",
    "RmwatchError",
    "RunawayAction",
    "RunawayRule",
    "RunawaySettings",
    "RunawayWatch",
    "RunawayWatchType",
    "ServiceLimit",
    "StoredGroup",
    "TokenBucket",
    "TokenLimitSettings",
    "TokenState",
    "WriteError",
    "WriteRefusedError",
    "WriteRole",
    "Writer",
    "WriterMetrics",
    "connect",
    "default_group",
]
