"""PD's ``meta_storagepb.MetaStorage`` on a replica, read-only: Get and Watch from the cache.

- ``Get`` of a key or a range inside the replica's prefix answers from one snapshot:
  ``header.revision`` is the snapshot's revision, ``limit``/``more``/``count`` as etcd's Range.
  Like PD (tikv/pd pkg/mcs/metastorage/server/grpc_service.go, ``Get``) each kv carries its key
  and value; rmwatch adds ``mod_revision`` (create_revision and version are not kept).
  ``revision`` other than 0 or the snapshot's own is answered with a header error: the cache
  holds one revision.
- ``Watch`` streams every revision after ``start_revision`` from the replica's watch hub: one
  response per revision with all its events, ``prev_kv`` when asked, and a header-only progress
  response after ``progress_interval`` seconds without one. A start older than the hub's history
  is answered as PD answers a compacted revision (grpc_service.go ``Watch``): one response with
  a ``DATA_COMPACTED`` header error and ``compact_revision``, then the stream ends with etcd's
  "required revision has been compacted" (``UNKNOWN`` as grpc-go reports a plain error). A
  watcher that falls behind its bounded buffer ends ``RESOURCE_EXHAUSTED`` saying where to
  resume.
- ``Put``/``Delete``: ``FAILED_PRECONDITION`` (metadata is written by PD).
"""

from __future__ import annotations

import asyncio
import bisect
import threading
from typing import Any

import grpc

from rmwatch.errors import WatchCompactedError, WatchCutOffError
from rmwatch.grpc.calls import CallContext, RpcAbortError, revision_trailer
from rmwatch.grpc.metrics import GrpcMetrics
from rmwatch.grpc.reads import SnapshotReads
from rmwatch.store._pb import meta_storagepb_pb2 as mspb
from rmwatch.watcher.cache import ChangeKind, Snapshot
from rmwatch.watcher.fanout import WatchHub
from rmwatch.watcher.watch_stream import KeyRange, WatchBatch, WatchEnd, WatchStream

SERVICE = "meta_storagepb.MetaStorage"
WRITES_REFUSED = "meta storage is read-only on an rmwatch replica: writes must be handled by PD"
# etcd's ErrCompacted text, what PD's Watch returns after its DATA_COMPACTED response.
COMPACTED_STATUS = "etcdserver: mvcc: required revision has been compacted"
DEFAULT_PROGRESS_INTERVAL = 5.0


