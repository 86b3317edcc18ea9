"""Recording a run: what clients were told, and what etcd really did.

Two independent sources:

- the **truth log**: a raw gRPC watch of the whole root prefix (metadata keys *and* the writer
  leader key), opened at the revision the test starts, reconnecting by itself from the last
  event it recorded + 1. It shares no code with the replica (no ``watcher.*`` import): it is
  the oracle. ``TruthWatcher.sync()`` puts a sentinel key beside the metadata prefix and waits
  until the watch delivers it, so "the log is complete up to revision S" never relies on
  progress notifications (etcd < 3.5.8 can send those ahead of pending events).
- the **client side** (``Recorder``): acknowledged writes (with commit revision, writer name and
  leader epoch when known), writes whose outcome is unknown ("maybe": either is accepted),
  reads served by replicas (sampled from ``Replica.snapshot()``: its revision is the read
  revision, ``Entry.raw`` the bytes), applied revisions and listener events per replica, and
  at the end each replica's whole cache and etcd's range.

Compaction must never outrun the truth log (the history it needs would be gone): tests compact
through ``TruthWatcher.compact()``, which syncs first and compacts at the synced revision.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import queue
import random
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from pyetcd import etcdrpc
from pyetcd.utils import prefix_range_end


class _Unknown:
    """The value of a put whose exact bytes the client cannot know (e.g. a patch on old bytes)."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<unknown bytes>"


UNKNOWN: Any = _Unknown()
_DELETE = 1  # mvccpb.Event.EventType.DELETE


# ---- records ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrueEvent:
    """One key change etcd committed: ``value`` None is a delete."""

    revision: int
    key: str
    value: bytes | None
    create_revision: int = 0


@dataclass(frozen=True, slots=True)
class WriteRecord:
    """A write a client issued.

    ``outcome``: ``ok`` (acknowledged: ``revision`` is what the writer returned), ``maybe``
    (unknown: the connection broke, a 5xx...; either outcome is accepted). ``value`` is the
    bytes written, None for a delete, UNKNOWN when the client cannot know them. ``epoch`` is
    the writer's leader epoch when the commit happened, when known (None otherwise).
    """

    op: str
    key: str
    value: Any
    revision: int | None
    writer: str
    epoch: int | None = None
    outcome: str = "ok"
    wall: float = 0.0


@dataclass(frozen=True, slots=True)
class ReadRecord:
    """One key a replica served: ``value`` None means the key was absent at ``revision``."""

    replica: str
    key: str
    value: bytes | None
    revision: int
    wall: float = 0.0


@dataclass(frozen=True, slots=True)
class AppliedRecord:
    """A replica's revision seen at ``wall``: by sampling (``sample``) or an event (``event:*``)."""

    replica: str
    revision: int
    wall: float
    source: str = "sample"
    key: str | None = None


# ---- the truth log ---------------------------------------------------------------------------


class OutsideHistoryError(LookupError):
    """A revision before the truth log's start (nothing is known about it)."""


