"""The sync worker: load a snapshot at one revision, stream the watch from there, apply, rebuild.

One thread owns the etcd stream. It loads the prefix at one revision, takes a ``StoreMark`` of
the store right after, and watches from the snapshot's revision + 1; once the applied revision
reaches the mark, the replica has caught up. Each watch response is applied as one new
immutable snapshot, published by swapping a reference. A compaction, a duplicate or
out-of-order revision, a prev_kv that disagrees with the cache, or a digest mismatch starts a
rebuild: a fresh snapshot loaded to the side, diffed against the old one, swapped in, and the
differences delivered to listeners as ordinary change events.

etcd failures are retried with backoff (tenacity); anything else is a bug and moves the
replica to FAILED with its cause.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential, wait_random

from rmwatch._logging import get_logger
from rmwatch.store.etcd import EtcdClient, mark_endpoint_failed
from rmwatch.store.etcd.watch import WatchSession
from rmwatch.watcher.cache import (
    PageDecoder,
    Snapshot,
    apply_changes,
    diff_snapshots,
)
from rmwatch.watcher.failures import StreamLostError, describe, retryable
from rmwatch.watcher.gc_control import HeapFreezer, gc_paused
from rmwatch.watcher.listeners import ChangeBatch, Listeners
from rmwatch.watcher.loader import LoadedPrefix, StoreMark, load_prefix, store_mark
from rmwatch.watcher.metrics import ReplicaMetrics
from rmwatch.watcher.options import ReplicaOptions
from rmwatch.watcher.published import Published
from rmwatch.watcher.state import ReplicaState, StateMachine
from rmwatch.watcher.validation import Validator

_log = get_logger("replica")
_DELETE = 1  # mvccpb.Event.EventType.DELETE
# Five failures in a row (about 3 s of backoff) before a caught-up replica calls itself
# DEGRADED: one lost member fails over well within that.
_DEGRADED_AFTER = 5

SessionFactory = Callable[..., WatchSession]


class SyncWorker:
    """Keeps ``published`` in step with etcd; runs on one thread (``run``) until ``stop``."""

    def __init__(
        self,
        *,
        client: EtcdClient,
        options: ReplicaOptions,
        published: Published,
        machine: StateMachine,
        listeners: Listeners,
        validator: Validator,
        metrics: ReplicaMetrics,
        session_factory: SessionFactory,
        stop: threading.Event,
    ) -> None:
        self._client = client
        self._options = options
        self._prefix = options.layout.prefix
        self._published = published
        self._sm = machine
        self._listeners = listeners
        self._validator = validator
        self._metrics = metrics
        self._session_factory = session_factory  # a seam for tests that corrupt a real stream
        self._stop = stop
        self.session: WatchSession | None = None
        self.endpoint: str | None = None  # the member the last stream was opened on
        self.failures = 0  # consecutive failed tries (reset by a healthy stream or load)
        self._need_load = True
        self._pending_rebuild: tuple[str, str] | None = None
        self._mark: StoreMark | None = None
        # Freeze the loaded snapshot out of the cyclic GC's reach (the replica's ``freeze_gc``).
        self.freeze_heap = True

    def request_rebuild(self, reason: str, cause: str) -> None:
        """Rebuild from a fresh snapshot (e.g. after a digest mismatch); returns at once."""
        self._pending_rebuild = (reason, cause)
        session = self.session
        if session is not None:
            session.cancel()

    # ---- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        """The thread: retry etcd failures until stopped; a bug moves the replica to FAILED."""
        try:
            while not self._stop.is_set():
                retrying = Retrying(
                    retry=retry_if_exception(retryable),
                    # 0.1 s doubling to 5 s: a restarted member answers within ~1 s; a cluster
                    # that is down is not hammered more than every 5 s per replica.
                    wait=wait_exponential(multiplier=0.1, max=5.0) + wait_random(0, 0.1),
                    stop=lambda _state: self._stop.is_set(),
                    sleep=self._sleep,
                    before_sleep=self._before_retry,
                    reraise=True,
                )
                try:
                    retrying(self._session_once)
                except Exception as exc:
                    if self._stop.is_set():
                        break
                    if not retryable(exc):
                        raise
        except Exception as exc:
            # A bug, not an etcd failure (those are retried): stop serving and say why.
            _log.exception("worker_crashed")
            self._sm.move(
                ReplicaState.FAILED,
                f"worker crashed: {type(exc).__name__}: {exc}",
                applied_revision=self._published.revision,
                event="worker_failed",
            )
        finally:
            if self.session is not None:
                self.session.cancel()
            # Closed or crashed: either way no batch follows, so watchers are told now.
            self._listeners.end()

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)  # close() cuts a backoff short

    def _before_retry(self, retry_state: RetryCallState) -> None:
        self.failures += 1
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        cause = describe(exc)
        state = self._sm.state
        applied = self._published.revision
        live = (ReplicaState.SERVING, ReplicaState.CATCHING_UP)
        if self._published.current is not None and state in live:
            self._sm.move(
                ReplicaState.RESUMING, cause, applied_revision=applied, event="watch_lost"
            )
        elif (
            self.failures >= _DEGRADED_AFTER
            and self._sm.caught_up
            and state in (ReplicaState.RESUMING, ReplicaState.REBUILDING)
        ):
            # Still serving the old snapshot (within the staleness bound): say so.
            self._sm.move(
                ReplicaState.DEGRADED,
                f"etcd unreachable after {self.failures} tries: {cause}",
                applied_revision=applied,
                event="etcd_unreachable",
            )
        _log.warning("retry_scheduled", attempt=retry_state.attempt_number, cause=cause)

    def _session_once(self) -> None:
        if self._stop.is_set():
            return
        if self._need_load:
            self._load()
        if not self._sm.caught_up and self._mark is None:
            # Taken here, not inside _load: if it fails, the retry takes it again instead of
            # streaming forever without a target to be caught up to.
            self._mark = store_mark(self._client, self._prefix, stop=self._stop)
            self._check_caught_up()
        self._stream()

    # ---- load -----------------------------------------------------------------------------

    def _load(self) -> None:
        if self._sm.state is ReplicaState.DEGRADED:
            self._sm.move(
                ReplicaState.REBUILDING,
                "etcd reachable again",
                applied_revision=self._published.revision,
                event="rebuild_started",
            )
        started = time.monotonic()
        # Pages are decoded as they arrive, against the snapshot served now: a value it holds
        # unchanged keeps its entry, not decoded again and not held twice.
        pages = PageDecoder(self._options.layout, self._published.current)
        loaded = load_prefix(
            self._client,
            self._prefix,
            page_size=self._options.page_size,
            on_kvs=pages,
            stop=self._stop,
        )
        for reason in loaded.restarts:
            _log.warning("load_restarted", reason=reason)
        with self._published.apply_lock:
            old = self._published.current
            if old is not None and loaded.revision < old.revision:
                # Linearizable reads cannot go back, but a relabel (request_revision) may have
                # moved the cache past this load meanwhile: load again rather than go back.
                raise StreamLostError(
                    f"snapshot at {loaded.revision} is older than applied {old.revision}"
                )
            new = pages.snapshot(loaded.revision)
            events = [] if old is None else diff_snapshots(old, new)
            self._published.swap(new)
            ticket = self._listeners.reserve()  # in publish order (see Listeners.reserve)
        self._metrics.load_seconds.observe(time.monotonic() - started)
        self.failures = 0
        self._validator.reset(new)
        # The loaded snapshot is the steady bulk of the heap: out of the collector's reach
        # from now on (see gc_control), before listeners and readers make garbage of their own.
        if self.freeze_heap:
            HeapFreezer.freeze()
        self._listeners.publish(ChangeBatch(new.revision, tuple(events), old is not None), ticket)
        self._published.confirm()
        self._need_load = False
        self._record_load(loaded, new, len(events))

    def _record_load(self, loaded: LoadedPrefix, new: Snapshot, changes: int) -> None:
        detail = {
            "keys": loaded.count,
            "pages": loaded.pages,
            "changes": changes,
            "restarts": len(loaded.restarts),
        }
        # A load restarted by a compaction is no state of its own: the transition that ends
        # the load says why it took more than one try.
        restarted = (
            f" after {len(loaded.restarts)} restarts ({'; '.join(loaded.restarts)})"
            if loaded.restarts
            else ""
        )
        if self._sm.caught_up:
            self._sm.move(
                ReplicaState.SERVING,
                f"rebuilt at {new.revision}: {changes} changes delivered{restarted}",
                applied_revision=new.revision,
                event="rebuild_finished",
                **detail,
            )
            return
        self._sm.move(
            ReplicaState.CATCHING_UP,
            f"snapshot loaded at {new.revision}: {loaded.count} keys in {loaded.pages} pages"
            f"{restarted}",
            applied_revision=new.revision,
            event="snapshot_loaded",
            **detail,
        )
        self._mark = None  # _session_once takes a fresh one for this load

    # ---- stream ---------------------------------------------------------------------------

    def _stream(self) -> None:
        snap = self._published.current
        assert snap is not None
        session = self._session_factory(
            self._client, self._prefix, snap.revision + 1, prev_kv=self._options.verify_prev_kv
        )
        self.session = session
        self.endpoint = session.endpoint
        if self._stop.is_set():  # close() may have looked for a session just before this one
            session.cancel()
            self.session = None
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
                        f"compacted {response.compact_revision} > applied "
                        f"{self._published.revision}",
                    )
                    return
                if response.canceled:
                    raise StreamLostError(f"watch canceled by etcd: {response.cancel_reason}")
                # A header (progress notifications included) is noted, never a transition.
                self._published.note_header(int(response.header.revision))
                if response.created:
                    self._resumed(session)
                    continue
                healthy = True
                if response.events and not self._apply(response.events):
                    return
                # Applying a large catch-up message is not silence from etcd.
                session.last_response_at = time.monotonic()
                self._published.confirm()
                if self._sm.state is ReplicaState.CATCHING_UP:
                    self._check_caught_up()
            if not self._stop.is_set():
                raise StreamLostError("watch stream ended by etcd")
        except grpc.RpcError as exc:
            if self._stop.is_set() or self._take_pending_rebuild():
                return
            cause = (
                f"no response for {self._options.stall_timeout:g}s from {session.endpoint} "
                "(frozen member?)"
                if session.cancelled
                else f"watch stream from {session.endpoint} lost: {describe(exc)}"
            )
            mark_endpoint_failed(self._client)
            if not healthy:
                raise StreamLostError(cause) from exc
            self._metrics.resumes.inc()
            self._sm.move(
                ReplicaState.RESUMING,
                cause,
                applied_revision=self._published.revision,
                event="watch_lost",
            )
        finally:
            self.session = None
            session.cancel()

    def _resumed(self, session: WatchSession) -> None:
        state = self._sm.state
        if state in (ReplicaState.RESUMING, ReplicaState.DEGRADED):
            target = ReplicaState.SERVING if self._sm.caught_up else ReplicaState.CATCHING_UP
            self._sm.move(
                target,
                f"watch resumed at {session.start_revision} on {session.endpoint}",
                applied_revision=self._published.revision,
                event="watch_resumed",
            )
        self.failures = 0

    def _check_caught_up(self) -> None:
        mark, snap = self._mark, self._published.current
        if mark is None or snap is None:
            return
        applied = snap.revision
        if applied >= mark.store_revision:
            why = f"applied {applied} >= store revision {mark.store_revision} seen after load"
        elif mark.unchanged_since(snap):
            why = (
                f"applied {applied} >= newest mod revision {mark.max_mod_revision} and "
                f"{mark.count} keys match etcd at {mark.store_revision}"
            )
        else:
            return
        self._mark = None
        self._sm.move(
            ReplicaState.SERVING, f"caught up: {why}", applied_revision=applied, event="caught_up"
        )

    # ---- apply ----------------------------------------------------------------------------

    def _apply(self, events: Sequence[Any]) -> bool:
        """Apply one watch response as one snapshot; False when it started a rebuild."""
        # The cyclic GC paused: a 10k-event catch-up response allocates ~40k objects, none in
        # a cycle, which ran ~40 young and ~3 middle collections inside the apply.
        with self._published.apply_lock, gc_paused():
            snap = self._published.current
            assert snap is not None
            through = snap.events_through
            # Plain (key, revision, value) tuples: apply_changes takes them as RawChanges.
            changes: list[tuple[str, int, bytes | None]] = []
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
                changes.append((key, revision, None if event.type == _DELETE else kv.value))
            if not changes:
                return True
            if self._options.verify_prev_kv and not self._prev_kv_matches(snap, events):
                return False
            new, delivered = apply_changes(snap, last, changes)
            self._published.swap(new)
            ticket = self._listeners.reserve()
        self._listeners.publish(ChangeBatch(new.revision, tuple(delivered)), ticket)
        self._metrics.events_applied.inc(len(changes))
        self._validator.submit(delivered)
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

    # ---- rebuild bookkeeping --------------------------------------------------------------

    def _start_rebuild(self, reason: str, cause: str) -> None:
        self._metrics.rebuilds.labels(reason).inc()
        self._need_load = True
        self._sm.move(
            ReplicaState.REBUILDING,
            cause,
            applied_revision=self._published.revision,
            event="rebuild_started",
            reason=reason,
        )

    def _take_pending_rebuild(self) -> bool:
        pending = self._pending_rebuild
        if pending is None:
            return False
        self._pending_rebuild = None
        self._start_rebuild(*pending)
        return True