class _LoopWaker:
    """Wakes a loop's watch coroutines with one cross-thread call per sealed revision, not one
    per watcher: the hub offers a revision to every stream in a row, and each
    ``call_soon_threadsafe`` costs a write to the loop's self-pipe."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: set[asyncio.Event] = set()
        self._scheduled = False

    def wake(self, event: asyncio.Event) -> None:
        """Set ``event`` on the loop soon (from any thread)."""
        with self._lock:
            self._pending.add(event)
            if self._scheduled:
                return
            self._scheduled = True
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        with self._lock:
            events, self._pending, self._scheduled = self._pending, set(), False
        for event in events:
            event.set()


class MetaStorage:
    """The servicer over one replica, its snapshot reads and its watch hub."""

    def __init__(
        self,
        reads: SnapshotReads,
        hub: WatchHub,
        metrics: GrpcMetrics,
        *,
        cluster_id: int = 0,
        progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
    ) -> None:
        self.reads = reads
        self.hub = hub
        self.cluster_id = cluster_id
        self.progress_interval = progress_interval
        self.calls = CallContext(SERVICE, metrics)
        prefix = reads.replica.layout.prefix.encode()
        self.scope = KeyRange.prefix(prefix)
        self._sorted: tuple[Snapshot | None, list[bytes]] = (None, [])
        self._wakers: dict[asyncio.AbstractEventLoop, _LoopWaker] = {}

    def _waker(self, loop: asyncio.AbstractEventLoop) -> _LoopWaker:
        waker = self._wakers.get(loop)
        if waker is None:
            waker = self._wakers[loop] = _LoopWaker(loop)
        return waker

    # ---- Get -------------------------------------------------------------------------------

    def _check_scope(self, key: bytes, end: bytes) -> None:
        scope = self.scope
        if scope.end == b"\0":  # an empty prefix: every key is the replica's
            inside = key >= scope.key
        elif not end:
            inside = scope.contains(key)
        else:
            inside = end != b"\0" and scope.key <= key and end <= scope.end
        if not inside:
            raise RpcAbortError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"key range [{key!r}, {end!r}) is outside the replica's prefix "
                f"{scope.key!r}: only the watched prefix is served",
            )

    def _keys(self, snap: Snapshot) -> list[bytes]:
        # Sorted keys, computed once per snapshot (ranges are answered by bisection).
        cached, keys = self._sorted
        if cached is not snap:
            keys = sorted(k.encode("utf-8", "surrogateescape") for k in snap.entries)
            self._sorted = (snap, keys)
        return keys

    def header(self, revision: int, error: Any = None) -> mspb.ResponseHeader:
        """A response header for ``revision`` (optionally with an error)."""
        header = mspb.ResponseHeader(cluster_id=self.cluster_id, revision=revision)
        if error is not None:
            header.error.CopyFrom(error)
        return header

    async def get(self, request: mspb.GetRequest, context: Any) -> mspb.GetResponse:
        """A key or a range from one snapshot."""
        key, end = bytes(request.key), bytes(request.range_end)
        self._check_scope(key, end)
        snap = await self.reads.snapshot(context)
        context.set_trailing_metadata(revision_trailer(snap.revision))
        if request.revision and request.revision != snap.revision:
            error = mspb.Error(
                type=mspb.UNKNOWN,
                message=f"rmwatch serves Get at the cache's revision only: asked "
                f"{request.revision}, the cache is at {snap.revision}",
            )
            return mspb.GetResponse(header=self.header(snap.revision, error))
        if not end:
            entry = snap.entries.get_fast(key.decode("utf-8", "surrogateescape"))
            found = [] if entry is None else [key]
        else:
            keys = self._keys(snap)
            low = bisect.bisect_left(keys, key)
            high = len(keys) if end == b"\0" else bisect.bisect_left(keys, end)
            found = keys[low:high] if high > low else []
        count = len(found)
        limit = request.limit
        if limit > 0:
            found = found[:limit]
        kvs = []
        for found_key in found:
            entry = snap.entries.get_fast(found_key.decode("utf-8", "surrogateescape"))
            if entry is not None:
                kvs.append(
                    mspb.KeyValue(key=found_key, value=entry.raw, mod_revision=entry.mod_revision)
                )
        return mspb.GetResponse(
            header=self.header(snap.revision), kvs=kvs, more=count > len(kvs), count=count
        )

    # ---- Watch -----------------------------------------------------------------------------

    def encode(self, batch: WatchBatch, prev_kv: bool) -> bytes:
        """One revision's WatchResponse, encoded once per variant for every watcher."""
        cached = batch.encoded.get(prev_kv)
        if cached is not None:
            return cached
        events = []
        for change in batch.changes:
            kind = mspb.Event.DELETE if change.kind is ChangeKind.DELETE else mspb.Event.PUT
            event = mspb.Event(
                type=kind,
                kv=mspb.KeyValue(
                    key=change.key, value=change.value, mod_revision=change.mod_revision
                ),
            )
            if prev_kv and change.prev_value is not None:
                event.prev_kv.CopyFrom(
                    mspb.KeyValue(
                        key=change.key,
                        value=change.prev_value,
                        mod_revision=change.prev_mod_revision,
                    )
                )
            events.append(event)
        response = mspb.WatchResponse(header=self.header(batch.revision), events=events)
        encoded = batch.encoded[prev_kv] = response.SerializeToString()
        return encoded

    async def watch(self, request: mspb.WatchRequest, context: Any) -> None:
        """Stream revisions from ``start_revision`` until the client goes away."""
        key, end = bytes(request.key), bytes(request.range_end)
        self._check_scope(key, end)
        replica = self.reads.replica
        reason = replica.not_ready_reason()
        if reason is not None:
            raise self.reads.unavailable(str(replica.state), reason)
        stream = self.hub.watch(
            KeyRange(key, end), start_revision=request.start_revision, prev_kv=request.prev_kv
        )
        wake = asyncio.Event()
        waker = self._waker(asyncio.get_running_loop())
        stream.set_waker(lambda: waker.wake(wake))
        try:
            await self._pump(stream, wake, request, context)
        finally:
            stream.set_waker(None)
            stream.close()

    async def _pump(
        self, stream: WatchStream, wake: asyncio.Event, request: Any, context: Any
    ) -> None:
        while True:
            items = stream.take()
            if not items:
                wake.clear()
                items = stream.take()  # an offer between take() and clear() is not lost
            if not items:
                try:
                    await asyncio.wait_for(wake.wait(), self.progress_interval)
                    continue
                except TimeoutError:
                    progress = stream.progress_revision()
                    if progress is not None:
                        await context.write(
                            mspb.WatchResponse(header=self.header(progress)).SerializeToString()
                        )
                    continue
            for item in items:
                if isinstance(item, WatchEnd):
                    await self._end(item, request, context)
                    return
                await context.write(self.encode(item, request.prev_kv))

    async def _end(self, end: WatchEnd, request: Any, context: Any) -> None:
        error = end.error
        if isinstance(error, WatchCompactedError):
            response = mspb.WatchResponse(
                header=self.header(
                    self.hub.head, mspb.Error(type=mspb.DATA_COMPACTED, message=str(error))
                ),
                compact_revision=error.resume_revision,
            )
            await context.write(response.SerializeToString())
            raise RpcAbortError(grpc.StatusCode.UNKNOWN, COMPACTED_STATUS)
        if isinstance(error, WatchCutOffError):
            raise RpcAbortError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
        raise RpcAbortError(grpc.StatusCode.UNAVAILABLE, str(error))

    # ---- writes ----------------------------------------------------------------------------

    async def refuse_write(self, _request: Any, _context: Any) -> Any:
        """Put/Delete: the replica is read-only."""
        raise RpcAbortError(grpc.StatusCode.FAILED_PRECONDITION, WRITES_REFUSED)

    def handler(self) -> grpc.GenericRpcHandler:
        """Every method under ``meta_storagepb.MetaStorage``."""
        c = self.calls
        return c.generic(
            {
                "Get": c.unary("Get", self.get, mspb.GetRequest),
                "Watch": c.server_stream("Watch", self.watch, mspb.WatchRequest),
                "Put": c.unary("Put", self.refuse_write, mspb.PutRequest),
                "Delete": c.unary("Delete", self.refuse_write, mspb.DeleteRequest),
            }
        )


__all__ = ["COMPACTED_STATUS", "SERVICE", "WRITES_REFUSED", "MetaStorage"]
