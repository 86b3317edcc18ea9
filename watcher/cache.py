"""Immutable snapshots of the metadata prefix, one per applied revision, and how they change.

A ``Snapshot`` holds every key under the prefix (decoded, or recorded as bad) at exactly one
revision. Appliers build the next snapshot from the previous one and publish it by swapping one
reference, so readers never lock and never see half a revision.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Generic, TypeVar

from store.codec import Value, decode_value
from store.errors import DecodeError, InvalidKeyError
from store.keys import NULL_KEYSPACE_ID, KeyKind, KeyLayout, ParsedKey
from store.models import ControllerConfig, GroupStates, ResourceGroup, ServiceLimit
from watcher.overlay import TOMBSTONE, Overlay

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Entry:
    """One key as stored: raw bytes, mod revision, and the decoded value (None if bad/unknown)."""

    key: str
    raw: bytes
    mod_revision: int
    parsed: ParsedKey | None
    value: Value | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class BadValue:
    """A key whose value was skipped: it did not decode or disagrees with its key."""

    key: str
    revision: int
    error: str


@dataclass(frozen=True, slots=True)
class Versioned(Generic[T]):
    """A read result and the revision of the snapshot it came from."""

    value: T
    revision: int


class ChangeKind(StrEnum):
    """What happened to a key."""

    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """A change delivered to listeners: from the watch, or from a rebuild's diff."""

    kind: ChangeKind
    key: str
    revision: int
    parsed: ParsedKey | None
    value: Value | None
    prev_value: Value | None
    source: str = "watch"  # "watch" or "rebuild"


def decode_entry(layout: KeyLayout, key: str, raw: bytes, mod_revision: int) -> Entry:
    """Decode one key/value; a bad value becomes an Entry with ``error`` set, never an exception."""
    try:
        parsed = layout.parse(key)
    except InvalidKeyError as exc:
        # A kind this version does not know (a newer PD): kept, counted, not an error.
        return Entry(key, raw, mod_revision, None, None, f"unknown key: {exc.reason}")
    try:
        value = decode_value(key, parsed, raw)
    except DecodeError as exc:
        return Entry(key, raw, mod_revision, parsed, None, exc.reason)
    return Entry(key, raw, mod_revision, parsed, value)


@dataclass(frozen=True)
class Snapshot:
    """The whole prefix at one revision. Immutable; derived views are memoized per snapshot."""

    layout: KeyLayout
    revision: int
    entries: Overlay[str, Entry]
    bad: Mapping[str, BadValue] = field(default_factory=lambda: MappingProxyType({}))
    _memo: dict[object, object] = field(default_factory=dict, compare=False, repr=False)
    _memo_lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    # ---- reads ----------------------------------------------------------------------------

    def _value(self, key: str) -> Value | None:
        entry = self.entries.get_fast(key)
        return None if entry is None else entry.value

    def get_group(self, name: str, keyspace_id: int = NULL_KEYSPACE_ID) -> ResourceGroup | None:
        """A group's settings. For the null keyspace the legacy key wins; the keyspace-form key
        ``keyspace/settings/4294967295/{name}`` is the fallback (PD writes only the legacy one).
        """
        value = self._value(self.layout.settings(name, keyspace_id))
        if value is None and keyspace_id == NULL_KEYSPACE_ID:
            value = self._value(f"{self.layout.prefix}keyspace/settings/{keyspace_id}/{name}")
        return value if isinstance(value, ResourceGroup) else None

    def get_states(self, name: str, keyspace_id: int = NULL_KEYSPACE_ID) -> GroupStates | None:
        """A group's running states, with the same precedence as ``get_group``."""
        value = self._value(self.layout.states(name, keyspace_id))
        if value is None and keyspace_id == NULL_KEYSPACE_ID:
            value = self._value(f"{self.layout.prefix}keyspace/states/{keyspace_id}/{name}")
        return value if isinstance(value, GroupStates) else None

    def list_groups(self, keyspace_id: int = NULL_KEYSPACE_ID) -> tuple[ResourceGroup, ...]:
        """Groups of a keyspace sorted by name (memoized: one O(n) pass per snapshot)."""
        return self._memoized(("groups", keyspace_id), lambda: self._collect(keyspace_id))

    def _collect(self, keyspace_id: int) -> tuple[ResourceGroup, ...]:
        found: dict[str, tuple[bool, ResourceGroup]] = {}
        for entry in self.entries.values():
            parsed, value = entry.parsed, entry.value
            if (
                parsed is None
                or parsed.kind is not KeyKind.SETTINGS
                or parsed.keyspace_id != keyspace_id
                or not isinstance(value, ResourceGroup)
            ):
                continue
            legacy = not entry.key.startswith(self.layout.prefix + "keyspace/")
            current = found.get(value.name)
            if current is None or (legacy and not current[0]):
                found[value.name] = (legacy, value)
        return tuple(found[name][1] for name in sorted(found))

    def controller(self) -> ControllerConfig:
        """The controller config; PD's defaults when none is stored (as PD's RM does)."""
        value = self._value(self.layout.controller())
        return value if isinstance(value, ControllerConfig) else ControllerConfig()

    def controller_stored(self) -> bool:
        """Whether a (good) controller config is stored, as opposed to defaults."""
        return isinstance(self._value(self.layout.controller()), ControllerConfig)

    def service_limit(self, keyspace_id: int = NULL_KEYSPACE_ID) -> ServiceLimit | None:
        """A keyspace's service limit, if set."""
        value = self._value(self.layout.service_limit(keyspace_id))
        return value if isinstance(value, ServiceLimit) else None

    def _memoized(self, key: object, build: object) -> tuple[ResourceGroup, ...]:
        memo = self._memo.get(key)
        if memo is None:
            with self._memo_lock:
                memo = self._memo.get(key)
                if memo is None:
                    memo = build()  # type: ignore[operator]
                    self._memo[key] = memo
        return memo  # type: ignore[return-value]

    # ---- building the next snapshot --------------------------------------------------------

    def raw_items(self) -> dict[str, tuple[bytes, int]]:
        """``key → (value bytes, mod_revision)``: what etcd holds, for diffs and digests."""
        return {key: (e.raw, e.mod_revision) for key, e in self.entries.items()}


