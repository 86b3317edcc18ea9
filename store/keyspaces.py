"""Keyspace names to ids, through PD's keyspace index key ``{root_prefix}keyspaces/id/{name}``.

PD's routes name keyspaces (``?keyspace_name=``, ``service-limit/{keyspace_name}``); the
metadata keys use ids. PD keeps the index as a decimal id under ``keyspaces/id/{name}``,
outside ``resource_group/``, so the replica's cache does not hold it: it is read from etcd.

PD writes that index once, when it creates the keyspace, and never points a name at another
id, so a found id is cached for ``ttl`` (30 s): a sidecar serving ``keyspace_name`` reads at
memory speed, and even a keyspace recreated by hand is picked up within 30 s. Misses are not
cached, so a keyspace created a moment ago resolves at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from rmwatch.store.etcd import EtcdClient, call_with_retry
from rmwatch.store.keys import KeyLayout, parse_keyspace_index

DEFAULT_TTL = 30.0
# Bounded so a client cycling through random names cannot grow memory without limit.
MAX_ENTRIES = 4096
# A lookup retries transient etcd errors for at most 2 s by default: it sits on a request's
# path.
LOOKUP_DEADLINE = 2.0


class KeyspaceResolver:
    """``resolver(name) -> id | None`` over an etcd connection (thread-safe, blocking).

    The one name → id lookup of rmwatch: the sidecar resolves ``keyspace_name`` with it, and
    the writer's ``resolve_keyspace`` too. ``deadline`` bounds one lookup, retries included.
    """

    def __init__(
        self,
        client: EtcdClient,
        layout: KeyLayout,
        *,
        ttl: float = DEFAULT_TTL,
        deadline: float = LOOKUP_DEADLINE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._layout = layout
        self._ttl = ttl
        self._deadline = deadline
        self._clock = clock
        self._cache: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str) -> int | None:
        """The id of keyspace ``name``; None when PD has no such keyspace.

        Raises EtcdUnavailableError when etcd does not answer, DecodeError when the index
        holds something that is not a keyspace id.
        """
        now = self._clock()
        with self._lock:
            hit = self._cache.get(name)
        if hit is not None and hit[1] > now:
            return hit[0]
        key = self._layout.keyspace_index(name)
        value, _meta = call_with_retry(
            lambda: self._client.get(key), deadline=self._deadline, what=f"get {key}"
        )
        if value is None:
            return None
        keyspace_id = parse_keyspace_index(key, bytes(value))
        with self._lock:
            if len(self._cache) >= MAX_ENTRIES:
                self._cache.clear()  # rare; a full reload costs one etcd get per name
            self._cache[name] = (keyspace_id, now + self._ttl)
        return keyspace_id


__all__ = ["DEFAULT_TTL", "LOOKUP_DEADLINE", "KeyspaceResolver"]
