# Generated from store/proto/apipb.proto by scripts/gen_proto. Do not edit.
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class KeyspaceIdentity(_message.Message):
    __slots__ = ("namespace_id", "keyspace_id")
    NAMESPACE_ID_FIELD_NUMBER: _ClassVar[int]
    KEYSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    namespace_id: int
    keyspace_id: int
    def __init__(self, namespace_id: _Optional[int] = ..., keyspace_id: _Optional[int] = ...) -> None: ...