class TruthLog:
    """etcd's state at ``start_revision`` plus every event after it, indexed by key."""

    def __init__(
        self,
        start_revision: int,
        initial: dict[str, tuple[bytes, int, int]] | None = None,
        events: Iterable[TrueEvent] = (),
    ) -> None:
        self.start_revision = start_revision
        # key -> [(revision, value|None, mod_revision, create_revision)], sorted by revision
        self._by_key: dict[str, list[tuple[int, bytes | None, int, int]]] = {}
        self._revs: dict[str, list[int]] = {}
        self.events: list[TrueEvent] = []
        self.covered = start_revision  # every event up to here is recorded
        self.complete = True  # False once the watch hit a compaction: history has a hole
        self.hole: str | None = None
        for key, (value, mod, create) in (initial or {}).items():
            self._add(key, start_revision, value, mod, create)
        for event in events:
            self.append(event)

    def _add(self, key: str, revision: int, value: bytes | None, mod: int, create: int) -> None:
        revs = self._revs.setdefault(key, [])
        rows = self._by_key.setdefault(key, [])
        if revs and revision < revs[-1]:
            raise ValueError(f"truth event for {key} at {revision} after {revs[-1]}")
        revs.append(revision)
        rows.append((revision, value, mod, create))

    def append(self, event: TrueEvent) -> None:
        """Record one event (events must come in revision order)."""
        self.events.append(event)
        self._add(event.key, event.revision, event.value, event.revision, event.create_revision)
        self.covered = max(self.covered, event.revision)

    def keys(self) -> list[str]:
        """Every key the log knows (present at the start or changed since)."""
        return list(self._by_key)

    def state(self, key: str, revision: int) -> tuple[bytes, int, int] | None:
        """``(value, mod_revision, create_revision)`` of ``key`` at ``revision``, None if absent."""
        if revision < self.start_revision:
            raise OutsideHistoryError(f"revision {revision} < log start {self.start_revision}")
        revs = self._revs.get(key)
        if not revs:
            return None
        i = bisect.bisect_right(revs, revision) - 1
        if i < 0:
            return None
        _, value, mod, create = self._by_key[key][i]
        return None if value is None else (value, mod, create)

    def value(self, key: str, revision: int) -> bytes | None:
        """The bytes of ``key`` at ``revision`` (None: absent)."""
        found = self.state(key, revision)
        return None if found is None else found[0]

    def fold(self, prefix: str, revision: int) -> dict[str, tuple[bytes, int]]:
        """``key -> (value, mod_revision)`` of every key under ``prefix`` at ``revision``."""
        out = {}
        for key in self._by_key:
            if key.startswith(prefix):
                found = self.state(key, revision)
                if found is not None:
                    out[key] = (found[0], found[1])
        return out

    def history_of(self, key: str) -> list[tuple[int, bytes | None, int, int]]:
        """``[(revision, value|None, mod_revision, create_revision)]`` of ``key``, oldest first
        (the first row may be the state at the log's start)."""
        return list(self._by_key.get(key, []))

    def events_at(self, revision: int) -> list[TrueEvent]:
        """Events committed at exactly ``revision``."""
        return [e for e in self.events if e.revision == revision]


def _range_all(stub: Any, prefix: bytes, timeout: float, revision: int = 0) -> Any:
    request = etcdrpc.RangeRequest(key=prefix, range_end=prefix_range_end(prefix),
                                   revision=revision)  # fmt: skip
    return stub.Range(request, timeout)


