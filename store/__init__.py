"""rmwatch's data layer: PD's key layout, models and codecs, the etcd adapter, and the writer.

Public surface: ``Writer`` (the single metadata writer), ``KeyLayout`` and the models; the
errors are in ``rmwatch.errors`` and re-exported here for convenience.
"""

from rmwatch.errors import (
    AlreadyExistsError,
    ConflictError,
    DecodeError,
    DrainingError,
    EtcdAuthError,
    EtcdUnavailableError,
    InvalidInputError,
    InvalidKeyError,
    NotFoundError,
    NotLeaderError,
    RmwatchError,
    WriteError,
    WriteRefusedError,
)
from rmwatch.store.keys import NULL_KEYSPACE_ID, KeyKind, KeyLayout, ParsedKey
from rmwatch.store.leadership import Leadership
from rmwatch.store.models import (
    ControllerConfig,
    GroupMode,
    GroupStates,
    ResourceGroup,
    ServiceLimit,
    default_group,
)
from rmwatch.store.roles import WriteRole
from rmwatch.store.writer import Writer

__all__ = [
    "NULL_KEYSPACE_ID",
    "AlreadyExistsError",
    "ConflictError",
    "ControllerConfig",
    "DecodeError",
    "DrainingError",
    "EtcdAuthError",
    "EtcdUnavailableError",
    "GroupMode",
    "GroupStates",
    "InvalidInputError",
    "InvalidKeyError",
    "KeyKind",
    "KeyLayout",
    "Leadership",
    "NotFoundError",
    "NotLeaderError",
    "ParsedKey",
    "ResourceGroup",
    "RmwatchError",
    "ServiceLimit",
    "WriteError",
    "WriteRefusedError",
    "WriteRole",
    "Writer",
    "default_group",
]
