"""The replica-side tools of several figures: a gate that parks the replica's watch, a bare etcd
watch stream and paginated range as baselines, a timed cold start, a compaction-triggered
rebuild, and the one gated replica that P2, P3, P4 and P6 share.
"""

from __future__ import annotations

import gc
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Self

from pyetcd import etcdrpc
from pyetcd import utils as etcd_utils

from bench._common import (
    OURS_ROOT,
    bulk_put,
    compact_client,
    connect_to,
    group_name,
)
from rmwatch.store.etcd.watch import WatchSession
from rmwatch.store.keys import KeyLayout
from rmwatch.watcher.replica import Replica

PAGE = 5000  # keys per range page, as the replica's loader asks


class Gate:
    """A ``session_factory`` that can park the replica's worker before it opens a watch:
    ``cut()`` cancels the live stream and waits until the worker is parked; ``release()``
    lets it open the stream from its applied revision + 1 (the real resume path). Open, it
    only records the session it opened (``opened``)."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._open.set()
        self.parked = threading.Event()
        self.closing = threading.Event()
        self.opened = threading.Event()
        self.session: WatchSession | None = None

    def factory(
        self, client: Any, prefix: str, start_revision: int, **options: Any
    ) -> WatchSession:
        """Block while the gate is shut, then open a real ``WatchSession``."""
        if not self._open.is_set():
            self.parked.set()
            while not self._open.wait(0.01):
                if self.closing.is_set():
                    break
            self.parked.clear()
        session = WatchSession(client, prefix, start_revision, **options)
        self.session = session
        self.opened.set()
        return session

    def cut(self, timeout: float = 30.0) -> None:
        """Shut the gate and drop the live stream; return once the worker is parked."""
        self._open.clear()
        deadline = time.monotonic() + timeout
        # The worker may be between the gate check and opening a new stream: keep cancelling
        # whatever stream is current until it comes back to the factory and parks.
        while not self.parked.wait(0.01):
            session = self.session
            if session is not None and not session.cancelled:
                session.cancel()
            if time.monotonic() > deadline:
                raise RuntimeError("replica worker did not park at the gate")
        # The replica marks the endpoint failed for 0.5 s when its stream is cancelled (it
        # reads a cancelled session as a frozen member): let that expire so the timed resume
        # does not start with a NoServerAvailableError and a backoff.
        time.sleep(0.6)

    def release(self) -> None:
        """Let the parked worker open its stream."""
        self._open.set()

    def close(self) -> None:
        """Unblock for shutdown."""
        self.closing.set()
        self._open.set()


class RawWatch:
    """A bare ``etcdrpc.WatchStub`` stream: the same create request as the replica's."""

    def __init__(
        self, client: Any, prefix: str, start_revision: int, *, prev_kv: bool = False
    ) -> None:
        key = prefix.encode()
        self._requests: queue.Queue[Any] = queue.Queue()
        self._requests.put(
            etcdrpc.WatchRequest(
                create_request=etcdrpc.WatchCreateRequest(
                    key=key,
                    range_end=etcd_utils.prefix_range_end(key),
                    start_revision=start_revision,
                    progress_notify=True,
                    prev_kv=prev_kv,
                )
            )
        )
        stub = etcdrpc.WatchStub(client.channel)
        self.call = stub.Watch(self._iter(), metadata=client.metadata)

    def _iter(self) -> Iterator[Any]:
        while True:
            item = self._requests.get()
            if item is None:
                return
            yield item

    def cancel(self) -> None:
        """End the stream (the response iterator stops)."""
        self._requests.put(None)
        self.call.cancel()


def raw_pages(client: Any, prefix: str) -> tuple[int, dict[bytes, bytes]]:
    """A paginated range of ``prefix`` pinned at page one's revision, as the replica's loader
    reads it: (that revision, key bytes -> value bytes)."""
    start = prefix.encode()
    end = etcd_utils.prefix_range_end(start)
    resp = client.get_range_response(start, end, limit=PAGE)
    revision = int(resp.header.revision)
    held: dict[bytes, bytes] = {}
    while True:
        for kv in resp.kvs:
            held[kv.key] = kv.value
        if not resp.more or not resp.kvs:
            break
        resp = client.get_range_response(resp.kvs[-1].key + b"\0", end, limit=PAGE,
                                         revision=revision)  # fmt: skip
    return revision, held


