"""rmwatch's data layer: PD's key layout, models and codecs, and the single metadata writer."""

from store.errors import (
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
from store.keys import NULL_KEYSPACE_ID, KeyKind, KeyLayout, ParsedKey
from store.models import (
    ControllerConfig,
    GroupMode,
    GroupStates,
    ResourceGroup,
    ServiceLimit,
    default_group,
)

__version__ = "0.1.0"

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
    "NotFoundError",
    "NotLeaderError",
    "ParsedKey",
    "ResourceGroup",
    "RmwatchError",
    "ServiceLimit",
    "WriteError",
    "WriteRefusedError",
    "__version__",
    "default_group",
]
