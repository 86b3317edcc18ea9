"""A stored group as the replica keeps it: checked wire bytes and the few fields reads index by.

A replica holds every group of a cluster (100k and more) and reads most of them rarely, so its
decoded form must cost little to build and to keep. ``StoredGroup`` holds the value's bytes
(shared with the cache entry), the name, mode, priority and keyspace id: about 100 bytes and one
tracked object per group, against 13 pydantic models (~11 KB, ~55 us to build) for a full
``ResourceGroup``. The value was checked in full when it was decoded (``check_group_message``:
every check PD's loader makes), so a ``StoredGroup`` is never a bad value; the nested settings
are parsed from the bytes again when asked for (``model()``, or the attribute of the same
name), and the pydantic model is built only then.
"""

from __future__ import annotations

from typing import Any

from rmwatch.store._pb import resource_manager_pb2 as pb
from rmwatch.store.keys import NULL_KEYSPACE_ID
from rmwatch.store.models import (
    BackgroundSettings,
    Consumption,
    GroupMode,
    GroupRawResourceSettings,
    GroupRequestUnitSettings,
    KeyspaceIdentity,
    ResourceGroup,
    RunawaySettings,
)
from rmwatch.store.settings_decode import check_group_message, group_from_checked

__all__ = ["StoredGroup", "checked_group"]


class StoredGroup:
    """A checked, immutable group as stored: read its scalar fields directly, anything else
    through ``model()`` (or the nested attribute, which builds the model each time).

    Its fields are read-only properties over private slots (no ``__setattr__`` guard: it costs
    2 us on each of the six assignments that build one). Compares equal to a ``ResourceGroup``
    (or another ``StoredGroup``) with the same fields, whatever bytes either came from, as
    ``ResourceGroup`` itself does.
    """

    __slots__ = ("_identity", "_keyspace_id", "_mode", "_name", "_priority", "_wire")

    def __init__(
        self,
        name: str,
        mode: GroupMode,
        priority: int,
        wire: bytes,
        *,
        keyspace_id: int | None,
        identity: tuple[int, int] | None,
    ) -> None:
        self._name = name
        self._mode = mode
        self._priority = priority
        self._keyspace_id = keyspace_id
        self._identity = identity
        self._wire = wire

    # ---- the fields kept --------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The group's name (1-32 UTF-8 bytes)."""
        return self._name

    @property
    def mode(self) -> GroupMode:
        """RU mode (or Unknown, when the stored value has none); never RawMode."""
        return self._mode

    @property
    def priority(self) -> int:
        """0-16."""
        return self._priority

    @property
    def keyspace_id(self) -> int | None:
        """The keyspace id; None means the null keyspace (no field 9), as in PD."""
        return self._keyspace_id

    @property
    def effective_keyspace_id(self) -> int:
        """The keyspace id, with None mapped to the null keyspace 0xFFFFFFFF."""
        return NULL_KEYSPACE_ID if self._keyspace_id is None else self._keyspace_id

    @property
    def keyspace_identity(self) -> KeyspaceIdentity | None:
        """The V3 ``keyspace_identity`` the stored value carried in field 9, if it did."""
        if self._identity is None:
            return None
        return KeyspaceIdentity(namespace_id=self._identity[0], keyspace_id=self._identity[1])

    @property
    def wire(self) -> bytes:
        """The protobuf bytes as stored in etcd."""
        return self._wire

    # ---- everything else, from the bytes ----------------------------------------------------

    def message(self) -> pb.ResourceGroup:
        """The stored value parsed again (a new message; ~1-2 us)."""
        return pb.ResourceGroup.FromString(self._wire)

    def model(self) -> ResourceGroup:
        """The full pydantic model (built on each call: keep it if you read several fields)."""
        msg = pb.ResourceGroup.FromString(self._wire)
        return group_from_checked(msg, self._wire, self._mode, self._keyspace_id, self._identity)

    @property
    def r_u_settings(self) -> GroupRequestUnitSettings | None:
        """RU-mode settings (built from the bytes on each access)."""
        return self.model().r_u_settings

    @property
    def raw_resource_settings(self) -> GroupRawResourceSettings | None:
        """Raw-mode settings (built from the bytes on each access)."""
        return self.model().raw_resource_settings

    @property
    def runaway_settings(self) -> RunawaySettings | None:
        """Runaway-query settings (built from the bytes on each access)."""
        return self.model().runaway_settings

    @property
    def background_settings(self) -> BackgroundSettings | None:
        """Background-task settings (built from the bytes on each access)."""
        return self.model().background_settings

    @property
    def ru_stats(self) -> Consumption | None:
        """The RU statistics stored with the settings (built from the bytes on each access)."""
        return self.model().ru_stats

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        """``model().model_dump(**kwargs)``."""
        return self.model().model_dump(**kwargs)

    def model_copy(self, **kwargs: Any) -> ResourceGroup:
        """``model().model_copy(**kwargs)``: a ``ResourceGroup`` to change and write."""
        return self.model().model_copy(**kwargs)

    def in_keyspace(self, keyspace_id: int | None) -> StoredGroup:
        """The same group shown in another keyspace (PD takes a stored group's keyspace from its
        key, whatever field 9 holds); the bytes are kept as stored."""
        return StoredGroup(self._name, self._mode, self._priority, self._wire,
                           keyspace_id=keyspace_id, identity=self._identity)  # fmt: skip

    # ---- comparisons ------------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StoredGroup):
            if other._wire == self._wire and other._keyspace_id == self._keyspace_id:
                return True
            return self.model() == other.model()
        if isinstance(other, ResourceGroup):
            return self.model() == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.model())

    def __repr__(self) -> str:
        return (
            f"StoredGroup(name={self._name!r}, mode={self._mode.name}, "
            f"priority={self._priority}, keyspace_id={self._keyspace_id!r}, "
            f"{len(self._wire)} bytes)"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as its bytes, checked again on load.
        return (_from_pickle, (self._wire, self._keyspace_id))


def checked_group(msg: pb.ResourceGroup, wire: bytes) -> StoredGroup:
    """The stored form of ``msg``, parsed from ``wire``, after PD's checks
    (``check_group_message``; InvalidGroupError for a value PD refuses). Unknown fields are the
    caller's to check (``rmwatch.store.codec``)."""
    mode, keyspace_id, identity = check_group_message(msg, wire)
    return StoredGroup(msg.name, mode, msg.priority, wire, keyspace_id=keyspace_id,
                       identity=identity)  # fmt: skip


def _from_pickle(wire: bytes, keyspace_id: int | None) -> StoredGroup:
    stored = checked_group(pb.ResourceGroup.FromString(wire), wire)
    return stored if stored.keyspace_id == keyspace_id else stored.in_keyspace(keyspace_id)
