"""Leader election among writers, with fencing, on one etcd lease.

Writers run as a group; exactly one holds the leader key and may commit. The key lives OUTSIDE
``resource_group/`` (replicas watch that prefix and must not see election traffic):
``{root_prefix}rmwatch/writer/leader``. Its value is JSON ``{"name","address","lease"}``, plus
``"grpc_address"`` (``host:port`` of the leader's gRPC API) when the writer serves gRPC. The
field is optional both ways: a record without it (an older writer, or one without gRPC) reads
as ``grpc_address=None``, and older readers ignore it.

- Campaign: ``txn(create_revision(key) == 0 -> put(key, value, lease))``. The winner's
  **epoch** is the key's create_revision: every new leader key is a new create, so epochs only
  go up.
- Fencing: every write transaction carries ``fence_compares()``: create_revision(key) == epoch
  AND value(key) == our exact value (it names our lease). A lease that was revoked or expired
  deletes the key; a new leader re-creates it at a higher revision with another lease. Either
  way the compare fails inside etcd, atomically with the write, so a deposed leader's write is
  never applied and never acknowledged, whatever its local clock believes.
- Keepalive: a thread of ours sends one keepalive (``keepalive_once``, TTL/3 deadline) every
  TTL/3 (5 s TTL: every 1.7 s, two lost keepalives still leave 1.7 s). Locally we assume
  leadership lost at ``send time of the last acknowledged keepalive + TTL``: the server's
  expiry is measured from when it *received* that keepalive, which is later, so we always
  step down no later than etcd expires the lease.
- Followers poll the key every ``poll_interval`` (150 ms): a plain linearizable get, and a lease
  grant + create txn only when the key is absent. Polling was chosen over a watch because a
  pyetcd watch never reconnects by itself and blocks forever on a frozen member (no FIN/RST
  reaches it); a 150 ms poll bounds takeover after a resign to about 0.2 s.
- ``resign()`` deletes the key (fenced) and revokes the lease, so another writer takes over at
  its next poll, and stops campaigning for good (a drained writer must not win again).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rmwatch._logging import get_logger
from rmwatch.errors import NotLeaderError
from rmwatch.store.etcd import (
    Compare,
    EtcdClient,
    TxnOp,
    grant_lease,
    keepalive_once,
    revoke_lease,
    txn,
)
from rmwatch.store.keys import KeyLayout

log = get_logger("writer")

DEFAULT_TTL = 5.0
DEFAULT_POLL_INTERVAL = 0.15


def leader_key(layout: KeyLayout) -> str:
    """The election key: beside, not under, the ``resource_group/`` prefix replicas watch."""
    return f"{layout.root_prefix}rmwatch/writer/leader"


@dataclass(frozen=True, slots=True)
class LeaderInfo:
    """Who leads: name, HTTP address of its API, lease id, epoch (key create_revision), and
    the ``host:port`` of its gRPC API (None when it serves none or wrote an older record)."""

    name: str
    address: str
    lease: int
    epoch: int
    grpc_address: str | None = None


def _parse_leader(value: bytes, create_revision: int) -> LeaderInfo | None:
    try:
        data = json.loads(value)
        grpc_address = data.get("grpc_address")
        return LeaderInfo(
            name=str(data["name"]),
            address=str(data["address"]),
            lease=int(data["lease"]),
            epoch=int(create_revision),
            grpc_address=str(grpc_address) if grpc_address else None,
        )
    except (ValueError, KeyError, TypeError):
        # A foreign or corrupt value: nobody we can forward to, but still not us.
        return None


def read_leader(client: EtcdClient, layout: KeyLayout) -> LeaderInfo | None:
    """Read the current leader from etcd (linearizable), or None when no writer leads."""
    value, meta = client.get(leader_key(layout))
    if value is None or meta is None:
        return None
    return _parse_leader(value, int(meta.create_revision))


class Leadership:
    """One writer's membership in the election: campaigns, keeps its lease, fences writes.

    Args:
        client: the etcd connection (shared with the writer is fine; gRPC multiplexes).
        layout: key layout (root prefix) of the deployment.
        name: this writer's name (unique in the group).
        address: ``http://host:port`` of this writer's API, where followers forward writes.
        grpc_address: ``host:port`` of this writer's gRPC API, where followers forward gRPC
            writes (None: no gRPC). Public so a CLI that binds port 0 can set it once the port
            is known; it takes effect at the next campaign, so set it before ``start()``.
        ttl: lease TTL in seconds (etcd grants whole seconds; rounded up).
        poll_interval: follower polling period in seconds.
        clock: monotonic clock, injectable so tests can freeze a "paused" writer's view of time.
    """

    def __init__(
        self,
        *,
        client: EtcdClient,
        layout: KeyLayout,
        name: str,
        address: str,
        grpc_address: str | None = None,
        ttl: float = DEFAULT_TTL,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0:
            raise ValueError("lease TTL must be positive")
        self._client = client
        self.layout = layout
        self.key = leader_key(layout)
        self.name = name
        self.address = address
        self.grpc_address = grpc_address
        self.ttl = float(math.ceil(ttl))
        self.poll_interval = poll_interval
        self._clock = clock
        # One RPC may use at most a third of the TTL, so a hung call cannot eat the lease.
        self._rpc_timeout = max(0.2, self.ttl / 3)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._resigned = False
        self._lease_id: int | None = None
        self._value: bytes | None = None
        self._epoch: int | None = None
        self._leader = False
        self._deadline = 0.0
        self._known: LeaderInfo | None = None

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> Leadership:
        """Start campaigning (and, once elected, keeping the lease alive) in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"leadership-{self.name}", daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Resign if leading and stop the thread (bounded by one RPC deadline)."""
        self.resign()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._rpc_timeout * 2 + self.poll_interval)

    def resign(self) -> None:
        """Give up leadership now (delete the key, revoke the lease) and stop campaigning."""
        with self._lock:
            self._resigned = True
            was_leader = self._leader
            compares = self._fence_unlocked() if was_leader else []
            lease_id = self._lease_id
            self._leader = False
            self._lease_id = None
            self._changed.notify_all()
        tx = self._client.transactions
        if was_leader:
            try:
                txn(self._client, compares, [tx.delete(self.key)])
            except Exception as exc:  # the lease revoke below deletes the key anyway
                log.warning("resign_delete_failed", key=self.key, error=repr(exc))
        if lease_id is not None:
            try:
                revoke_lease(self._client, lease_id, timeout=self._rpc_timeout)
            except Exception as exc:  # expiry after TTL is the fallback
                log.warning("resign_revoke_failed", lease=lease_id, error=repr(exc))
        if was_leader:
            log.info("leader_resigned", name=self.name, key=self.key)

    # ---- state -------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """True while we hold the key and our lease cannot have expired yet."""
        with self._lock:
            return self._is_leader_unlocked()

    def _is_leader_unlocked(self) -> bool:
        return self._leader and self._clock() < self._deadline

    @property
    def epoch(self) -> int | None:
        """Our epoch (leader key create_revision) while leading, else None."""
        with self._lock:
            return self._epoch if self._is_leader_unlocked() else None

    @property
    def resigned(self) -> bool:
        """True once ``resign()`` ran: this writer no longer campaigns."""
        return self._resigned

    def known_leader(self) -> LeaderInfo | None:
        """The leader as last observed by polling or by a failed fence (may be stale)."""
        with self._lock:
            return self._known

    def wait_until_leader(self, timeout: float) -> bool:
        """Block until this writer leads or ``timeout`` seconds pass; return is_leader."""
        end = time.monotonic() + timeout
        with self._changed:
            while not self._is_leader_unlocked():
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.05))
            return True

    # ---- fencing -----------------------------------------------------------------------

    def fence_compares(self) -> list[Compare]:
        """Compares that hold only while we lead; raise NotLeaderError if we do not."""
        with self._lock:
            if not self._is_leader_unlocked():
                known = self._known
                raise NotLeaderError(
                    "this writer is not the leader",
                    leader=known.address if known and known.address != self.address else None,
                )
            return self._fence_unlocked()

    def _fence_unlocked(self) -> list[Compare]:
        tx = self._client.transactions
        return [tx.create(self.key) == self._epoch, tx.value(self.key) == self._value]

    def fence_failure_ops(self) -> list[TxnOp]:
        """The failure-branch op that reads the leader key, for ``check_fence``."""
        return [self._client.transactions.get(self.key)]

    def check_fence(self, response: Any) -> None:
        """Given the failure-branch response of ``fence_failure_ops``, raise if deposed.

        If the key no longer carries our epoch and value the fence is what failed: step down,
        remember who leads now, and raise NotLeaderError naming that leader's address.
        """
        kvs = list(response.response_range.kvs)
        with self._lock:
            if kvs and kvs[0].create_revision == self._epoch and kvs[0].value == self._value:
                return
            current = _parse_leader(kvs[0].value, kvs[0].create_revision) if kvs else None
            was = self._leader
            self._leader = False
            self._known = current
            self._changed.notify_all()
        if was:
            log.warning("leader_deposed", name=self.name, epoch=self._epoch,
                        new_leader=current.address if current else None)  # fmt: skip
        raise NotLeaderError(
            "leadership lost: the leader key changed", leader=current.address if current else None
        )

    # ---- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._resigned:
                return
            try:
                if self.is_leader:
                    self._keep()
                else:
                    self._step_down_if_expired()
                    self._campaign()
            except Exception as exc:  # transient etcd trouble: try again next period
                log.debug("leadership_iteration_failed", name=self.name, error=repr(exc))
                self._stop.wait(self.poll_interval)

    def _step_down_if_expired(self) -> None:
        with self._lock:
            if self._leader and self._clock() >= self._deadline:
                self._leader = False
                # Expired server-side by now (or about to be): never reuse the lease, and do
                # not "adopt" a key still showing our old value at the next campaign.
                self._lease_id = None
                self._value = None
                self._changed.notify_all()
                log.warning("leader_lease_expired", name=self.name, epoch=self._epoch)

    def _keep(self) -> None:
        sent = self._clock()
        try:
            ttl = self._keepalive_once()
        except Exception as exc:
            log.warning("keepalive_failed", name=self.name, error=repr(exc))
            ttl = None
        with self._lock:
            if ttl is not None and ttl > 0:
                self._deadline = sent + self.ttl
            elif ttl is not None:
                # TTL 0: the lease is gone (revoked or expired); so is our key.
                self._leader = False
                self._lease_id = None
                self._value = None
                self._changed.notify_all()
                log.warning("leader_lease_lost", name=self.name, epoch=self._epoch)
        self._step_down_if_expired()
        self._stop.wait(self.ttl / 3)

    def _keepalive_once(self) -> int:
        """Send one keepalive with a TTL/3 deadline; return the TTL etcd granted (0: gone)."""
        lease_id = self._lease_id
        if lease_id is None:
            return 0  # no lease to keep: etcd answers TTL 0 for an unknown lease too
        return keepalive_once(self._client, lease_id, timeout=self._rpc_timeout)

    def _campaign(self) -> None:
        client = self._client
        value, meta = client.get(self.key)
        if value is not None and meta is not None:
            info = _parse_leader(value, int(meta.create_revision))
            with self._lock:
                self._known = info
                ours = self._value is not None and value == self._value
            if ours:
                # Our own key (a create whose answer we lost): adopt it, but only once a
                # keepalive proves the lease alive; its TTL then starts from this send.
                sent = self._clock()
                if self._keepalive_once() > 0:
                    with self._lock:
                        if not self._resigned:
                            self._adopt(int(meta.create_revision), sent)
                            return
            self._stop.wait(self.poll_interval)
            return
        sent = self._clock()
        lease_id = grant_lease(client, int(self.ttl))
        record: dict[str, object] = {"name": self.name, "address": self.address, "lease": lease_id}
        if self.grpc_address:
            record["grpc_address"] = self.grpc_address
        mine = json.dumps(record).encode()
        with self._lock:
            self._lease_id = lease_id
            self._value = mine
        tx = client.transactions
        result = txn(
            client,
            [tx.create(self.key) == 0],
            [tx.put(self.key, mine, lease=lease_id)],
            [tx.get(self.key)],
        )
        with self._lock:
            if result.succeeded and not self._resigned:
                self._adopt(result.revision, sent)
                return
        # Lost the race: someone else created it first. Drop our unused lease.
        kvs = list(result.responses[0].response_range.kvs) if result.responses else []
        with self._lock:
            self._known = _parse_leader(kvs[0].value, kvs[0].create_revision) if kvs else None
            self._lease_id = None
        try:
            revoke_lease(client, lease_id, timeout=self._rpc_timeout)
        except Exception as exc:  # it expires after the TTL anyway
            log.debug("unused_lease_revoke_failed", error=repr(exc))
        self._stop.wait(self.poll_interval)

    def _adopt(self, epoch: int, sent: float) -> None:
        # Caller holds the lock.
        self._epoch = epoch
        self._leader = True
        self._deadline = sent + self.ttl
        self._known = LeaderInfo(
            self.name, self.address, self._lease_id or 0, epoch, self.grpc_address
        )
        self._changed.notify_all()
        log.info("leader_elected", name=self.name, epoch=epoch, key=self.key,
                 address=self.address)  # fmt: skip


__all__ = ["DEFAULT_TTL", "LeaderInfo", "Leadership", "leader_key", "read_leader"]