class TruthWatcher:
    """Keeps a ``TruthLog`` of everything under ``root_prefix`` from the moment it starts.

    Args:
        endpoints: ``host:port`` of every etcd member; it rotates through them on failures.
        root_prefix: the deployment's root prefix (must be non-empty in shared etcd).
        stall_timeout: cancel a stream silent this long (a frozen member) and reconnect.
    """

    def __init__(
        self, endpoints: Sequence[str], root_prefix: str, *, stall_timeout: float = 2.0
    ) -> None:
        self.endpoints = list(endpoints)
        self.root_prefix = root_prefix
        self.prefix = root_prefix.encode()
        self.sync_key = f"{root_prefix}rmwatch-history/sync"
        self.stall_timeout = stall_timeout
        self.log: TruthLog | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._endpoint_cycle = itertools.cycle(self.endpoints)
        self._call: Any = None
        self._requests: queue.Queue[Any] | None = None
        self._last_response = time.monotonic()
        self.reconnects = 0

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> TruthWatcher:
        """Read the initial state (retrying over members) and start following the watch."""
        deadline = time.monotonic() + timeout
        while True:
            endpoint = next(self._endpoint_cycle)
            try:
                with grpc.insecure_channel(endpoint) as channel:
                    resp = _range_all(etcdrpc.KVStub(channel), self.prefix, 2.0)
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        initial = {
            kv.key.decode("utf-8", "surrogateescape"): (
                bytes(kv.value), int(kv.mod_revision), int(kv.create_revision))
            for kv in resp.kvs
        }  # fmt: skip
        self.log = TruthLog(int(resp.header.revision), initial)
        self._thread = threading.Thread(target=self._run, name="truth-watch", daemon=True)
        self._thread.start()
        threading.Thread(target=self._heartbeat, name="truth-heartbeat", daemon=True).start()
        return self

    def close(self) -> None:
        """Stop the watch (idempotent)."""
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()
        if self._requests is not None:
            self._requests.put(None)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> TruthWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the watch ------------------------------------------------------------------------

    def _requests_iter(self, q: queue.Queue[Any]) -> Iterator[Any]:
        while True:
            item = q.get()
            if item is None:
                return
            yield item

    def _run(self) -> None:
        log = self.log
        assert log is not None
        while not self._stop.is_set():
            endpoint = next(self._endpoint_cycle)
            q: queue.Queue[Any] = queue.Queue()
            q.put(etcdrpc.WatchRequest(create_request=etcdrpc.WatchCreateRequest(
                key=self.prefix, range_end=prefix_range_end(self.prefix),
                start_revision=log.covered + 1, progress_notify=True)))  # fmt: skip
            channel = grpc.insecure_channel(endpoint)
            try:
                self._requests = q
                self._call = etcdrpc.WatchStub(channel).Watch(self._requests_iter(q))
                self._last_response = time.monotonic()
                for response in self._call:
                    self._last_response = time.monotonic()
                    if response.compact_revision:
                        with self._cond:
                            log.complete = False
                            log.hole = (f"truth watch from {log.covered + 1} hit compaction at "
                                        f"{response.compact_revision}")  # fmt: skip
                            self._cond.notify_all()
                        self._stop.set()
                        return
                    if response.canceled:
                        break
                    if response.events:
                        with self._cond:
                            for ev in response.events:
                                kv = ev.kv
                                log.append(TrueEvent(
                                    int(kv.mod_revision),
                                    kv.key.decode("utf-8", "surrogateescape"),
                                    None if ev.type == _DELETE else bytes(kv.value),
                                    0 if ev.type == _DELETE else int(kv.create_revision),
                                ))  # fmt: skip
                            self._cond.notify_all()
            except grpc.RpcError:
                pass
            finally:
                q.put(None)
                with contextlib.suppress(Exception):
                    channel.close()
            if not self._stop.is_set():
                self.reconnects += 1
                self._stop.wait(0.05)

    def _heartbeat(self) -> None:
        while not self._stop.wait(0.5):
            q, call = self._requests, self._call
            if call is None or q is None:
                continue
            if time.monotonic() - self._last_response > self.stall_timeout:
                call.cancel()  # frozen member: reconnect elsewhere
                self._last_response = time.monotonic()
            else:
                q.put(etcdrpc.WatchRequest(progress_request=etcdrpc.WatchProgressRequest()))

    # ---- syncing and compaction -----------------------------------------------------------

    def _put_sentinel(self, deadline: float) -> int:
        value = uuid.uuid4().hex.encode()
        while True:
            endpoint = next(self._endpoint_cycle)
            try:
                with grpc.insecure_channel(endpoint) as channel:
                    resp = etcdrpc.KVStub(channel).Put(
                        etcdrpc.PutRequest(key=self.sync_key.encode(), value=value), 1.5
                    )
                return int(resp.header.revision)
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def wait_for(self, revision: int, timeout: float) -> None:
        """Block until the log covers ``revision``; AssertionError after ``timeout`` s."""
        log = self.log
        assert log is not None
        with self._cond:
            ok = self._cond.wait_for(lambda: log.covered >= revision or not log.complete,
                                     timeout)  # fmt: skip
        if not log.complete:
            raise AssertionError(f"truth log incomplete: {log.hole}")
        if not ok:
            raise AssertionError(
                f"truth log reached only {log.covered}, not {revision}, within {timeout}s"
            )

    def sync(self, timeout: float = 20.0) -> int:
        """Put the sentinel and wait until the log has it: the log is complete up to the
        returned revision."""
        deadline = time.monotonic() + timeout
        revision = self._put_sentinel(deadline)
        self.wait_for(revision, max(0.1, deadline - time.monotonic()))
        return revision

    def compact(self, revision: int | None = None, timeout: float = 20.0) -> int:
        """Compact etcd at ``revision`` (default: now), never past what the log holds."""
        synced = self.sync(timeout)
        target = synced if revision is None else min(revision, synced)
        deadline = time.monotonic() + timeout
        while True:
            endpoint = next(self._endpoint_cycle)
            try:
                with grpc.insecure_channel(endpoint) as channel:
                    etcdrpc.KVStub(channel).Compact(
                        etcdrpc.CompactionRequest(revision=target, physical=True), 2.0
                    )
                return target
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.OUT_OF_RANGE:  # already compacted past it
                    return target
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    # etcd may have applied it (physical compaction waits for the backend):
                    # harmless either way, the log already holds everything up to ``target``
                    return target
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def range_now(self, timeout: float = 10.0) -> tuple[int, dict[str, tuple[bytes, int]]]:
        """etcd's current range of the root prefix: ``(revision, key -> (value, mod))``."""
        deadline = time.monotonic() + timeout
        while True:
            endpoint = next(self._endpoint_cycle)
            try:
                with grpc.insecure_channel(endpoint) as channel:
                    resp = _range_all(etcdrpc.KVStub(channel), self.prefix, 2.0)
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        items = {kv.key.decode("utf-8", "surrogateescape"): (bytes(kv.value), int(kv.mod_revision))
                 for kv in resp.kvs}  # fmt: skip
        return int(resp.header.revision), items


