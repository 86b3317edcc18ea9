"""Write roles: which component may write which kind of resource-manager data.

PD splits RM writes by role (LegacyAll is its default; PDMetaOnly is the PD-side writer,
RMTokenOnly an RM node):

    role          metadata (settings, controller, service limits)   states (tokens)
    LegacyAll     yes                                               yes
    PDMetaOnly    yes                                               no
    RMTokenOnly   no ("metadata write is disabled")                    yes

The gate runs before anything touches etcd, so a refused write writes nothing.
"""

from __future__ import annotations

from enum import StrEnum

from rmwatch.errors import WriteRefusedError

METADATA_REFUSED = "metadata write is disabled"  # PD: server/write_role.go:45
STATES_REFUSED = "states write disabled"


class WriteRole(StrEnum):
    """The role a writer runs with; ``LegacyAll`` is PD's default."""

    LEGACY_ALL = "LegacyAll"
    PD_META_ONLY = "PDMetaOnly"
    RM_TOKEN_ONLY = "RMTokenOnly"


class WriteKind(StrEnum):
    """What a write touches: metadata (settings/controller/service limits) or token states."""

    METADATA = "metadata"
    STATES = "states"


_ALLOWED: dict[WriteRole, frozenset[WriteKind]] = {
    WriteRole.LEGACY_ALL: frozenset({WriteKind.METADATA, WriteKind.STATES}),
    WriteRole.PD_META_ONLY: frozenset({WriteKind.METADATA}),
    WriteRole.RM_TOKEN_ONLY: frozenset({WriteKind.STATES}),
}


def allows(role: WriteRole, kind: WriteKind) -> bool:
    """True when ``role`` may perform a write of ``kind``."""
    return kind in _ALLOWED[role]


def check_write(role: WriteRole, kind: WriteKind) -> None:
    """Raise WriteRefusedError (HTTP 403) when ``role`` may not write ``kind``."""
    if not allows(role, kind):
        raise WriteRefusedError(METADATA_REFUSED if kind is WriteKind.METADATA else STATES_REFUSED)


__all__ = ["METADATA_REFUSED", "STATES_REFUSED", "WriteKind", "WriteRole", "allows", "check_write"]
