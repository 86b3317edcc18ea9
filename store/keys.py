"""PD's etcd key layout for resource-manager metadata, and parsing keys back.

Two kinds of keys, placed as PD places them:

- the RM keys (``resource_group/...``) sit at the etcd root on a PD cluster. ``KeyLayout``
  builds them under an optional root prefix of our own (empty by default), which exists only
  to share one etcd between test clusters; rmwatch's writer leader key sits beside them.
- PD's own keys are absolute and never take that prefix: the cluster id at
  ``/pd/cluster_id`` (8 bytes, big-endian uint64) and the keyspace-name index at
  ``/pd/{cluster_id}/keyspaces/id/{name}`` (the id as decimal text).

The null keyspace (0xFFFFFFFF) uses the legacy keys for settings and states, but not for
service limits.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from rmwatch.errors import DecodeError, InvalidKeyError

NULL_KEYSPACE_ID = 0xFFFFFFFF
"""The null keyspace: groups that belong to no keyspace (PD's constant.NullKeyspaceID)."""

_ROOT = "resource_group/"

CLUSTER_ID_KEY = "/pd/cluster_id"
"""Where PD keeps its cluster id: absolute, 8 bytes, big-endian uint64 (PD's ClusterIDPath)."""

_MAX_UINT64 = 2**64 - 1


class KeyKind(StrEnum):
    """What a key under ``resource_group/`` holds."""

    SETTINGS = "settings"
    STATES = "states"
    CONTROLLER = "controller"
    SERVICE_LIMIT = "service_limit"


class ParsedKey(NamedTuple):
    """A key split into its parts; ``name`` is None for the controller and service limits.

    ``canonical`` is False for a key PD reads but never writes: a zero-padded keyspace id
    (``07``) or the keyspace form of the null keyspace (``keyspace/settings/4294967295/...``).
    Such a key stands for the same group as the canonical one, so readers resolve the two by
    PD's load order; it does not take part in equality or the hash.

    A NamedTuple (immutable) rather than a frozen dataclass: one is made for every key a load
    or a watch event brings, and building a frozen dataclass cost ~0.9 us of a ~1.5 us parse
    (``tuple.__new__`` on the hot path: ~0.3 us).
    """

    kind: KeyKind
    keyspace_id: int = NULL_KEYSPACE_ID
    name: str | None = None
    canonical: bool = True

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ParsedKey):
            return self[:3] == other[:3]
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        if isinstance(other, ParsedKey):
            return self[:3] != other[:3]
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self[:3])


_parsed_key = tuple.__new__  # builds a ParsedKey without the generated __new__'s call


def parse_keyspace_id(text: str) -> int:
    """Parse a decimal keyspace id as PD writes it (no sign, no padding, at most 2**32 - 1)."""
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"keyspace id {text!r} is not a decimal number")
    if len(text) > 1 and text[0] == "0":
        # "07" and "7" would be two keys for one keyspace: refuse the alias.
        raise ValueError(f"keyspace id {text!r} is zero-padded")
    value = int(text)
    if value > NULL_KEYSPACE_ID:
        raise ValueError(f"keyspace id {value} exceeds {NULL_KEYSPACE_ID}")
    return value


MAX_REVISION_DIGITS = 20
"""Digits a revision given in a request may have: etcd's are int64 (19 digits at most), and a
longer string is refused before ``int()``, which raises past 4,300 digits."""


def parse_revision(text: str) -> int:
    """A revision as a request gives it (``expected_revision``, ``min_revision``): ASCII
    digits only, at most ``MAX_REVISION_DIGITS``; ValueError otherwise (``str.isdigit`` alone
    takes a superscript two, which ``int`` refuses, and an Arabic-Indic three, read as 3)."""
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_REVISION_DIGITS:
        raise ValueError(f"{text[:40]!r} is not a non-negative integer")
    return int(text)


