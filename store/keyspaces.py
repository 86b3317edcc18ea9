"""Keyspace names to ids through PD's index ``/pd/{cluster_id}/keyspaces/id/{name}``, and PD's
cluster id that places that index.

PD's routes name keyspaces (``?keyspace_name=``, ``service-limit/{keyspace_name}``); the
metadata keys use ids. PD keeps the index as a decimal id under an absolute key carrying its
cluster id, outside ``resource_group/``, so the replica's cache does not hold it: it is read
from etcd. The cluster id comes from the configuration, else from ``/pd/cluster_id``; when
neither exists (an etcd PD never ran on) no keyspace name resolves, while everything about
the null keyspace works as usual.

PD writes an index entry once, when it creates the keyspace, and never points a name at another
id, so a found id is cached for ``ttl`` (30 s): a sidecar serving ``keyspace_name`` reads at
memory speed, and a keyspace removed and recreated by hand is picked up within 30 s. Misses are
not cached: each costs one linearizable get, so a keyspace created a moment ago (after the
replica started) resolves at once. That is the refresh; a watch of the index would need its
own reconnect and compaction handling to save one ~1 ms get per unknown name.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable

import grpc

from rmwatch._logging import get_logger
from rmwatch.errors import EtcdAuthError, NotFoundError
from rmwatch.store.etcd import EtcdClient, call_with_retry, txn
from rmwatch.store.keys import (
    CLUSTER_ID_KEY,
    KeyLayout,
    decode_cluster_id,
    encode_cluster_id,
    keyspace_index_prefix,
    parse_keyspace_index,
)

log = get_logger("keyspaces")

DEFAULT_TTL = 30.0
# Bounded so a client cycling through random names cannot grow memory without limit.
MAX_ENTRIES = 4096
# A lookup retries transient etcd errors for at most 2 s by default: it sits on a request's
# path.
LOOKUP_DEADLINE = 2.0


def keyspace_not_found(name: str, reason: str | None = None) -> NotFoundError:
    """PD's error for a name its keyspace index does not hold (HTTP 404), with ``reason``
    appended when rmwatch knows why (no cluster id)."""
    text = f"[PD:resourcemanager:ErrKeyspaceNotExistsByName]keyspace not found with name: {name}"
    return NotFoundError(text if reason is None else f"{text} ({reason})")


def _get(client: EtcdClient, key: str, deadline: float) -> bytes | None:
    """One key's value, transient failures retried; EtcdAuthError when our etcd user may not
    read it (PD's keys need their own grants: ``rmwatch etcd-setup-auth``)."""
    try:
        value, _meta = call_with_retry(
            lambda: client.get(key), deadline=deadline, what=f"get {key}"
        )
    except grpc.RpcError as exc:
        if exc.code() is grpc.StatusCode.PERMISSION_DENIED:
            raise EtcdAuthError(
                f"no read access to {key}: grant it with rmwatch etcd-setup-auth"
            ) from None
        raise
    return None if value is None else bytes(value)


def read_cluster_id(client: EtcdClient, *, deadline: float = LOOKUP_DEADLINE) -> int | None:
    """PD's cluster id from ``/pd/cluster_id``; None when PD never wrote one.

    Raises DecodeError when the key holds something other than PD's 8 bytes, EtcdAuthError
    when our user may not read it, and EtcdUnavailableError when etcd does not answer within
    ``deadline``.
    """
    value = _get(client, CLUSTER_ID_KEY, deadline)
    return None if value is None else decode_cluster_id(value)


def cluster_id_at_start(
    client: EtcdClient, configured: int | None, *, deadline: float = LOOKUP_DEADLINE
) -> int | None:
    """The cluster id a writer or replica starts with: ``configured`` (``--cluster-id``) if
    given, else the one in ``/pd/cluster_id``, else None (logged: names resolve only once PD
    writes it). A configured id that differs from the stored one is logged and kept.
    """
    try:
        stored = read_cluster_id(client, deadline=deadline)
    except EtcdAuthError as exc:
        # A deployment set up before this grant existed: the null keyspace works meanwhile.
        log.warning("cluster_id_unreadable", key=CLUSTER_ID_KEY, error=str(exc),
                    cluster_id=configured)  # fmt: skip
        return configured
    except ValueError as exc:  # DecodeError: not PD's value
        if configured is None:
            raise
        log.warning("cluster_id_unreadable", key=CLUSTER_ID_KEY, error=str(exc),
                    cluster_id=configured)  # fmt: skip
        return configured
    if configured is not None:
        if stored is not None and stored != configured:
            log.warning("cluster_id_differs", configured=configured, stored=stored,
                        key=CLUSTER_ID_KEY, using=configured)  # fmt: skip
        return configured
    if stored is None:
        log.warning(
            "cluster_id_missing",
            key=CLUSTER_ID_KEY,
            consequence="keyspace names resolve once PD writes it, or with --cluster-id",
        )
    return stored


def init_cluster_id(client: EtcdClient, *, deadline: float = LOOKUP_DEADLINE) -> int:
    """The cluster id in ``/pd/cluster_id``, created first if missing, as PD creates it: a
    random id (unix seconds << 32 | 32 random bits) put only if the key does not exist, so
    concurrent starters agree on one. For ``rmwatch dev`` and tests of a PD-shaped etcd."""
    candidate = (int(time.time()) << 32) | secrets.randbits(32)

    def attempt() -> int:
        tx = client.transactions
        result = txn(
            client,
            compare=[tx.create(CLUSTER_ID_KEY) == 0],
            success=[tx.put(CLUSTER_ID_KEY, encode_cluster_id(candidate))],
            failure=[tx.get(CLUSTER_ID_KEY)],
        )
        if result.succeeded:
            return candidate
        # The compare failed, so the key exists: the failure branch read it (PD does the same).
        return decode_cluster_id(bytes(result.responses[0].response_range.kvs[0].value))

    return call_with_retry(attempt, deadline=deadline, what=f"init {CLUSTER_ID_KEY}")


class KeyspaceResolver:
    """``resolver(name) -> id | None`` over an etcd connection (thread-safe, blocking).

    The one name → id lookup of rmwatch: the sidecar resolves ``keyspace_name`` with it, and
    the writer's ``resolve_keyspace`` too. The layout's cluster id places PD's index; without
    one, ``/pd/cluster_id`` is read at the first lookup and again at each lookup until found
    (PD writes it when it first starts). ``deadline`` bounds one lookup, retries included.
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
        self._cluster_id = layout.cluster_id
        self._ttl = ttl
        self._deadline = deadline
        self._clock = clock
        self._cache: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._warned = False

    @property
    def cluster_id(self) -> int | None:
        """The cluster id in use; None while neither configured nor found in etcd."""
        return self._cluster_id

    def _index_prefix(self) -> str | None:
        """PD's index prefix, or None while no cluster id is known. No lock: two threads
        finding the id at once both read the same key and store the same value."""
        if self._cluster_id is None:
            found = read_cluster_id(self._client, deadline=self._deadline)
            if found is None:
                if not self._warned:
                    self._warned = True
                    log.warning("keyspace_index_unknown", key=CLUSTER_ID_KEY,
                                reason="no cluster id configured and none stored")  # fmt: skip
                return None
            self._cluster_id = found
            log.info("cluster_id_found", cluster_id=found, key=CLUSTER_ID_KEY)
        return keyspace_index_prefix(self._cluster_id)

    def __call__(self, name: str) -> int | None:
        """The id of keyspace ``name``; None when PD has no such keyspace (or no keyspace index
        at all: no cluster id).

        Raises EtcdUnavailableError when etcd does not answer, EtcdAuthError when our user may
        not read PD's keys, DecodeError when the index (or ``/pd/cluster_id``) holds something
        PD does not write.
        """
        now = self._clock()
        with self._lock:
            hit = self._cache.get(name)
        if hit is not None and hit[1] > now:
            return hit[0]
        prefix = self._index_prefix()
        if prefix is None:
            return None
        key = prefix + name
        value = _get(self._client, key, self._deadline)
        if value is None:
            return None
        keyspace_id = parse_keyspace_index(key, value)
        with self._lock:
            if len(self._cache) >= MAX_ENTRIES:
                self._cache.clear()  # rare; a full reload costs one etcd get per name
            self._cache[name] = (keyspace_id, now + self._ttl)
        return keyspace_id

    def resolve(self, name: str) -> int:
        """The id of keyspace ``name``; NotFoundError (PD's text, HTTP 404) when PD has no such
        keyspace, saying so when the reason is that no cluster id is known."""
        found = self(name)
        if found is None:
            reason = None
            if self._cluster_id is None:
                reason = f"no PD cluster id: none configured (--cluster-id) and no {CLUSTER_ID_KEY}"
            raise keyspace_not_found(name, reason)
        return found


__all__ = [
    "DEFAULT_TTL",
    "LOOKUP_DEADLINE",
    "KeyspaceResolver",
    "cluster_id_at_start",
    "init_cluster_id",
    "keyspace_not_found",
    "read_cluster_id",
]
