"""The replica: snapshot at one revision, watch from there, rebuild after compaction, and serve
nothing until caught up. Thread-safe, synchronous, usable as a library::

    with Replica(endpoints=["127.0.0.1:2379"]) as replica:
        replica.wait_ready(10)
        group = replica.get_group("rg1")          # Versioned(value=ResourceGroup, revision=...)

One worker thread owns the stream and publishes immutable snapshots by swapping a reference;
readers take no lock. A heartbeat thread asks etcd for progress every ``progress_interval`` and
cancels a stream that stays silent past ``stall_timeout`` (a frozen member sends no FIN/RST).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import grpc
import structlog
from pyetcd import exceptions as etcd_exc
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential, wait_random

from rmwatch.errors import (
    DigestMismatchError,
    EtcdUnavailableError,
    NotReadyError,
    ReplicaClosedError,
    RevisionTimeoutError,
)
from rmwatch.store.etcd import EtcdConfig, connect, mark_endpoint_failed
from rmwatch.store.etcd.watch import WatchSession
from rmwatch.store.keys import NULL_KEYSPACE_ID, KeyLayout
from rmwatch.store.models import ControllerConfig, GroupStates, ResourceGroup, ServiceLimit
from rmwatch.watcher.cache import (
    ChangeEvent,
    RawChange,
    Snapshot,
    Versioned,
    apply_changes,
    build_snapshot,
    diff_snapshots,
)
from rmwatch.watcher.digest import DigestResult, compare
from rmwatch.watcher.loader import DEFAULT_PAGE_SIZE, StoreMark, load_prefix, store_mark
from rmwatch.watcher.metrics import ReplicaMetrics
from rmwatch.watcher.state import ReplicaState, StateMachine, Transition
from rmwatch.watcher.validation import Validator

_log = structlog.get_logger("rmwatch.replica")
_DELETE = 1  # mvccpb.Event.EventType.DELETE
_versioned = tuple.__new__  # Versioned is a NamedTuple: this builds one without its __new__

Listener = Callable[[ChangeEvent], None]


class _StreamLostError(Exception):
    """The watch stream failed before it was healthy: retry with backoff."""


class Replica:
    """A read-only, always-consistent cache of the RM metadata prefix (see module doc)."""

    def __init__(
        self,
        *,
        endpoints: Sequence[str] | str | None = None,
        etcd: EtcdConfig | None = None,
        root_prefix: str = "",
        page_size: int = DEFAULT_PAGE_SIZE,
        max_staleness: float = 30.0,
        progress_interval: float = 1.0,
        stall_timeout: float = 8.0,
        digest_interval: float | None = None,
        strict_digest: bool = False,
        history: int = 100,
        client_factory: Callable[[EtcdConfig], Any] = connect,
        session_factory: Callable[..., WatchSession] = WatchSession,
        verify_prev_kv: bool = False,
    ) -> None:
        if etcd is None:
            if endpoints is None:
                raise ValueError("give endpoints=[...] or etcd=EtcdConfig(...)")
            etcd = EtcdConfig.parse(endpoints)
        self.etcd = etcd
        self.layout = KeyLayout(root_prefix)
        self.page_size = page_size
        self.max_staleness = max_staleness
        self.progress_interval = progress_interval
        # 8 s: keepalive (5 s + 2 s ping timeout) normally fails a frozen stream first; this
        # catches a server that answers pings but sends nothing, with progress asked every 1 s.
        self.stall_timeout = stall_timeout
        self.digest_interval = digest_interval
        self.strict_digest = strict_digest
        self.metrics = ReplicaMetrics()
        self._sm = StateMachine(history=history, on_transition=self._on_transition)
        self._client_factory = client_factory
        self._session_factory = session_factory  # a seam for tests that corrupt a real stream
        # prev_kv is off by default: the previous value is already in our snapshot, and asking
        # etcd 3.4 for it slowed catch-up replay from 112k to 7.6k events/s. With
        # verify_prev_kv the stream carries it and every event is checked against the cache.
        self.verify_prev_kv = verify_prev_kv
        self._validator = Validator(current=lambda: self._snap, metrics=self.metrics)
        self._client: Any = None
        self._snap: Snapshot | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listeners: list[Listener] = []
        self._listeners_lock = threading.Lock()
        self._session: WatchSession | None = None
        self._endpoint: str | None = None  # the member the last stream was opened on
        self._need_load = True
        self._pending_rebuild: tuple[str, str] | None = None
        self._mark: StoreMark | None = None
        self._caught_up = False
        self._serving = False  # caught up and not stopped: the read fast path's first test
        self._confirmed_at = time.monotonic()
        self._store_revision = 0
        self._failures = 0
        self._last_digest: DigestResult | None = None
        self._digest_error: BaseException | None = None
        self._started = False
        # Orders the worker's publishes against the confirmer's relabel: a relabel must never
        # land between the worker reading the current snapshot and publishing its successor,
        # or the successor could carry an older revision than the relabel.
        self._apply_lock = threading.Lock()
        self._crashed: str | None = None
        self._wanted = 0  # highest revision a reader waits for (min_revision)
        self._want_event = threading.Event()

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> Replica:
        """Connect and start the worker threads; returns at once (see ``wait_ready``)."""
        if self._stop.is_set():
            raise ReplicaClosedError("replica was closed")
        if self._started:
            return self
        self._started = True
        self._client = self._client_factory(self.etcd)
        self._spawn("worker", self._run)
        self._spawn("heartbeat", self._heartbeat)
        self._spawn("confirmer", self._confirmer)
        self._spawn("validator", lambda: self._validator.run(self._stop))
        if self.digest_interval:
            self._spawn("digest", self._digest_loop)
        return self

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=f"rmwatch-replica-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self, timeout: float = 10.0) -> None:
        """Stop every thread and close the etcd connection. Idempotent.

        The worker is stopped before its channel is closed: closing a gRPC channel while
        another thread is inside ``stub.Watch(...)`` on it crashed the C core (SIGSEGV in
        cygrpc). Only a worker still stuck after 1 s (a unary call to a frozen member, with up
        to 5 s of deadline left) gets its channel closed under it, which cancels that call.
        """
        self._stop.set()
        self._want_event.set()
        with self._cond:
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        channel_closed = False
        for thread in self._threads:
            while thread.is_alive() and time.monotonic() < deadline:
                session = self._session
                if session is not None:
                    session.cancel()
                thread.join(0.05)
                if (
                    thread.is_alive()
                    and not channel_closed
                    and self._client is not None
                    and time.monotonic() > deadline - timeout + 1.0
                ):
                    self._client.close()
                    channel_closed = True
        self._threads.clear()
        if self._client is not None and not channel_closed:
            self._client.close()
        self._client = None
        if self._sm.state is not ReplicaState.STOPPED:
            self._sm.move(ReplicaState.STOPPED, "closed", applied_revision=self.revision)

    def __enter__(self) -> Replica:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- readiness ------------------------------------------------------------------------

    @property
    def state(self) -> ReplicaState:
        """The current state."""
        return self._sm.state

    @property
    def revision(self) -> int:
        """The applied revision (0 before the first snapshot)."""
        snap = self._snap
        return 0 if snap is None else snap.revision

    def age(self) -> float:
        """Seconds since etcd last confirmed the cache (a watch or progress response)."""
        return time.monotonic() - self._confirmed_at

    def not_ready_reason(self) -> str | None:
        """Why the replica must not serve now, or None when it may."""
        state = self._sm.state
        if self._crashed is not None:
            return f"replica worker stopped: {self._crashed}"
        if state is ReplicaState.STOPPED:
            return "replica closed"
        if not self._caught_up:
            if self._snap is None:
                return "loading the first snapshot"
            return f"catching up to the store revision seen after the load (at {self.revision})"
        age = self.age()
        if age > self.max_staleness:
            return (
                f"stale: etcd last confirmed the cache {age:.1f}s ago "
                f"(bound {self.max_staleness:g}s)"
            )
        return None

    @property
    def ready(self) -> bool:
        """True when reads may be served."""
        return self.not_ready_reason() is None

    def wait_ready(self, timeout: float) -> None:
        """Block until ready; raise NotReadyError (with state and reason) after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            reason = self.not_ready_reason()
            if reason is None:
                return
            if self._stop.is_set():
                raise ReplicaClosedError("replica was closed")
            left = deadline - time.monotonic()
            if left <= 0:
                raise NotReadyError(str(self.state), reason)
            with self._cond:
                self._cond.wait(min(left, 0.05))

    def wait_for_revision(self, revision: int, timeout: float) -> int:
        """Block until the cache is at ``revision`` or later; return its revision.

        Any etcd revision works, also one moved on by writes outside the prefix (a writer's
        read header, say): see ``request_revision``.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                if self.revision >= revision or self._stop.is_set():
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RevisionTimeoutError(revision, self.revision, timeout)
                self.request_revision(revision)
                self._cond.wait(min(left, 0.1))
        if self._stop.is_set():
            raise ReplicaClosedError("replica was closed")
        return self.revision

    def request_revision(self, revision: int) -> None:
        """Ask the replica to reach ``revision``; returns at once (waiters call it as they poll).

        Events under the prefix arrive by the watch. But etcd's revision also moves on writes
        elsewhere, which never reach this watch: then a confirmer thread proves that nothing
        under the prefix changed between the applied revision and the store's, and relabels
        the unchanged snapshot with the store's revision.
        """
        self._wanted = max(self._wanted, revision)
        if revision > self.revision:
            self._want_event.set()

    # ---- reads ----------------------------------------------------------------------------

    def snapshot(self, *, min_revision: int | None = None, timeout: float = 5.0) -> Snapshot:
        """The current immutable snapshot (every read from it is at one revision)."""
        if min_revision is not None and self.revision < min_revision:
            self.wait_for_revision(min_revision, timeout)
        reason = self.not_ready_reason()
        if reason is not None:
            raise NotReadyError(str(self.state), reason)
        snap = self._snap
        assert snap is not None
        return snap

    def get_group(
        self,
        name: str,
        keyspace_id: int = NULL_KEYSPACE_ID,
        *,
        min_revision: int | None = None,
        timeout: float = 5.0,
    ) -> Versioned[ResourceGroup | None]:
        """A group's settings (None if absent) and the revision read at."""
        snap = self._snap
        if (
            min_revision is None
            and self._serving
            and snap is not None
            and time.monotonic() - self._confirmed_at <= self.max_staleness
        ):
            # The hot path: the same answer as snapshot() gives when ready, without building
            # the not-ready reason; tuple.__new__ skips the generic NamedTuple's 0.6 us.
            return _versioned(Versioned, (snap.get_group(name, keyspace_id), snap.revision))
        snap = self.snapshot(min_revision=min_revision, timeout=timeout)
        return Versioned(snap.get_group(name, keyspace_id), snap.revision)

    def list_groups(
        self,
        keyspace_id: int = NULL_KEYSPACE_ID,
        *,
        min_revision: int | None = None,
        timeout: float = 5.0,
    ) -> Versioned[tuple[ResourceGroup, ...]]:
        """Groups of a keyspace, sorted by name."""
        snap = self.snapshot(min_revision=min_revision, timeout=timeout)
        return Versioned(snap.list_groups(keyspace_id), snap.revision)

    def get_states(
        self,
        name: str,
        keyspace_id: int = NULL_KEYSPACE_ID,
        *,
        min_revision: int | None = None,
        timeout: float = 5.0,
    ) -> Versioned[GroupStates | None]:
        """A group's running states (None if absent)."""
        snap = self.snapshot(min_revision=min_revision, timeout=timeout)
        return Versioned(snap.get_states(name, keyspace_id), snap.revision)

    def get_controller(
        self, *, min_revision: int | None = None, timeout: float = 5.0
    ) -> Versioned[ControllerConfig]:
        """The controller config (PD's defaults when none is stored)."""
        snap = self.snapshot(min_revision=min_revision, timeout=timeout)
        return Versioned(snap.controller(), snap.revision)

    def get_service_limit(
        self,
        keyspace_id: int = NULL_KEYSPACE_ID,
        *,
        min_revision: int | None = None,
        timeout: float = 5.0,
    ) -> Versioned[ServiceLimit | None]:
        """A keyspace's service limit (None if unset)."""
        snap = self.snapshot(min_revision=min_revision, timeout=timeout)
        return Versioned(snap.service_limit(keyspace_id), snap.revision)

    def subscribe(self, callback: Listener) -> Callable[[], None]:
        """Call ``callback(event)`` for every change (watch events and rebuild diffs), in order,
        on the worker thread after the change is visible to reads. Keep it quick: the stream
        waits for it. Exceptions are logged and counted. Returns an unsubscribe function."""
        with self._listeners_lock:
            self._listeners = [*self._listeners, callback]

        def unsubscribe() -> None:
            with self._listeners_lock:
                self._listeners = [cb for cb in self._listeners if cb is not callback]

        return unsubscribe

    def transitions(self) -> list[Transition]:
        """The last recorded state transitions, oldest first."""
        return self._sm.history()

    def status(self) -> dict[str, Any]:
        """Everything /status shows: state, revisions, lag, age, recoveries, bad keys."""
        snap = self._snap
        applied = 0 if snap is None else snap.revision
        store = max(self._store_revision, applied)
        bad = self._validator.bad()
        return {
            "state": str(self.state),
            "ready": self.ready,
            "not_ready_reason": self.not_ready_reason(),
            "applied_revision": applied,
            "store_revision_seen": store,
            "lag_revisions": store - applied,
            "age_seconds": round(self.age(), 3),
            "max_staleness_seconds": self.max_staleness,
            "keys": 0 if snap is None else len(snap.entries),
            "endpoint": self._endpoint,
            # Entries still waiting for the validator (after a load: about 30 us each).
            "validation_pending": self._validator.pending,
            "decode_errors": [
                {"key": b.key, "revision": b.revision, "error": b.error} for b in bad
            ],
            "transitions": [t.as_dict() for t in self._sm.history()],
            "last_digest": None
            if self._last_digest is None
            else {
                "revision": self._last_digest.revision,
                "keys": self._last_digest.keys,
                "mismatched": self._last_digest.mismatched[:20],
            },
        }

    # ---- worker ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                retrying = Retrying(
                    retry=retry_if_exception(_retryable),
                    # 0.1 s doubling to 5 s: a restarted member answers within ~1 s; a cluster
                    # that is down is not hammered more than every 5 s per replica.
                    wait=wait_exponential(multiplier=0.1, max=5.0) + wait_random(0, 0.1),
                    stop=lambda _state: self._stop.is_set(),
                    sleep=self._interruptible_sleep,
                    before_sleep=self._before_retry,
                    reraise=True,
                )
                try:
                    retrying(self._session_once)
                except Exception as exc:
                    if self._stop.is_set():
                        break
                    if not _retryable(exc):
                        raise
        except Exception as exc:
            # A bug, not an etcd failure (those are retried): stop serving and say why.
            self._crashed = f"{type(exc).__name__}: {exc}"
            self._serving = False
            _log.exception("replica.worker_crashed")
            self._sm.move(
                ReplicaState.DEGRADED,
                f"worker crashed: {self._crashed}",
                applied_revision=self.revision,
            )
            with self._cond:
                self._cond.notify_all()
        finally:
            if self._session is not None:
                self._session.cancel()

    def _interruptible_sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _before_retry(self, retry_state: RetryCallState) -> None:
        self._failures += 1
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        cause = _describe(exc)
        state = self._sm.state
        if self._snap is not None and state in (ReplicaState.SERVING, ReplicaState.CATCHING_UP):
            self._sm.move(ReplicaState.RESUMING, cause, applied_revision=self.revision)
        elif self._failures >= 5 and state is not ReplicaState.DEGRADED:
            # Five failures in a row (~3 s of backoff): say so, keep serving what we have.
            self._sm.move(
                ReplicaState.DEGRADED,
                f"etcd unreachable after {self._failures} tries: {cause}",
                applied_revision=self.revision,
            )
        _log.warning("replica.retry", attempt=retry_state.attempt_number, cause=cause)

    def _session_once(self) -> None:
        if self._stop.is_set():
            return
        if self._need_load:
            self._load()
        if not self._caught_up and self._mark is None:
            # Taken here, not inside _load: if it fails, the retry takes it again instead of
            # streaming forever without a target to be caught up to.
            self._mark = store_mark(self._client, self.layout.prefix)
            self._check_caught_up()
        self._stream()

    def _load(self) -> None:
        initial = self._snap is None
        if self._sm.state is ReplicaState.DEGRADED:
            target = ReplicaState.LOADING if initial else ReplicaState.REBUILDING
            self._sm.move(target, "etcd reachable again", applied_revision=self.revision)
        started = time.monotonic()
        loaded = load_prefix(self._client, self.layout.prefix, page_size=self.page_size)
        for reason in loaded.restarts:
            self._sm.move(self._sm.state, reason, applied_revision=self.revision)
        with self._apply_lock:
            old = self._snap
            if old is not None and loaded.revision < old.revision:
                # Linearizable reads cannot go back, but a relabel (request_revision) may have
                # moved the cache past this load meanwhile: load again rather than go back.
                raise _StreamLostError(
                    f"snapshot at {loaded.revision} is older than applied {old.revision}"
                )
            new = build_snapshot(self.layout, loaded.revision, loaded.kvs, previous=old)
            events = [] if old is None else diff_snapshots(old, new)
            self._swap(new)
        self.metrics.load_seconds.observe(time.monotonic() - started)
        self._failures = 0
        self._deliver(events)
        self._confirm()
        if old is None:
            self._validator.submit((entry.key, entry) for entry in new.entries.values())
        else:
            self._validator.submit((event.key, event.entry) for event in events)
        self._need_load = False
        detail = {"keys": len(loaded.kvs), "pages": loaded.pages, "changes": len(events)}
        if self._caught_up:
            self._sm.move(
                ReplicaState.SERVING,
                f"rebuilt at {new.revision}: {len(events)} changes delivered",
                applied_revision=new.revision,
                **detail,
            )
            return
        self._sm.move(
            ReplicaState.CATCHING_UP,
            f"snapshot loaded at {new.revision}: {len(loaded.kvs)} keys in {loaded.pages} pages",
            applied_revision=new.revision,
            **detail,
        )
        self._mark = None  # _session_once takes a fresh one for this load

    def _stream(self) -> None:
        snap = self._snap
        assert snap is not None
        session = self._session_factory(
            self._client, self.layout.prefix, snap.revision + 1, prev_kv=self.verify_prev_kv
        )
        self._session = session
        self._endpoint = session.endpoint
        if self._stop.is_set():  # close() may have looked for a session just before this one
            session.cancel()
            self._session = None
            return
        healthy = False
        try:
            for response in session:
                if self._stop.is_set():
                    return
                if self._take_pending_rebuild():
                    return
                if response.compact_revision:
                    self._start_rebuild(
                        "compacted",
                        f"compacted {response.compact_revision} > applied {self.revision}",
                    )
                    return
                if response.canceled:
                    raise _StreamLostError(f"watch canceled by etcd: {response.cancel_reason}")
                self._note_header(int(response.header.revision))
                if response.created:
                    self._resumed(session)
                    continue
                healthy = True
                if response.events and not self._apply(response.events):
                    return
                # Applying a large catch-up message is not silence from etcd.
                session.last_response_at = time.monotonic()
                self._confirm()
                if self._sm.state is ReplicaState.CATCHING_UP:
                    self._check_caught_up()
            if not self._stop.is_set():
                raise _StreamLostError("watch stream ended by etcd")
        except grpc.RpcError as exc:
            if self._stop.is_set() or self._take_pending_rebuild():
                return
            cause = (
                f"no response for {self.stall_timeout:g}s from {session.endpoint} (frozen member?)"
                if session.cancelled
                else f"watch stream from {session.endpoint} lost: {_describe(exc)}"
            )
            mark_endpoint_failed(self._client)
            if not healthy:
                raise _StreamLostError(cause) from exc
            self.metrics.resumes.inc()
            self._sm.move(ReplicaState.RESUMING, cause, applied_revision=self.revision)
        finally:
            self._session = None
            session.cancel()

    def _resumed(self, session: WatchSession) -> None:
        state = self._sm.state
        if state in (ReplicaState.RESUMING, ReplicaState.DEGRADED):
            target = ReplicaState.SERVING if self._caught_up else ReplicaState.CATCHING_UP
            self._sm.move(
                target,
                f"watch resumed at {session.start_revision} on {session.endpoint}",
                applied_revision=self.revision,
            )
        self._failures = 0

    def _apply(self, events: Sequence[Any]) -> bool:
        with self._apply_lock:
            snap = self._snap
            assert snap is not None
            through = snap.events_through
            changes: list[RawChange] = []
            last = through
            for event in events:
                kv = event.kv
                revision = int(kv.mod_revision)
                if revision <= through or revision < last:
                    self._start_rebuild(
                        "out_of_order",
                        f"revision {revision} after {last} (applied {through}): duplicate or "
                        "out of order, never applied",
                    )
                    return False
                last = revision
                if revision <= snap.revision:
                    # At or below a relabel: proven to leave etcd equal to this snapshot (a
                    # key created and deleted again), so nothing to apply.
                    continue
                key = kv.key.decode("utf-8", "surrogateescape")
                changes.append(
                    RawChange(key, revision, None if event.type == _DELETE else kv.value)
                )
            if not changes:
                return True
            if self.verify_prev_kv and not self._prev_kv_matches(snap, events):
                return False
            new, delivered = apply_changes(snap, last, changes)
            self._swap(new)
        self.metrics.events_applied.inc(len(changes))
        self._deliver(delivered)
        self._validator.submit((event.key, event.entry) for event in delivered)
        return True

    def _prev_kv_matches(self, snap: Snapshot, events: Sequence[Any]) -> bool:
        # Each event's previous value (etcd's prev_kv) must be what the cache holds, also for
        # a second event on one key within the same response.
        seen: dict[bytes, tuple[bytes, int] | None] = {}
        for event in events:
            key = bytes(event.kv.key)
            if key in seen:
                ours = seen[key]
            else:
                entry = snap.entries.get_fast(key.decode("utf-8", "surrogateescape"))
                ours = None if entry is None else (entry.raw, entry.mod_revision)
            theirs = (
                (bytes(event.prev_kv.value), int(event.prev_kv.mod_revision))
                if event.HasField("prev_kv")
                else None
            )
            if ours != theirs:
                self._start_rebuild(
                    "prev_kv_mismatch",
                    f"prev_kv of {key.decode('utf-8', 'replace')} at {event.kv.mod_revision} "
                    "differs from the cache",
                )
                return False
            seen[key] = (
                None
                if event.type == _DELETE
                else (bytes(event.kv.value), int(event.kv.mod_revision))
            )
        return True

    def _start_rebuild(self, reason: str, cause: str) -> None:
        self.metrics.rebuilds.labels(reason).inc()
        self._need_load = True
        self._sm.move(ReplicaState.REBUILDING, cause, applied_revision=self.revision)

    def _take_pending_rebuild(self) -> bool:
        pending = self._pending_rebuild
        if pending is None:
            return False
        self._pending_rebuild = None
        self._start_rebuild(*pending)
        return True

    def _check_caught_up(self) -> None:
        mark, snap = self._mark, self._snap
        if mark is None or snap is None:
            return
        applied = snap.revision
        if applied >= mark.store_revision:
            why = f"applied {applied} >= store revision {mark.store_revision} seen after load"
        elif _unchanged_since(mark, snap):
            why = (
                f"applied {applied} >= newest mod revision {mark.max_mod_revision} and "
                f"{mark.count} keys match etcd at {mark.store_revision}"
            )
        else:
            return
        self._mark = None
        self._caught_up = True
        self._serving = True
        self._sm.move(ReplicaState.SERVING, f"caught up: {why}", applied_revision=applied)
        with self._cond:
            self._cond.notify_all()

    def _swap(self, snap: Snapshot) -> None:
        """Publish ``snap`` (callers hold _apply_lock); never to an older revision."""
        with self._cond:
            current = self._snap
            if current is not None and snap.revision < current.revision:
                raise _StreamLostError(
                    f"refused to publish revision {snap.revision} over {current.revision}"
                )
            self._snap = snap
            self._cond.notify_all()
        self.metrics.applied_revision.set(snap.revision)
        self.metrics.lag_revisions.set(max(0, self._store_revision - snap.revision))

    def _deliver(self, events: list[ChangeEvent]) -> None:
        """Hand changes to listeners, in order, after they are visible (outside the locks)."""
        for event in events:
            for listener in self._listeners:
                try:
                    listener(event)
                except Exception:
                    self.metrics.listener_errors.inc()
                    _log.exception("replica.listener_failed", key=event.key)

    def _confirm(self) -> None:
        self._confirmed_at = time.monotonic()

    def _note_header(self, revision: int) -> None:
        if revision > self._store_revision:
            self._store_revision = revision
            self.metrics.store_revision.set(revision)

    def _on_transition(self, record: Transition) -> None:
        if record.target is ReplicaState.STOPPED:
            self._serving = False
        for state in ReplicaState:
            self.metrics.state.labels(str(state)).set(1 if state is record.target else 0)

    # ---- confirming revisions without events --------------------------------------------

    def _confirmer(self) -> None:
        while not self._stop.is_set():
            self._want_event.wait()
            self._want_event.clear()
            # 20 ms first: a write under the prefix usually arrives by the watch in ~4 ms,
            # and then no etcd request is needed. At most one proof per 50 ms for all waiters.
            if self._stop.wait(0.02):
                return
            snap = self._snap
            if snap is None or not self._caught_up or snap.revision >= self._wanted:
                continue
            try:
                mark = store_mark(self._client, self.layout.prefix, deadline=2.0)
            except Exception as exc:
                _log.warning("replica.confirm_failed", error=_describe(exc))
                self._stop.wait(0.05)
                continue
            if mark.store_revision > snap.revision and _unchanged_since(mark, snap):
                with self._apply_lock:
                    if self._snap is snap:  # the worker published nothing newer meanwhile
                        self._swap(replace(snap, revision=mark.store_revision))
            self._stop.wait(0.03)

    # ---- heartbeat and digest -------------------------------------------------------------

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.progress_interval):
            session = self._session
            if session is not None and not session.cancelled:
                if session.silent_for() > self.stall_timeout:
                    _log.warning("replica.stream_stalled", endpoint=session.endpoint)
                    session.cancel()
                else:
                    session.request_progress()
            self.metrics.age_seconds.set(self.age())
            self.metrics.ready.set(1 if self.ready else 0)

    def _digest_loop(self) -> None:
        assert self.digest_interval
        while not self._stop.wait(self.digest_interval):
            try:
                self.check_digest()
            except DigestMismatchError as exc:
                self._digest_error = exc
            except Exception as exc:
                _log.warning("replica.digest_skipped", error=_describe(exc))

    def check_digest(self) -> DigestResult | None:
        """Compare the cache with etcd at the cache's revision; a mismatch is logged, counted
        and triggers a rebuild (strict mode raises DigestMismatchError). Returns None when that
        revision is already compacted (nothing to compare against)."""
        snap = self._snap
        if snap is None or self._client is None:
            return None
        try:
            loaded = load_prefix(
                self._client, self.layout.prefix, page_size=self.page_size,
                at_revision=snap.revision,
            )  # fmt: skip
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.OUT_OF_RANGE:
                return None
            raise
        result = compare(snap, loaded.kvs)
        self._last_digest = result
        mismatched = result.mismatched
        if mismatched:
            self.metrics.digest_mismatches.inc()
            _log.error(
                "replica.digest_mismatch",
                revision=snap.revision,
                count=len(mismatched),
                keys=mismatched[:10],
            )
            self._pending_rebuild = (
                "digest_mismatch",
                f"digest mismatch at {snap.revision}: {len(mismatched)} keys differ",
            )
            session = self._session
            if session is not None:
                session.cancel()
            if self.strict_digest:
                raise DigestMismatchError(
                    f"cache differs from etcd at {snap.revision}: {mismatched[:10]}"
                )
        return result


def _unchanged_since(mark: StoreMark, snap: Snapshot) -> bool:
    """True when etcd at ``mark.store_revision`` holds exactly ``snap``'s keys and values.

    In (snap.revision, S] no put happened under the prefix (the newest mod revision there is
    not after the snapshot), and no delete either (a delete without a later put would leave
    fewer keys than the snapshot holds).
    """
    return mark.max_mod_revision <= snap.revision and mark.count == len(snap.entries)


def _retryable(exc: BaseException) -> bool:
    return isinstance(
        exc, grpc.RpcError | etcd_exc.Etcd3Exception | EtcdUnavailableError | _StreamLostError
    )


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown"
    if isinstance(exc, grpc.RpcError):
        return f"{exc.code().name}: {exc.details()}"
    if isinstance(exc, _StreamLostError | EtcdUnavailableError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