def parse_key_keyspace_id(text: str) -> int:
    """Parse the keyspace id inside a key as PD does: Go's ``strconv.ParseUint(text, 10, 32)``.

    Unlike ``parse_keyspace_id`` (for ids we are given), leading zeros are accepted: ``07`` is
    keyspace 7. Signs, spaces and non-ASCII digits are still refused, as ParseUint refuses them.
    """
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"keyspace id {text!r} is not a decimal number")
    value = int(text)
    if value > NULL_KEYSPACE_ID:
        raise ValueError(f"keyspace id {text} exceeds {NULL_KEYSPACE_ID}")
    return value


def parse_keyspace_index(key: str, data: bytes) -> int:
    """The keyspace id stored under PD's index key ``key``; DecodeError naming it if bad."""
    try:
        return parse_keyspace_id(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError) as exc:
        raise DecodeError(key, str(exc)) from None


def check_cluster_id(cluster_id: int) -> int:
    """``cluster_id`` if it is a cluster id PD can have (1 .. 2**64 - 1; PD reads 0 as
    "not set"), else ValueError."""
    if not 0 < cluster_id <= _MAX_UINT64:
        raise ValueError(f"cluster id {cluster_id} is not in 1..{_MAX_UINT64}")
    return cluster_id


def encode_cluster_id(cluster_id: int) -> bytes:
    """The value PD stores at ``/pd/cluster_id``: 8 bytes, big-endian."""
    return check_cluster_id(cluster_id).to_bytes(8, "big")


def decode_cluster_id(data: bytes) -> int:
    """The cluster id in a ``/pd/cluster_id`` value; DecodeError naming the key if it is not
    PD's 8 big-endian bytes of a non-zero id."""
    if len(data) != 8:
        raise DecodeError(CLUSTER_ID_KEY, f"{len(data)} bytes, PD stores 8 (big-endian uint64)")
    value = int.from_bytes(data, "big")
    if value == 0:
        raise DecodeError(CLUSTER_ID_KEY, "cluster id 0 (PD's value for not set)")
    return value


def keyspace_index_prefix(cluster_id: int) -> str:
    """PD's keyspace-name index of cluster ``cluster_id``: ``/pd/{cluster_id}/keyspaces/id/``."""
    return f"/pd/{check_cluster_id(cluster_id)}/keyspaces/id/"


def normalize_root_prefix(root_prefix: str) -> str:
    """Return the root prefix with a trailing ``/`` when non-empty (PD joins with a slash)."""
    if root_prefix and not root_prefix.endswith("/"):
        return root_prefix + "/"
    return root_prefix


