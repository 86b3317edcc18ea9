"""What the watch figures (P2, P2b, P2c) share: a consumer on either side that notes when it
first sees each revision, writers (at full speed or paced), and the GC's gen-2 pauses.

- ours: a ``Replica.subscribe`` listener (called once the revision's snapshot is published);
- raw: an ``etcdrpc.WatchStub`` loop on a second prefix holding the same keys and values, so
  the two never see each other's writes.

Latency = the first time the consumer sees a revision - the time its write was issued (tail
latency from the first write, not from when the consumer happened to be looking).
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from typing import Any

from bench._common import OURS_ROOT, RAW_ROOT, current_revision, group_name
from bench._replica import RawWatch, Rig
from rmwatch.store.etcd import txn
from rmwatch.store.keys import KeyLayout
from rmwatch.watcher.cache import ChangeEvent

WRITE_KEYS = 2000  # the writers cycle over this many groups
WRITER_THREADS = 8  # paced writers: enough threads that the pace, not one thread's round trip,
# sets the rate (one thread does ~1k puts/s on 2 CPUs)


class Consumer:
    """One side's consumer of ``expected`` events: ``seen[rev]`` = first time it was seen."""

    def __init__(self, kind: str, rig: Rig, expected: int) -> None:
        self.kind = kind
        self.layout = KeyLayout(OURS_ROOT if kind == "ours" else RAW_ROOT)
        self.expected = expected
        self.seen: dict[int, float] = {}
        self.count = 0
        self.done = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop: Callable[[], None]
        if kind == "ours":
            self._stop = rig.live.subscribe(self._on_event)
            return
        raw = RawWatch(rig.watcher_client, self.layout.prefix, current_revision(rig.writer) + 1)
        created = threading.Event()

        def consume() -> None:
            seen = self.seen
            try:
                for resp in raw.call:
                    if resp.created:
                        created.set()
                        continue
                    now = time.perf_counter()
                    for ev in resp.events:
                        rev = ev.kv.mod_revision
                        if rev not in seen:
                            seen[rev] = now
                        self.count += 1
                    if self.count >= self.expected:
                        self.done.set()
                        return
            except Exception:  # cancelled at the end
                self.done.set()

        self._thread = threading.Thread(target=consume, daemon=True)
        self._thread.start()
        created.wait(10)
        self._stop = raw.cancel

    def _on_event(self, event: ChangeEvent) -> None:
        now = time.perf_counter()
        if event.revision not in self.seen:
            self.seen[event.revision] = now
        self.count += 1
        if self.count >= self.expected:
            self.done.set()

    def close(self) -> None:
        """Unsubscribe, or end the raw stream."""
        self._stop()
        if self._thread is not None:
            self._thread.join(5)


def keys_and_values(rig: Rig, kind: str) -> tuple[list[str], list[bytes]]:
    """The keys the writers cycle over on ``kind``'s prefix, and their values."""
    layout = KeyLayout(OURS_ROOT if kind == "ours" else RAW_ROOT)
    wkeys = min(WRITE_KEYS, len(rig.values))
    return [layout.settings(group_name(i)) for i in range(wkeys)], rig.values[:wkeys]


def write_one(client: Any, keys: list[str], values: list[bytes], j: int, batch: int) -> int:
    """Write number ``j``: a put (``batch`` 1) or a ``batch``-put txn; its revision."""
    nk = len(keys)
    if batch == 1:
        k = j % nk
        return int(client.put(keys[k], values[k]).header.revision)
    base = (j * batch) % nk
    puts = [client.transactions.put(keys[(base + b) % nk], values[(base + b) % nk])
            for b in range(batch)]  # fmt: skip
    return txn(client, [], puts).revision


def write_all(client: Any, keys: list[str], values: list[bytes], ops: int, batch: int,
              send: dict[int, float]) -> None:  # fmt: skip
    """``ops`` writes back to back at full speed; send[rev] = issue time."""
    for j in range(ops):
        t0 = time.perf_counter()
        send[write_one(client, keys, values, j, batch)] = t0


def write_paced(client: Any, keys: list[str], values: list[bytes], rate: float, seconds: float,
                batch: int, send: dict[int, float]) -> int:  # fmt: skip
    """Writes at ``rate`` per second for ``seconds``, from ``WRITER_THREADS`` threads on a
    shared schedule (write j is due at start + j / rate; a late one goes at once, never
    skipped); send[rev] = issue time. Returns the number of writes."""
    total = max(1, round(rate * seconds))
    start = time.perf_counter() + 0.01
    lock = threading.Lock()
    next_j = [0]

    def writer() -> None:
        while True:
            with lock:
                j = next_j[0]
                if j >= total:
                    return
                next_j[0] += 1
            due = start + j / rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            t0 = time.perf_counter()
            rev = write_one(client, keys, values, j, batch)
            send[rev] = t0

    threads = [threading.Thread(target=writer, daemon=True) for _ in range(WRITER_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return total


class GcPauses:
    """Durations (ms) of this process's gen-2 collections while installed (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.gen2_ms: list[float] = []
        self.collections = 0
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.collections += 1
            self.gen2_ms.append((time.perf_counter() - self._started) * 1000)

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)
