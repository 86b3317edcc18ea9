"""The replica: snapshot at one revision, watch from there, rebuild after compaction, and serve
nothing until caught up. Thread-safe, synchronous, usable as a library::

    with Replica(endpoints=["127.0.0.1:2379"]) as replica:
        replica.wait_ready(10)
        group = replica.get_group("rg1")          # Versioned(value=StoredGroup, revision=...)

This class is the facade: lifecycle and reads. Each background job has its own module: the sync
worker (``sync``: load, stream, apply, rebuild), the relabel confirmer (``relabel``), the
heartbeat (``heartbeat``: progress requests, stall timeout), the validator (``validation``) and
the periodic digest (``digest``), wired and threaded by ``jobs``. They share the published
snapshot (``published``) and the state machine (``state``), which alone decides whether reads
are served.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from rmwatch.errors import NotReadyError, ReplicaClosedError, RevisionTimeoutError
from rmwatch.store.etcd import EtcdClient, EtcdConfig, connect
from rmwatch.store.etcd.watch import WatchSession
from rmwatch.store.keys import NULL_KEYSPACE_ID, KeyLayout
from rmwatch.store.models import ControllerConfig, GroupStates, ServiceLimit
from rmwatch.store.stored_group import StoredGroup
from rmwatch.watcher.cache import Snapshot, Versioned
from rmwatch.watcher.digest import DigestResult
from rmwatch.watcher.fanout import replica_watch
from rmwatch.watcher.gc_control import HeapFreezer
from rmwatch.watcher.jobs import Jobs
from rmwatch.watcher.listeners import BatchListener, Listener, Listeners
from rmwatch.watcher.loader import DEFAULT_PAGE_SIZE
from rmwatch.watcher.metrics import ReplicaMetrics
from rmwatch.watcher.options import ReplicaOptions
from rmwatch.watcher.published import Published
from rmwatch.watcher.state import ReplicaState, StateMachine, Transition
from rmwatch.watcher.validation import Validator
from rmwatch.watcher.watch_stream import KeyRange, WatchStream

_monotonic = time.monotonic  # a global, not an attribute lookup, on the read hot path
_versioned = tuple.__new__  # Versioned is a NamedTuple: this builds one without its __new__


class Replica:
    """A read-only, always-consistent cache of the RM metadata prefix (see module doc).

    Nothing happens until ``start()`` (or ``with Replica(...)``). Arguments, all keyword-only:

    Args:
        endpoints / etcd: where etcd is (a list of ``host:port``), or a full ``EtcdConfig``.
        root_prefix: PD's root path in etcd ("" for the keys at the top).
        page_size: keys per range while loading a snapshot.
        max_staleness: seconds without a word from etcd after which reads are refused.
        progress_interval / stall_timeout: how often progress is asked for, and how long a
            silent stream is trusted (see ``heartbeat``).
        digest_interval / strict_digest: run the digest check periodically; raise on a
            mismatch (see ``digest``).
        history: how many transitions ``transitions()`` and ``status()`` keep.
        client_factory / session_factory: seams for tests (the etcd client, the watch).
        verify_prev_kv: check every event's previous value against the cache.
        freeze_gc: after each snapshot load, move the process's tracked objects to the GC's
            permanent generation so gen-2 collections skip the snapshot (see ``gc_control``);
            undone when the last replica of the process closes.
    """

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
        client_factory: Callable[[EtcdConfig], EtcdClient] = connect,
        session_factory: Callable[..., WatchSession] = WatchSession,
        verify_prev_kv: bool = False,
        freeze_gc: bool = True,
    ) -> None:
        if etcd is None:
            if endpoints is None:
                raise ValueError("give endpoints=[...] or etcd=EtcdConfig(...)")
            etcd = EtcdConfig.parse(endpoints)
        self.options = ReplicaOptions(
            etcd=etcd,
            layout=KeyLayout(root_prefix),
            page_size=page_size,
            max_staleness=max_staleness,
            progress_interval=progress_interval,
            stall_timeout=stall_timeout,
            digest_interval=digest_interval,
            strict_digest=strict_digest,
            verify_prev_kv=verify_prev_kv,
        )
        self.etcd = etcd
        self.layout = self.options.layout
        self.max_staleness = max_staleness
        self.metrics = ReplicaMetrics()
        self._published = Published(self.metrics)
        self._sm = StateMachine(history=history, on_transition=self._on_transition)
        self._listeners = Listeners(self.metrics)
        self._validator = Validator(
            current=lambda: self._published.current,
            metrics=self.metrics,
            freeze_heap=freeze_gc,
            since_publish=self._published.since_swap,
        )
        self._client_factory = client_factory
        self._session_factory = session_factory
        self._jobs: Jobs | None = None
        self._freeze_gc = freeze_gc
        self._holds_freezer = False
        self._stop = threading.Event()  # set by close(): the replica is closed for good
        self._start_lock = threading.Lock()

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> Replica:
        """Connect and start the background jobs; returns at once (see ``wait_ready``)."""
        with self._start_lock:
            if self._stop.is_set():
                raise ReplicaClosedError("replica was closed")
            if self._jobs is not None:
                return self
            client = self._client_factory(self.etcd)  # EtcdAuthError etc. raise here
            jobs = Jobs(client=client, options=self.options, published=self._published,
                        machine=self._sm, listeners=self._listeners, validator=self._validator,
                        metrics=self.metrics, session_factory=self._session_factory,
                        ready=lambda: self.ready, stop=self._stop)  # fmt: skip
            jobs.sync.freeze_heap = self._freeze_gc
            if self._freeze_gc:
                HeapFreezer.acquire()
                self._holds_freezer = True
            self._jobs = jobs
            self._sm.move(ReplicaState.LOADING, "started", applied_revision=0,
                          event="replica_started")  # fmt: skip
            jobs.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop every thread and close the etcd connection (see ``Jobs.stop``). Idempotent."""
        self._stop.set()
        self._published.wake()
        jobs = self._jobs
        if jobs is not None:
            jobs.stop(timeout)
        if self._sm.state is not ReplicaState.STOPPED:
            self._sm.move(ReplicaState.STOPPED, "closed", applied_revision=self.revision,
                          event="replica_stopped")  # fmt: skip
        if jobs is not None:
            self._published.drop()  # the snapshot goes now, not with the replica's cycles
        with self._start_lock:
            if self._holds_freezer:
                self._holds_freezer = False
                HeapFreezer.release()

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
        return self._published.revision

    def age(self) -> float:
        """Seconds since etcd last confirmed the cache (a watch or progress response)."""
        return self._published.age()

    def not_ready_reason(self) -> str | None:
        """Why the replica must not serve now, or None when it may (the state machine says)."""
        return self._sm.refusal(
            applied_revision=self.revision, age=self.age(), max_staleness=self.max_staleness
        )

    @property
    def ready(self) -> bool:
        """True when reads may be served."""
        return self.not_ready_reason() is None

    def _refuse_hopeless(self) -> None:
        """Raise at once where waiting cannot help: never started, closed, or failed."""
        state = self._sm.state
        if state is ReplicaState.STOPPED or self._stop.is_set():
            raise ReplicaClosedError("replica was closed")
        if state in (ReplicaState.NEW, ReplicaState.FAILED):
            raise NotReadyError(str(state), self.not_ready_reason() or str(state))

    def wait_ready(self, timeout: float) -> None:
        """Block until ready; raise NotReadyError (with state and reason) after ``timeout`` s,
        or at once when the replica was never started or its worker failed."""
        deadline = time.monotonic() + timeout
        while True:
            reason = self.not_ready_reason()
            if reason is None:
                return
            self._refuse_hopeless()
            left = deadline - time.monotonic()
            if left <= 0:
                raise NotReadyError(str(self.state), reason)
            with self._published.changed:
                self._published.changed.wait(min(left, 0.05))

    def wait_for_revision(self, revision: int, timeout: float) -> int:
        """Block until the cache is at ``revision`` or later; return its revision.

        Any etcd revision works, also one moved on by writes outside the prefix (a writer's
        read header, say): see ``request_revision``.
        """
        deadline = time.monotonic() + timeout
        changed = self._published.changed
        while True:
            with changed:
                if self.revision >= revision or self._stop.is_set():
                    break
                self._refuse_hopeless()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RevisionTimeoutError(revision, self.revision, timeout)
                self.request_revision(revision)
                changed.wait(min(left, 0.1))
        if self._stop.is_set():
            raise ReplicaClosedError("replica was closed")
        return self.revision

    def request_revision(self, revision: int) -> None:
        """Ask the replica to reach ``revision``; returns at once (waiters call it as they poll).

        Events under the prefix arrive by the watch. But etcd's revision also moves on writes
        elsewhere, which never reach this watch: then the relabel confirmer proves that nothing
        under the prefix changed between the applied revision and the store's, and relabels
        the unchanged snapshot with the store's revision.
        """
        jobs = self._jobs
        if jobs is not None:
            jobs.relabel.request(revision)

    # ---- reads ----------------------------------------------------------------------------

    def snapshot(self, *, min_revision: int | None = None, timeout: float = 5.0) -> Snapshot:
        """The current immutable snapshot (every read from it is at one revision)."""
        published = self._published
        snap = published.current
        if (
            min_revision is None
            and self._sm.may_serve
            and snap is not None
            and _monotonic() - published.confirmed_at <= self.max_staleness
        ):
            return snap  # the read hot path: no not-ready reason to build
        if min_revision is not None and self.revision < min_revision:
            self.wait_for_revision(min_revision, timeout)
        reason = self.not_ready_reason()
        if reason is not None:
            raise NotReadyError(str(self.state), reason)
        snap = self._published.current
        if snap is None:  # closed between the check and here
            raise ReplicaClosedError("replica was closed")
        return snap

    def get_group(
        self,
        name: str,
        keyspace_id: int = NULL_KEYSPACE_ID,
        *,
        min_revision: int | None = None,
        timeout: float = 5.0,
    ) -> Versioned[StoredGroup | None]:
        """A group's settings (None if absent) and the revision read at."""
        # ``snapshot``'s fast path inlined (a call of it is ~0.3 us of a ~3 us read).
        published = self._published
        snap = published.current
        if not (
            min_revision is None
            and self._sm.may_serve
            and snap is not None
            and _monotonic() - published.confirmed_at <= self.max_staleness
        ):
            snap = self.snapshot(min_revision=min_revision, timeout=timeout)
        # tuple.__new__ skips the generic NamedTuple's __new__ (~0.6 us on the read hot path).
        return _versioned(Versioned, (snap.get_group(name, keyspace_id), snap.revision))

    def list_groups(
        self,
        keyspace_id: int = NULL_KEYSPACE_ID,
        *,
        min_revision: int | None = None,
        timeout: float = 5.0,
    ) -> Versioned[tuple[StoredGroup, ...]]:
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
        return self._listeners.add(callback)

    def subscribe_batches(
        self, callback: BatchListener, *, on_end: Callable[[], None] | None = None
    ) -> Callable[[], None]:
        """Call ``callback(batch)`` once per publish, after the per-event listeners: a watch
        response's events, a rebuild's diff (``rebuild``), or no events when a relabel moved
        the revision (see ``ChangeBatch``); ``on_end()`` once no batch can follow (closed, or
        the worker crashed). Same rules as ``subscribe``. Returns an unsubscribe function."""
        return self._listeners.add_batch(callback, on_end=on_end)

    def watch(
        self, start_revision: int = 0, *, key_range: KeyRange | None = None, prev_kv: bool = False
    ) -> WatchStream:
        """Every change under the prefix (or ``key_range``) from ``start_revision`` (0: from
        now), one ``WatchBatch`` per revision; a start the replica no longer holds ends the
        stream with ``WatchCompactedError``. See ``rmwatch.watcher.fanout.replica_watch``."""
        return replica_watch(self, start_revision, key_range=key_range, prev_kv=prev_kv)

    def transitions(self) -> list[Transition]:
        """The last recorded state transitions, oldest first."""
        return self._sm.history()

    def status(self) -> dict[str, Any]:
        """Everything /status shows: state, revisions, lag, age, recoveries, bad keys, and the
        last digest result (with the strict-mode error if it raised one)."""
        snap = self._published.current
        applied = self._published.revision
        store = max(self._published.store_revision, applied)
        jobs = self._jobs
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
            "endpoint": None if jobs is None else jobs.sync.endpoint,
            "failed_tries": 0 if jobs is None else jobs.sync.failures,
            "relabels": 0 if jobs is None else jobs.relabel.relabels,
            # Watch entries still waiting for the validator (a load decodes its own values).
            "validation_pending": self._validator.pending,
            "decode_errors": [
                {"key": b.key, "revision": b.revision, "error": b.error}
                for b in self._validator.bad()
            ],
            "transitions": [t.as_dict() for t in self._sm.history()],
            "last_digest": None if jobs is None else jobs.digest.status(),
        }

    def check_digest(self) -> DigestResult | None:
        """Compare the cache with etcd at the cache's revision; a mismatch is logged, counted
        and triggers a rebuild (strict mode raises DigestMismatchError). Returns None when that
        revision is already compacted (nothing to compare against), or before ``start``."""
        jobs = self._jobs
        if jobs is None or self._stop.is_set():
            return None
        return jobs.digest.check()

    def _on_transition(self, record: Transition) -> None:
        for state in ReplicaState:
            self.metrics.state.labels(str(state)).set(1 if state is record.target else 0)
        self._published.wake()

    # ---- for the test recorder and benchmarks, which inspect a replica's internals ---------

    @property
    def _snap(self) -> Snapshot | None:
        return self._published.current

    @property
    def _session(self) -> WatchSession | None:
        jobs = self._jobs
        return None if jobs is None else jobs.sync.session