def build_snapshot(
    layout: KeyLayout, revision: int, kvs: Iterable[tuple[str, bytes, int]]
) -> Snapshot:
    """A snapshot from a full load (key, value, mod_revision) at ``revision``."""
    entries: dict[str, Entry] = {}
    bad: dict[str, BadValue] = {}
    for key, raw, mod_revision in kvs:
        entry = decode_entry(layout, key, raw, mod_revision)
        entries[key] = entry
        if entry.error is not None and entry.parsed is not None:
            bad[key] = BadValue(key, mod_revision, entry.error)
    return Snapshot(layout, revision, Overlay(entries), MappingProxyType(bad))


@dataclass(frozen=True, slots=True)
class RawChange:
    """One key change at a revision: a put (value bytes) or a delete (None)."""

    key: str
    revision: int
    value: bytes | None


def apply_changes(
    snapshot: Snapshot, revision: int, changes: Iterable[RawChange], *, source: str = "watch"
) -> tuple[Snapshot, list[ChangeEvent]]:
    """The snapshot after ``changes`` (all of them, atomically), published at ``revision``."""
    layout = snapshot.layout
    updates: dict[str, Entry | object] = {}
    bad = dict(snapshot.bad)
    bad_changed = False
    events: list[ChangeEvent] = []
    for change in changes:
        previous = updates.get(change.key)
        if previous is None or previous is TOMBSTONE:
            previous = snapshot.entries.get_fast(change.key)
        prev_value = previous.value if isinstance(previous, Entry) else None
        if change.value is None:
            updates[change.key] = TOMBSTONE
            if bad.pop(change.key, None) is not None:
                bad_changed = True
            events.append(
                ChangeEvent(
                    ChangeKind.DELETE,
                    change.key,
                    change.revision,
                    previous.parsed if isinstance(previous, Entry) else None,
                    None,
                    prev_value,
                    source,
                )
            )
            continue
        entry = decode_entry(layout, change.key, change.value, change.revision)
        updates[change.key] = entry
        if entry.error is not None and entry.parsed is not None:
            bad[change.key] = BadValue(change.key, change.revision, entry.error)
            bad_changed = True
        elif bad.pop(change.key, None) is not None:
            bad_changed = True
        events.append(
            ChangeEvent(
                ChangeKind.PUT,
                change.key,
                change.revision,
                entry.parsed,
                entry.value,
                prev_value,
                source,
            )
        )
    entries = snapshot.entries.updated(updates)  # type: ignore[arg-type]
    new_bad = MappingProxyType(bad) if bad_changed else snapshot.bad
    return Snapshot(layout, revision, entries, new_bad), events


def diff_snapshots(old: Snapshot, new: Snapshot) -> list[ChangeEvent]:
    """Changes that turn ``old`` into ``new`` (deletes included), as rebuild events."""
    events: list[ChangeEvent] = []
    old_entries, new_entries = old.entries, new.entries
    for key, entry in new_entries.items():
        before = old_entries.get_fast(key)
        if before is None or before.raw != entry.raw or before.mod_revision != entry.mod_revision:
            events.append(
                ChangeEvent(
                    ChangeKind.PUT,
                    key,
                    entry.mod_revision,
                    entry.parsed,
                    entry.value,
                    None if before is None else before.value,
                    "rebuild",
                )
            )
    for key, before in old_entries.items():
        if key not in new_entries:
            events.append(
                ChangeEvent(
                    ChangeKind.DELETE, key, new.revision, before.parsed, None, before.value,
                    "rebuild",
                )
            )  # fmt: skip
    return events