# ---- the whole history -----------------------------------------------------------------------


@dataclass
class History:
    """Everything the checker needs.

    ``fenced_from``: metadata events at or after this revision must have been committed under a
    leader (None: the run had unfenced writers, only epochs of acked writes are checked).
    """

    truth: TruthLog
    data_prefix: str
    leader_key: str
    writes: list[WriteRecord] = field(default_factory=list)
    reads: list[ReadRecord] = field(default_factory=list)
    applied: list[AppliedRecord] = field(default_factory=list)
    replica_finals: dict[str, tuple[int, dict[str, tuple[bytes, int]]]] = field(
        default_factory=dict
    )
    etcd_final: tuple[int, dict[str, tuple[bytes, int]]] | None = None
    fenced_from: int | None = None


class Recorder:
    """Thread-safe collector of a run's client-side history, on top of a ``TruthWatcher``."""

    def __init__(self, truth: TruthWatcher, data_prefix: str, leader_key: str) -> None:
        self.truth = truth
        self.data_prefix = data_prefix
        self.leader_key = leader_key
        self._lock = threading.Lock()
        self.writes: list[WriteRecord] = []
        self.reads: list[ReadRecord] = []
        self.applied: list[AppliedRecord] = []
        self.replica_finals: dict[str, tuple[int, dict[str, tuple[bytes, int]]]] = {}
        self.etcd_final: tuple[int, dict[str, tuple[bytes, int]]] | None = None
        self.fenced_from: int | None = None
        self._keys: set[str] = set()
        self.samples = 0
        self.refusals: list[str] = []

    # ---- writes ---------------------------------------------------------------------------

    def write(self, op: str, key: str, value: Any, revision: int, writer: str,
              epoch: int | None = None) -> None:  # fmt: skip
        """An acknowledged write (``revision`` as returned to the client)."""
        with self._lock:
            self._keys.add(key)
            self.writes.append(WriteRecord(op, key, value, revision, writer, epoch, "ok",
                                           time.time()))  # fmt: skip

    def maybe(self, op: str, key: str, value: Any, writer: str) -> None:
        """A write whose outcome the client does not know."""
        with self._lock:
            self._keys.add(key)
            self.writes.append(WriteRecord(op, key, value, None, writer, None, "maybe",
                                           time.time()))  # fmt: skip

    # ---- replicas ----------------------------------------------------------------------------

    def attach(self, replica_id: str, replica: Any) -> Any:
        """Record every listener event of ``replica`` (revision order is checked)."""

        def on_event(event: Any) -> None:
            with self._lock:
                self.applied.append(AppliedRecord(replica_id, int(event.revision), time.time(),
                                                  f"event:{event.source}", event.key))  # fmt: skip

        return replica.subscribe(on_event)

    def sample(self, replica_id: str, replica: Any, *, min_revision: int | None = None,
               timeout: float = 5.0, extra: int | None = None) -> int | None:  # fmt: skip
        """Read every written key from one snapshot of ``replica`` (absent keys too) plus every
        other key it holds (or ``extra`` of them at random); return the snapshot's revision,
        or None when the replica refused (not ready / timed out)."""
        from rmwatch.errors import ReplicaError  # noqa: PLC0415

        try:
            snap = replica.snapshot(min_revision=min_revision, timeout=timeout)
        except ReplicaError as exc:  # not ready, min_revision timed out, closed: no read served
            self.refusals.append(f"{replica_id}: {exc!r}")
            return None
        if min_revision is not None and snap.revision < min_revision:
            raise AssertionError(
                f"replica {replica_id} served revision {snap.revision} for "
                f"min_revision={min_revision}"
            )
        now = time.time()
        entries = snap.entries
        with self._lock:
            keys = set(self._keys)
        others = [k for k in entries if k.startswith(self.data_prefix)]
        if extra is not None and len(others) > extra:
            others = random.sample(others, extra)
        keys.update(others)
        rows = []
        for key in keys:
            entry = entries.get_fast(key)
            rows.append(ReadRecord(replica_id, key, None if entry is None else bytes(entry.raw),
                                   snap.revision, now))  # fmt: skip
        with self._lock:
            self.reads.extend(rows)
            self.applied.append(AppliedRecord(replica_id, snap.revision, now))
            self.samples += 1
        return int(snap.revision)

    def note_revision(self, replica_id: str, revision: int) -> None:
        """A revision a replica reported (e.g. ``replica.revision`` or an HTTP X-Revision)."""
        with self._lock:
            self.applied.append(AppliedRecord(replica_id, revision, time.time()))

    def read(self, replica_id: str, key: str, value: bytes | None, revision: int) -> None:
        """One read served (e.g. through the sidecar)."""
        with self._lock:
            self.reads.append(ReadRecord(replica_id, key, value, revision, time.time()))

    def final_replica(self, replica_id: str, replica: Any) -> int:
        """Record the replica's whole cache now (its revision and raw items)."""
        snap = replica._snap  # the current snapshot, ready or not
        assert snap is not None, f"replica {replica_id} never loaded"
        items = {k: (bytes(v), int(m)) for k, (v, m) in snap.raw_items().items()}
        with self._lock:
            self.replica_finals[replica_id] = (int(snap.revision), items)
        return int(snap.revision)

    def final_etcd(self) -> int:
        """Sync the truth log, then record etcd's range of the root prefix."""
        self.truth.sync()
        revision, items = self.truth.range_now()
        self.truth.wait_for(revision, 10)
        with self._lock:
            self.etcd_final = (revision, items)
        return revision

    # ---- output --------------------------------------------------------------------------

    def history(self) -> History:
        """A snapshot of everything recorded so far."""
        log = self.truth.log
        assert log is not None
        with self._lock:
            return History(
                truth=log,
                data_prefix=self.data_prefix,
                leader_key=self.leader_key,
                writes=list(self.writes),
                reads=list(self.reads),
                applied=list(self.applied),
                replica_finals=dict(self.replica_finals),
                etcd_final=self.etcd_final,
                fenced_from=self.fenced_from,
            )