class KeyLayout:
    """Builds and parses every RM metadata key under one root prefix, and names PD's
    keyspace index of one cluster.

    Args:
        root_prefix: prefix of the RM keys and of rmwatch's leader key only; empty (the
            etcd root) on a PD cluster.
        cluster_id: PD's cluster id, which places the keyspace-name index; None when not
            known yet (``rmwatch.store.keyspaces`` then reads ``/pd/cluster_id``).
    """

    __slots__ = ("_controller", "_prefix", "cluster_id", "root_prefix")

    def __init__(self, root_prefix: str = "", *, cluster_id: int | None = None) -> None:
        self.root_prefix = normalize_root_prefix(root_prefix)
        self.cluster_id = None if cluster_id is None else check_cluster_id(cluster_id)
        self._prefix = self.root_prefix + _ROOT
        self._controller = self._prefix + "controller"

    @property
    def prefix(self) -> str:
        """The prefix RM watches: every key of this layout starts with it."""
        return self._prefix

    def settings(self, name: str, keyspace_id: int = NULL_KEYSPACE_ID) -> str:
        """Key of a group's settings (protobuf)."""
        if keyspace_id == NULL_KEYSPACE_ID:
            return f"{self._prefix}settings/{name}"
        return f"{self._prefix}keyspace/settings/{keyspace_id}/{name}"

    def states(self, name: str, keyspace_id: int = NULL_KEYSPACE_ID) -> str:
        """Key of a group's running states (JSON tokens and consumption)."""
        if keyspace_id == NULL_KEYSPACE_ID:
            return f"{self._prefix}states/{name}"
        return f"{self._prefix}keyspace/states/{keyspace_id}/{name}"

    def controller(self) -> str:
        """Key of the controller config (JSON)."""
        return self._controller

    def service_limit(self, keyspace_id: int = NULL_KEYSPACE_ID) -> str:
        """Key of a keyspace's service limit; the null keyspace has no legacy form here."""
        return f"{self._prefix}keyspace/service_limits/{keyspace_id}"

    def keyspace_index(self, name: str) -> str:
        """PD's keyspace name → id index key ``/pd/{cluster_id}/keyspaces/id/{name}``
        (absolute: no root prefix; decimal id value); ValueError without a cluster id."""
        if self.cluster_id is None:
            raise ValueError("the keyspace index key needs the cluster id (none given)")
        return keyspace_index_prefix(self.cluster_id) + name

    def key_for(self, parsed: ParsedKey) -> str:
        """The key a ParsedKey came from (inverse of ``parse``)."""
        if parsed.kind is KeyKind.CONTROLLER:
            return self.controller()
        if parsed.kind is KeyKind.SERVICE_LIMIT:
            return self.service_limit(parsed.keyspace_id)
        assert parsed.name is not None
        if parsed.kind is KeyKind.SETTINGS:
            return self.settings(parsed.name, parsed.keyspace_id)
        return self.states(parsed.name, parsed.keyspace_id)

    def parse(self, key: str | bytes) -> ParsedKey:
        """Split a full key into (kind, keyspace id, name); InvalidKeyError if it is not ours."""
        text = key.decode("utf-8", "surrogateescape") if isinstance(key, bytes) else key
        if not text.startswith(self._prefix):
            raise InvalidKeyError(text, f"not under prefix {self._prefix!r}")
        rest = text[len(self._prefix) :]
        if rest.startswith("settings/") and len(rest) > 9:
            # The legacy settings key, most keys by far: the loop below, without the loop.
            return _parsed_key(ParsedKey, (KeyKind.SETTINGS, NULL_KEYSPACE_ID, rest[9:], True))
        if rest == "controller":
            return ParsedKey(KeyKind.CONTROLLER)
        for head, kind in (("settings/", KeyKind.SETTINGS), ("states/", KeyKind.STATES)):
            if rest.startswith(head):
                name = _name(text, rest[len(head) :])
                return _parsed_key(ParsedKey, (kind, NULL_KEYSPACE_ID, name, True))
        if rest.startswith("keyspace/service_limits/"):
            ks_text = rest[len("keyspace/service_limits/") :]
            keyspace_id = _keyspace(text, ks_text)
            return ParsedKey(KeyKind.SERVICE_LIMIT, keyspace_id, None, str(keyspace_id) == ks_text)
        for head, kind in (
            ("keyspace/settings/", KeyKind.SETTINGS),
            ("keyspace/states/", KeyKind.STATES),
        ):
            if rest.startswith(head):
                ks_text, sep, name = rest[len(head) :].partition("/")
                if not sep:
                    raise InvalidKeyError(text, "missing '/' between keyspace id and group name")
                keyspace_id = _keyspace(text, ks_text)
                # PD writes the null keyspace's settings and states under the legacy keys only.
                canonical = keyspace_id != NULL_KEYSPACE_ID and str(keyspace_id) == ks_text
                return ParsedKey(kind, keyspace_id, _name(text, name), canonical)
        raise InvalidKeyError(text, "unknown kind of resource_group key")


def _keyspace(key: str, text: str) -> int:
    # PD: pkg/utils/keypath/resource_group.go:98 and pkg/storage/endpoint/resource_group.go:132
    # parse the id with strconv.ParseUint(s, 10, 32), so a zero-padded id is the same keyspace.
    try:
        return parse_key_keyspace_id(text)
    except ValueError as exc:
        raise InvalidKeyError(key, str(exc)) from None


def _name(key: str, name: str) -> str:
    if not name:
        raise InvalidKeyError(key, "empty group name")
    return name