def time_to_ready(endpoint: str, expect: int) -> float:
    """Seconds from ``Replica(...).start()`` until ``wait_ready`` returns, for a prefix of
    ``expect`` groups (checked, with every value decoded); the replica is closed afterwards,
    untimed."""
    gate = Gate()  # open: it only tells when the watch stream is up
    gc.collect()
    t0 = time.perf_counter()
    replica = Replica(endpoints=[endpoint], root_prefix=OURS_ROOT,
                      session_factory=gate.factory).start()  # fmt: skip
    replica.wait_ready(300)
    dt = time.perf_counter() - t0
    entries = replica.snapshot().entries
    keys = len(entries)
    # Ready means every value decoded and checked (the load decodes before it publishes).
    undecoded = sum(1 for entry in entries.values() if not entry.decoded)
    assert undecoded == 0, f"{undecoded} values not decoded at ready"
    # Closing while the worker is still opening its watch stream segfaulted once in cygrpc
    # (client.close() races stub.Watch on the same channel): let the stream open first.
    if not gate.opened.wait(10):
        raise RuntimeError("timed out after 10s waiting for the watch stream to open")
    time.sleep(0.05)
    replica.close()
    del replica
    gc.collect()
    assert keys == expect, (keys, expect)
    return dt


def backlog(client: Any, root: str, values: list[bytes], revisions: int, offset: int) -> int:
    """``revisions`` transactions of 100 puts each under ``root`` (groups from ``offset`` on,
    wrapping); returns the last revision."""
    layout = KeyLayout(root)
    n = len(values)
    items = []
    for j in range(revisions * 100):
        i = (offset + j) % n
        items.append((layout.settings(group_name(i)), values[i]))
    return bulk_put(client, items, 100)


def trigger_rebuild(replica: Replica, gate: Gate, writer: Any, values: list[bytes], rep: int,
                    endpoint: str, marks: dict[str, float] | None = None,
                    collect: bool = True) -> tuple[float, int]:  # fmt: skip
    """Cut the replica off, write 100 changes, compact past its revision, release; return
    (seconds from release until the rebuilt snapshot is published, its target revision).
    ``marks`` gets the perf_counter() of the release and of the publication. ``collect``:
    a full gc first (it holds the GIL for ~1 s with 100k groups: P6 collects before its
    reader starts instead, so the timeline shows the replica, not the bench's collection)."""
    gate.cut()
    last = backlog(writer, OURS_ROOT, values, 2, rep * 200)  # 2 revisions: R+1 < last
    compact_client(endpoint).compact(last, physical=True)
    if collect:
        gc.collect()
    t0 = time.perf_counter()
    gate.release()
    replica.wait_for_revision(last, 300)
    t1 = time.perf_counter()
    if marks is not None:
        marks.update(release=t0, done=t1)
    return t1 - t0, last


@dataclass
class Rig:
    """One ready replica behind a ``Gate`` and two clients (a writer, and the raw side's
    watcher), shared by the pairs that need a live replica (P4, P2, P2b, P3, P6): started
    once and kept running across them, as a replica runs when it serves."""

    endpoint: str
    values: list[bytes]
    reps: int
    smoke: bool
    gate: Gate = field(default_factory=Gate)
    writer: Any = None
    watcher_client: Any = None
    replica: Replica | None = None

    @property
    def live(self) -> Replica:
        """The replica (after ``__enter__``)."""
        assert self.replica is not None, "use the rig as a context manager"
        return self.replica

    def __enter__(self) -> Self:
        self.writer = connect_to(self.endpoint)
        self.watcher_client = connect_to(self.endpoint)
        self.replica = Replica(endpoints=[self.endpoint], root_prefix=OURS_ROOT,
                               session_factory=self.gate.factory).start()  # fmt: skip
        try:
            self.replica.wait_ready(300)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.gate.close()
        if self.replica is not None:
            self.replica.close()
            self.replica = None
        gc.collect()
        self.writer.close()
        self.watcher_client.close()
