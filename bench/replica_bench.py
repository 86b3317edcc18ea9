"""Replica performance as ratios to raw pyetcd/etcdrpc work of the same shape, in one run.

Run from the repo root: ``python -m bench.replica_bench [--groups N] [--reps K] [--quick]``.
It starts its own etcd (tests/harness ``EtcdMember``), loads N realistic groups (~270 B
protobuf values written by ``rmwatch.store.codec.encode_settings``) under two root prefixes with the
same keys and values -- ``/bench/`` (the replica's) and ``/rawside/`` (the raw consumers' for
the live-watch and catch-up pairs, so a raw rep never feeds the replica and vice versa) --
and then measures every pair A/B-alternated (ours, raw, ours, raw, ...). Each figure is the
median of K reps with the min-max of the per-rep ratios. Results: ``bench/results/replica.json``.

Pairs (see bench/results/replica.json "meta.method" for the exact definitions):
- P1 time-to-ready: ``Replica(...).start(); wait_ready`` vs a raw paginated range
  (limit 5000, pinned at the first page's revision) with and without ``decode_settings``.
- P2 live watch: a writer thread puts (1 event/revision) or 20-put txns at max rate; events/s
  and write->visible latency (from the moment the put is issued) of the replica (listener)
  vs a raw ``etcdrpc.WatchStub`` loop.
- P3 catch-up: 100-put txns written while the consumer is not watching, then replayed; the
  replica is the real one, parked in a gated ``session_factory`` (its public test seam).
- P4 reads: ``replica.get_group`` vs serializable ``client.get`` and vs ``dict.get``.
- P6 rebuild after compaction with a reader thread hammering ``get_group``: failed reads and
  rebuild time vs a cold start (P1 "ours") alternated in the same loop.
- P7 memory (tracemalloc): replica for N groups vs the raw bytes, and peak during a rebuild.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import queue
import random
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

from pyetcd import etcdrpc
from pyetcd import utils as etcd_utils

from bench._common import (
    ROOT,
    EtcdMember,
    bulk_put,
    connect_to,
    current_revision,
    etcd_version,
    group_name,
    group_value,
    pct,
    proc_status,
    reset_hwm,
    summary,
)
from rmwatch.store.codec import decode_settings
from rmwatch.store.etcd.watch import WatchSession
from rmwatch.store.keys import KeyLayout
from rmwatch.watcher.cache import ChangeEvent
from rmwatch.watcher.replica import Replica

RESULTS = ROOT / "bench" / "results" / "replica.json"
OURS_ROOT = "/bench/"
RAW_ROOT = "/rawside/"
PAGE = 5000


# ---- helpers ----------------------------------------------------------------------------------


class Gate:
    """A ``session_factory`` that can park the replica's worker before it opens a watch:
    ``cut()`` cancels the live stream and waits until the worker is parked; ``release()``
    lets it open the stream from its applied revision + 1 (the real resume path)."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._open.set()
        self.parked = threading.Event()
        self.closing = threading.Event()
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
        self._requests.put(None)
        self.call.cancel()


def ratio_summary(
    ours: list[float], base: list[float], *, invert: bool = False, digits: int = 3
) -> dict[str, Any]:
    """Per-rep ratios ours/base (base/ours with ``invert``): median, min, max."""
    ratios = [(b / o if invert else o / b) for o, b in zip(ours, base, strict=True)]
    return summary(ratios, digits)


def fmt_range(s: dict[str, Any], unit: str = "", digits: int = 3) -> str:
    return f"{s['median']:.{digits}f}{unit} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"


def stream_open(replica: Replica) -> Callable[[], bool]:
    """True once the replica's worker has a watch stream (a private attribute: bench only)."""
    return lambda: replica._session is not None


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.002)


# ---- setup ------------------------------------------------------------------------------------


def populate(client: Any, n: int) -> tuple[list[bytes], dict[str, Any]]:
    """Write N groups under both roots; return the values (index i -> bytes) and stats."""
    t0 = time.perf_counter()
    values = [group_value(i) for i in range(n)]
    encode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for root in (OURS_ROOT, RAW_ROOT):
        layout = KeyLayout(root)
        bulk_put(client, [(layout.settings(group_name(i)), values[i]) for i in range(n)])
    write_s = time.perf_counter() - t0
    ours_layout = KeyLayout(OURS_ROOT)
    raw_bytes = sum(len(ours_layout.settings(group_name(i)).encode()) + len(v)
                    for i, v in enumerate(values))  # fmt: skip
    return values, {
        "groups": n,
        "value_bytes_mean": round(statistics.mean(map(len, values)), 1),
        "value_bytes_min": min(map(len, values)),
        "value_bytes_max": max(map(len, values)),
        "raw_key_plus_value_bytes": raw_bytes,
        "encode_seconds": round(encode_s, 2),
        "write_seconds": round(write_s, 2),
    }


# ---- P1: time to ready ------------------------------------------------------------------------


def p1_ours(endpoint: str, expect: int) -> float:
    gc.collect()
    t0 = time.perf_counter()
    replica = Replica(endpoints=[endpoint], root_prefix=OURS_ROOT).start()
    replica.wait_ready(300)
    dt = time.perf_counter() - t0
    keys = len(replica.snapshot().entries)
    # Closing while the worker is still opening its watch stream segfaulted once in cygrpc
    # (client.close() races stub.Watch on the same channel): let the stream open first.
    wait_for(stream_open(replica), 10, "the watch stream to open")
    time.sleep(0.05)
    replica.close()
    del replica
    gc.collect()
    assert keys == expect, (keys, expect)
    return dt


def raw_range(client: Any, prefix: str, *, decode: bool) -> tuple[int, int]:
    """Paginated range pinned at page one's revision (like the replica's loader); with
    ``decode``, every value becomes a ResourceGroup via ``decode_settings``."""
    start = prefix.encode()
    end = etcd_utils.prefix_range_end(start)
    resp = client.get_range_response(start, end, limit=PAGE)
    revision = int(resp.header.revision)
    held: dict[bytes, Any] = {}
    while True:
        if decode:
            for kv in resp.kvs:
                key = kv.key
                held[key] = decode_settings(key.decode(), kv.value)
        else:
            for kv in resp.kvs:
                held[kv.key] = kv.value
        if not resp.more or not resp.kvs:
            break
        resp = client.get_range_response(
            resp.kvs[-1].key + b"\0", end, limit=PAGE, revision=revision
        )
    return revision, len(held)


def p1_raw(endpoint: str, expect: int, decode: bool) -> float:
    gc.collect()
    t0 = time.perf_counter()
    client = connect_to(endpoint)
    _rev, count = raw_range(client, KeyLayout(OURS_ROOT).prefix, decode=decode)
    dt = time.perf_counter() - t0
    client.close()
    gc.collect()
    assert count == expect, (count, expect)
    return dt


def run_p1(endpoint: str, n: int, reps: int, *, decode: bool = True) -> dict[str, Any]:
    """ours vs raw range (and vs raw range + decode_settings with ``decode``), rotated."""
    ours: list[float] = []
    raw: list[float] = []
    rawdec: list[float] = []
    p1_raw(endpoint, n, False)  # warm-up (server page cache, imports)
    kinds = [("ours", ours), ("raw", raw)] + ([("rawdec", rawdec)] if decode else [])
    for rep in range(reps):
        order = kinds[rep % len(kinds) :] + kinds[: rep % len(kinds)]
        for name, sink in order:
            if name == "ours":
                sink.append(p1_ours(endpoint, n))
            else:
                sink.append(p1_raw(endpoint, n, name == "rawdec"))
        extra = f" raw+decode {rawdec[-1]:.3f}s" if decode else ""
        print(f"  P1 n={n} rep {rep + 1}: ours {ours[-1]:.3f}s raw {raw[-1]:.3f}s{extra}",
              flush=True)  # fmt: skip
    out = {
        "groups": n,
        "ours_s": summary(ours),
        "raw_range_s": summary(raw),
        "ratio_vs_raw_range": ratio_summary(ours, raw),
    }
    if decode:
        out["raw_range_decode_s"] = summary(rawdec)
        out["ratio_vs_raw_range_decode"] = ratio_summary(ours, rawdec)
    return out


# ---- P2: live watch ---------------------------------------------------------------------------


def writer_run(
    client: Any, keys: list[str], values: list[bytes], ops: int, batch: int,
    send: dict[int, float],
) -> None:  # fmt: skip
    """``ops`` writes (puts, or ``batch``-put txns) at max rate; send[rev] = issue time."""
    from rmwatch.store.etcd import txn  # noqa: PLC0415

    nk = len(keys)
    for j in range(ops):
        if batch == 1:
            k = j % nk
            t0 = time.perf_counter()
            rev = int(client.put(keys[k], values[k]).header.revision)
        else:
            base = (j * batch) % nk
            ops_ = [client.transactions.put(keys[(base + b) % nk], values[(base + b) % nk])
                    for b in range(batch)]  # fmt: skip
            t0 = time.perf_counter()
            rev = txn(client, [], ops_).revision
        send[rev] = t0


def p2_measure(
    kind: str, replica: Replica, writer: Any, watcher_client: Any, values: list[bytes],
    wkeys: int, ops: int, batch: int,
) -> dict[str, Any]:  # fmt: skip
    root = OURS_ROOT if kind == "ours" else RAW_ROOT
    layout = KeyLayout(root)
    keys = [layout.settings(group_name(i)) for i in range(wkeys)]
    vals = values[:wkeys]
    expected = ops * batch
    seen: dict[int, float] = {}
    count = [0]
    done = threading.Event()
    send: dict[int, float] = {}
    gc.collect()
    if kind == "ours":

        def listener(event: ChangeEvent) -> None:
            now = time.perf_counter()
            if event.revision not in seen:
                seen[event.revision] = now
            count[0] += 1
            if count[0] >= expected:
                done.set()

        unsubscribe = replica.subscribe(listener)
        stop_consumer: Callable[[], None] = unsubscribe
        thread = None
    else:
        raw = RawWatch(watcher_client, layout.prefix, current_revision(writer) + 1)
        created = threading.Event()

        def consume() -> None:
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
                        count[0] += 1
                    if count[0] >= expected:
                        done.set()
                        return
            except Exception:  # cancelled at the end
                done.set()

        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        created.wait(10)
        stop_consumer = raw.cancel
    writer_run(writer, keys, vals, ops, batch, send)
    if not done.wait(120):
        raise RuntimeError(f"P2 {kind}: saw {count[0]} of {expected} events")
    stop_consumer()
    if thread is not None:
        thread.join(5)
    first = min(send.values())
    last_seen = max(seen.values())
    lat = [(seen[rev] - t) * 1000 for rev, t in send.items()]
    return {
        "events_per_s": expected / (last_seen - first),
        "p50_ms": pct(lat, 0.50),
        "p99_ms": pct(lat, 0.99),
        "lat_ms": lat,  # type: ignore[dict-item]
    }


def quantiles(values: list[float], points: int = 200) -> list[float]:
    """``points`` evenly spaced quantiles (0..1) of ``values``: a CDF small enough for JSON."""
    ordered = sorted(values)
    if not ordered:
        return []
    last = len(ordered) - 1
    return [round(ordered[round(i * last / (points - 1))], 4) for i in range(points)]


def run_p2(
    replica: Replica, writer: Any, watcher_client: Any, values: list[bytes], reps: int,
    batch: int, ops: int,
) -> dict[str, Any]:  # fmt: skip
    wkeys = min(2000, len(values))
    p2_measure("ours", replica, writer, watcher_client, values, wkeys, max(50, ops // 10), batch)
    p2_measure("raw", replica, writer, watcher_client, values, wkeys, max(50, ops // 10), batch)
    rows: dict[str, list[dict[str, Any]]] = {"ours": [], "raw": []}
    for rep in range(reps):
        order = ["ours", "raw"] if rep % 2 == 0 else ["raw", "ours"]
        for kind in order:
            rows[kind].append(
                p2_measure(kind, replica, writer, watcher_client, values, wkeys, ops, batch)
            )
        o, r = rows["ours"][-1], rows["raw"][-1]
        print(f"  P2 batch={batch} rep {rep + 1}: ours {o['events_per_s']:.0f}/s "
              f"p50 {o['p50_ms']:.2f} p99 {o['p99_ms']:.2f} ms | raw {r['events_per_s']:.0f}/s "
              f"p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms", flush=True)  # fmt: skip
    col = {k: {m: [row[m] for row in v] for m in ("events_per_s", "p50_ms", "p99_ms")}
           for k, v in rows.items()}  # fmt: skip
    return {
        "events_per_revision": batch,
        "events_per_rep": ops * batch,
        "ours": {m: summary(v) for m, v in col["ours"].items()},
        "raw": {m: summary(v) for m, v in col["raw"].items()},
        "rate_ratio": ratio_summary(col["ours"]["events_per_s"], col["raw"]["events_per_s"]),
        "p50_ratio": ratio_summary(col["ours"]["p50_ms"], col["raw"]["p50_ms"]),
        "p99_ratio": ratio_summary(col["ours"]["p99_ms"], col["raw"]["p99_ms"]),
        # every rep's write->visible latencies pooled, as 200 quantiles (the CDF plot)
        "latency_cdf_ms": {
            k: quantiles([x for row in v for x in row["lat_ms"]]) for k, v in rows.items()
        },
    }


# ---- P3: catch-up replay ----------------------------------------------------------------------


def backlog(client: Any, root: str, values: list[bytes], revisions: int, offset: int) -> int:
    layout = KeyLayout(root)
    n = len(values)
    items = []
    for j in range(revisions * 100):
        i = (offset + j) % n
        items.append((layout.settings(group_name(i)), values[i]))
    return bulk_put(client, items, 100)


def p3_ours(replica: Replica, gate: Gate, writer: Any, values: list[bytes], revisions: int,
            offset: int) -> float:  # fmt: skip
    gate.cut()
    start = replica.revision
    last = backlog(writer, OURS_ROOT, values, revisions, offset)
    gc.collect()
    t0 = time.perf_counter()
    gate.release()
    replica.wait_for_revision(last, 300)
    dt = time.perf_counter() - t0
    assert replica.revision == last, (replica.revision, last, start)
    return dt


def p3_raw(writer: Any, watcher_client: Any, values: list[bytes], revisions: int,
           offset: int, prev_kv: bool = False) -> float:  # fmt: skip
    start = current_revision(writer)
    last = backlog(writer, RAW_ROOT, values, revisions, offset)
    expected = revisions * 100
    count = 0
    gc.collect()
    t0 = time.perf_counter()
    raw = RawWatch(watcher_client, KeyLayout(RAW_ROOT).prefix, start + 1, prev_kv=prev_kv)
    top = 0
    for resp in raw.call:
        for ev in resp.events:
            count += 1
            top = ev.kv.mod_revision
        if top >= last:
            break
    dt = time.perf_counter() - t0
    raw.cancel()
    assert count == expected, (count, expected)
    return dt


def run_p3(replica: Replica, gate: Gate, writer: Any, watcher_client: Any,
           values: list[bytes], reps: int, revisions: int) -> dict[str, Any]:  # fmt: skip
    ours: list[float] = []
    raw: list[float] = []
    raw_prev: list[float] = []
    p3_ours(replica, gate, writer, values, max(5, revisions // 10), 0)  # warm-up
    p3_raw(writer, watcher_client, values, max(5, revisions // 10), 0)
    kinds = ["ours", "raw", "raw_prev"]
    for rep in range(reps):
        offset = rep * revisions * 100
        order = kinds[rep % 3 :] + kinds[: rep % 3]
        for kind in order:
            if kind == "ours":
                ours.append(p3_ours(replica, gate, writer, values, revisions, offset))
            elif kind == "raw":
                raw.append(p3_raw(writer, watcher_client, values, revisions, offset))
            else:
                raw_prev.append(
                    p3_raw(writer, watcher_client, values, revisions, offset, prev_kv=True)
                )
        ev = revisions * 100
        print(f"  P3 rep {rep + 1}: ours {ev / ours[-1]:.0f} ev/s ({ours[-1]:.3f}s) | "
              f"raw {ev / raw[-1]:.0f} ev/s ({raw[-1]:.3f}s) | raw with prev_kv "
              f"{ev / raw_prev[-1]:.0f} ev/s", flush=True)  # fmt: skip
    ev = revisions * 100
    ours_rate = [ev / t for t in ours]
    raw_rate = [ev / t for t in raw]
    prev_rate = [ev / t for t in raw_prev]
    return {
        "revisions": revisions,
        "events": ev,
        "ours_events_per_s": summary(ours_rate, 1),
        "raw_events_per_s": summary(raw_rate, 1),
        "raw_prev_kv_events_per_s": summary(prev_rate, 1),
        "rate_ratio": ratio_summary(ours_rate, raw_rate),
        "rate_ratio_vs_prev_kv": ratio_summary(ours_rate, prev_rate),
    }


# ---- P4: reads --------------------------------------------------------------------------------


def run_p4(replica: Replica, client: Any, n: int, reps: int, calls: int = 200_000,
           etcd_calls: int = 2000) -> dict[str, Any]:  # fmt: skip
    rnd = random.Random(4)
    names = [group_name(rnd.randrange(n)) for _ in range(calls)]
    layout = KeyLayout(OURS_ROOT)
    snap0 = replica.snapshot()
    models = {group_name(i): snap0.get_group(group_name(i)) for i in range(n)}
    assert all(m is not None for m in models.values())

    def loop_ours() -> float:
        get = replica.get_group
        t0 = time.perf_counter()
        for name in names:
            get(name)
        return len(names) / (time.perf_counter() - t0)

    def loop_snapshot_call() -> float:
        snapshot = replica.snapshot
        t0 = time.perf_counter()
        for name in names:
            snapshot().get_group(name)
        return len(names) / (time.perf_counter() - t0)

    def loop_held_snapshot() -> float:
        get = replica.snapshot().get_group
        t0 = time.perf_counter()
        for name in names:
            get(name)
        return len(names) / (time.perf_counter() - t0)

    def loop_dict() -> float:
        get = models.get
        t0 = time.perf_counter()
        for name in names:
            get(name)
        return len(names) / (time.perf_counter() - t0)

    etcd_keys = [layout.settings(name) for name in names[:etcd_calls]]

    def loop_etcd() -> float:
        get = client.get
        t0 = time.perf_counter()
        for key in etcd_keys:
            get(key, serializable=True)
        return len(etcd_keys) / (time.perf_counter() - t0)

    variants = {
        "ours_get_group": loop_ours,
        "ours_snapshot().get_group": loop_snapshot_call,
        "ours_held_snapshot.get_group": loop_held_snapshot,
        "dict_get": loop_dict,
        "etcd_serializable_get": loop_etcd,
    }
    for fn in variants.values():
        fn()
    samples: dict[str, list[float]] = {k: [] for k in variants}
    names_order = list(variants)
    for rep in range(reps):
        order = names_order[rep % len(names_order) :] + names_order[: rep % len(names_order)]
        for name in order:
            gc.collect()
            samples[name].append(variants[name]())
        print("  P4 rep", rep + 1, " ".join(f"{k}={v[-1]:.0f}/s" for k, v in samples.items()),
              flush=True)  # fmt: skip
    ours = samples["ours_get_group"]
    return {
        "reads_per_s": {k: summary(v, 1) for k, v in samples.items()},
        "ours_vs_etcd_speedup": ratio_summary(ours, samples["etcd_serializable_get"], digits=1),
        "ours_vs_dict_slowdown": ratio_summary(ours, samples["dict_get"], invert=True),
        "snapshot_call_vs_dict_slowdown": ratio_summary(
            samples["ours_snapshot().get_group"], samples["dict_get"], invert=True
        ),
        "held_snapshot_vs_dict_slowdown": ratio_summary(
            samples["ours_held_snapshot.get_group"], samples["dict_get"], invert=True
        ),
    }


_compactors: dict[str, Any] = {}


def compact_client(endpoint: str) -> Any:
    """A client with a 120 s deadline: a physical compaction of a long history takes > 5 s."""
    if endpoint not in _compactors:
        from rmwatch.store.etcd import EtcdConfig, connect  # noqa: PLC0415

        _compactors[endpoint] = connect(EtcdConfig.parse([endpoint], timeout=120.0))
    return _compactors[endpoint]


# ---- P6: rebuild under reads ------------------------------------------------------------------


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


def run_p6(replica: Replica, gate: Gate, writer: Any, values: list[bytes], endpoint: str,
           reps: int) -> dict[str, Any]:  # fmt: skip
    n = len(values)
    rebuild: list[float] = []
    cold: list[float] = []
    reads: list[int] = []
    failed: list[int] = []
    errors: list[str] = []
    rss_steady: list[int] = []
    rss_peak: list[int] = []
    rebuilt_causes: list[str] = []
    timelines: list[dict[str, Any]] = []
    for rep in range(reps):
        order = ["rebuild", "cold"] if rep % 2 == 0 else ["cold", "rebuild"]
        for kind in order:
            if kind == "cold":
                cold.append(p1_ours(endpoint, n))
                continue
            stop = threading.Event()
            counters = {"reads": 0, "failed": 0}
            rnd = random.Random(rep)
            names = [group_name(rnd.randrange(n)) for _ in range(10_000)]
            bins: list[int] = []  # reads served per 100 ms since the reader started
            start = [0.0]

            def reader(stop: threading.Event = stop, counters: dict[str, int] = counters,
                       names: list[str] = names, bins: list[int] = bins,
                       start: list[float] = start) -> None:  # fmt: skip
                i = 0
                get = replica.get_group
                clock = time.perf_counter
                began = start[0] = clock()
                while not stop.is_set():
                    name = names[i % 10_000]
                    i += 1
                    try:
                        if get(name).value is None:
                            counters["failed"] += 1
                            if len(errors) < 5:
                                errors.append(f"{name}: None")
                    except Exception as exc:
                        counters["failed"] += 1
                        if len(errors) < 5:
                            errors.append(f"{name}: {exc!r}")
                    counters["reads"] += 1
                    slot = int((clock() - began) * 10)
                    while len(bins) <= slot:
                        bins.append(0)
                    bins[slot] += 1

            gc.collect()
            before = proc_status()
            reset_hwm()
            thread = threading.Thread(target=reader, daemon=True)
            thread.start()
            marks: dict[str, float] = {}
            dt, _last = trigger_rebuild(replica, gate, writer, values, rep, endpoint, marks,
                                        collect=False)  # fmt: skip
            time.sleep(0.5)  # the timeline shows reads after the swap too
            stop.set()
            thread.join()
            timelines.append({
                "reads_per_100ms": bins[:-1],  # the last bin is partial
                "release_s": round(marks["release"] - start[0], 3),
                "done_s": round(marks["done"] - start[0], 3),
            })  # fmt: skip
            after = proc_status()
            rebuild.append(dt)
            reads.append(counters["reads"])
            failed.append(counters["failed"])
            rss_steady.append(before["VmRSS"])
            rss_peak.append(after["VmHWM"])
            causes = [t.cause for t in replica.transitions() if "rebuilt" in t.cause]
            rebuilt_causes.append(causes[-1] if causes else "?")
        print(f"  P6 rep {rep + 1}: rebuild {rebuild[-1]:.3f}s (reads {reads[-1]}, failed "
              f"{failed[-1]}) | cold start {cold[-1]:.3f}s | RSS {rss_steady[-1] / 2**20:.0f}"
              f" -> peak {rss_peak[-1] / 2**20:.0f} MiB", flush=True)  # fmt: skip
    return {
        "rebuild_with_reader_s": summary(rebuild),
        "cold_start_s": summary(cold),
        "rebuild_vs_cold_start": ratio_summary(rebuild, cold),
        "reads_during_rebuild": reads,
        "failed_reads": failed,
        "failed_read_examples": errors,
        "process_rss_before_mib": [round(r / 2**20, 1) for r in rss_steady],
        "process_rss_peak_mib": [round(r / 2**20, 1) for r in rss_peak],
        "process_peak_over_rss": ratio_summary(
            [float(p) for p in rss_peak], [float(s) for s in rss_steady]
        ),
        "last_rebuild_transition": rebuilt_causes[-1] if rebuilt_causes else None,
        # the rep whose rebuild time is the median: reads per 100 ms around it
        "timeline": sorted(timelines, key=lambda t: t["done_s"] - t["release_s"])[
            len(timelines) // 2
        ],
    }


# ---- P7: memory -------------------------------------------------------------------------------


def p7_ours(endpoint: str, writer: Any, values: list[bytes], rep: int) -> dict[str, float]:
    """tracemalloc: Python bytes held by a ready replica, and the peak during a rebuild."""
    gc.collect()
    gate = Gate()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    replica = Replica(endpoints=[endpoint], root_prefix=OURS_ROOT,
                      session_factory=gate.factory).start()  # fmt: skip
    replica.wait_ready(600)
    gc.collect()
    steady = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.reset_peak()
    trigger_rebuild(replica, gate, writer, values, 1000 + rep, endpoint)
    gc.collect()
    peak = tracemalloc.get_traced_memory()[1] - base
    after = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    gate.close()
    replica.close()
    del replica
    gc.collect()
    return {"steady": steady, "rebuild_peak": peak, "after_rebuild": after}


def p7_raw(endpoint: str) -> float:
    """tracemalloc: Python bytes of the raw pages held as (key bytes -> value bytes)."""
    client = connect_to(endpoint)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    start = KeyLayout(OURS_ROOT).prefix.encode()
    end = etcd_utils.prefix_range_end(start)
    resp = client.get_range_response(start, end, limit=PAGE)
    revision = resp.header.revision
    held: dict[bytes, bytes] = {}
    while True:
        for kv in resp.kvs:
            held[kv.key] = kv.value
        if not resp.more:
            break
        resp = client.get_range_response(resp.kvs[-1].key + b"\0", end, limit=PAGE,
                                         revision=revision)  # fmt: skip
    del resp
    gc.collect()
    size = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del held
    client.close()
    return float(size)


def run_p7(endpoint: str, writer: Any, values: list[bytes], raw_bytes: int,
           reps: int) -> dict[str, Any]:  # fmt: skip
    ours: list[dict[str, float]] = []
    raw: list[float] = []
    for rep in range(reps):
        order = ["ours", "raw"] if rep % 2 == 0 else ["raw", "ours"]
        for kind in order:
            if kind == "ours":
                ours.append(p7_ours(endpoint, writer, values, rep))
            else:
                raw.append(p7_raw(endpoint))
        o = ours[-1]
        print(f"  P7 rep {rep + 1}: replica {o['steady'] / 2**20:.1f} MiB, rebuild peak "
              f"{o['rebuild_peak'] / 2**20:.1f} MiB | raw dict {raw[-1] / 2**20:.1f} MiB | "
              f"key+value bytes {raw_bytes / 2**20:.1f} MiB", flush=True)  # fmt: skip
    steady = [o["steady"] for o in ours]
    peak = [o["rebuild_peak"] for o in ours]
    return {
        "replica_traced_mib": summary([s / 2**20 for s in steady], 1),
        "replica_rebuild_peak_mib": summary([p / 2**20 for p in peak], 1),
        "raw_pages_dict_traced_mib": summary([r / 2**20 for r in raw], 1),
        "raw_key_plus_value_mib": round(raw_bytes / 2**20, 1),
        "ratio_vs_key_plus_value": summary([s / raw_bytes for s in steady], 2),
        "ratio_vs_raw_dict": ratio_summary(steady, raw, digits=2),
        "rebuild_peak_over_steady": ratio_summary(peak, steady, digits=2),
        "bytes_per_group": round(statistics.median(steady) / len(values)),
    }


# ---- report -----------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> list[str]:
    rows: list[tuple[str, str, str, str, str]] = []

    def add(pid: str, what: str, fig: dict[str, Any], goal: str, ok: bool, digits: int = 3) -> None:
        rows.append((pid, what, fmt_range(fig, "x", digits), goal, "PASS" if ok else "FAIL"))

    p1 = results.get("P1")
    if p1:
        add(
            "P1",
            "ready time / raw range (no decode)",
            p1["ratio_vs_raw_range"],
            "<= 2.0x",
            p1["ratio_vs_raw_range"]["median"] <= 2.0,
        )
        if "ratio_vs_raw_range_decode" in p1:
            add("P1", "ready time / raw range + decode_settings",
                p1["ratio_vs_raw_range_decode"], "(info)", True)  # fmt: skip
    for key, label in (("P2", "1 ev/rev"), ("P2b", "20 ev/rev")):
        p2 = results.get(key)
        if p2:
            add(
                key,
                f"live events/s ours/raw ({label})",
                p2["rate_ratio"],
                ">= 0.95x",
                p2["rate_ratio"]["median"] >= 0.95,
            )
            add(
                key,
                f"write->visible p99 ours/raw ({label})",
                p2["p99_ratio"],
                "<= 1.1x",
                p2["p99_ratio"]["median"] <= 1.1,
            )
            add(key, f"write->visible p50 ours/raw ({label})", p2["p50_ratio"], "(info)", True)
    p3 = results.get("P3")
    if p3:
        add(
            "P3",
            "catch-up ev/s ours/raw, same request (100 ev/rev)",
            p3["rate_ratio"],
            ">= 0.7x",
            p3["rate_ratio"]["median"] >= 0.7,
        )
        add("P3", "catch-up ev/s ours/raw asking prev_kv", p3["rate_ratio_vs_prev_kv"],
            "(info)", True)  # fmt: skip
    p4 = results.get("P4")
    if p4:
        add(
            "P4",
            "get_group/s over serializable get/s",
            p4["ours_vs_etcd_speedup"],
            ">= 1000x",
            p4["ours_vs_etcd_speedup"]["median"] >= 1000,
            1,
        )
        add(
            "P4",
            "get_group time / dict.get time",
            p4["ours_vs_dict_slowdown"],
            "<= 3x",
            p4["ours_vs_dict_slowdown"]["median"] <= 3,
        )
        add("P4", "snapshot().get_group time / dict.get", p4["snapshot_call_vs_dict_slowdown"],
            "(info)", True)  # fmt: skip
        add("P4", "held snapshot.get_group / dict.get", p4["held_snapshot_vs_dict_slowdown"],
            "(info)", True)  # fmt: skip
    p6 = results.get("P6")
    if p6:
        failed = sum(p6["failed_reads"])
        rows.append(("P6", f"failed reads during rebuild (of {sum(p6['reads_during_rebuild'])})",
                     str(failed), "0", "PASS" if failed == 0 else "FAIL"))  # fmt: skip
        add(
            "P6",
            "rebuild (reader hammering) / cold start",
            p6["rebuild_vs_cold_start"],
            "<= 1.2x",
            p6["rebuild_vs_cold_start"]["median"] <= 1.2,
        )
        add("P6", "process RSS peak in rebuild / RSS before", p6["process_peak_over_rss"],
            "(info)", True)  # fmt: skip
    p7 = results.get("P7")
    if p7:
        add(
            "P7",
            "replica traced bytes / (key+value bytes)",
            p7["ratio_vs_key_plus_value"],
            "<= 3x",
            p7["ratio_vs_key_plus_value"]["median"] <= 3,
            2,
        )
        add("P7", "replica traced / raw pages dict traced", p7["ratio_vs_raw_dict"], "(info)",
            True, 2)  # fmt: skip
        add(
            "P7",
            "rebuild peak / steady (traced)",
            p7["rebuild_peak_over_steady"],
            "<= 2x",
            p7["rebuild_peak_over_steady"]["median"] <= 2,
            2,
        )
    w = [max(len(r[i]) for r in rows) for i in range(5)]
    head = ("id", "figure (ours vs baseline, same run)", "median [min-max]", "goal", "")
    w = [max(w[i], len(head[i])) for i in range(5)]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(head)),
             "  ".join("-" * w[i] for i in range(5))]  # fmt: skip
    lines += ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in rows]
    return lines


def absolute_lines(results: dict[str, Any]) -> list[str]:
    out = []
    p1 = results.get("P1")
    if p1:
        dec = p1.get("raw_range_decode_s")
        out.append(f"P1  ours {fmt_range(p1['ours_s'], 's')}  raw range "
                   f"{fmt_range(p1['raw_range_s'], 's')}"
                   + (f"  raw+decode {fmt_range(dec, 's')}" if dec else ""))  # fmt: skip
    for key in ("P2", "P2b"):
        p2 = results.get(key)
        if p2:
            o, r = p2["ours"], p2["raw"]
            out.append(f"{key:<3} ours {o['events_per_s']['median']:.0f} ev/s p50 "
                       f"{o['p50_ms']['median']:.2f} p99 {o['p99_ms']['median']:.2f} ms | raw "
                       f"{r['events_per_s']['median']:.0f} ev/s p50 {r['p50_ms']['median']:.2f}"
                       f" p99 {r['p99_ms']['median']:.2f} ms")  # fmt: skip
    p3 = results.get("P3")
    if p3:
        out.append(f"P3  ours {p3['ours_events_per_s']['median']:.0f} ev/s | raw "
                   f"{p3['raw_events_per_s']['median']:.0f} ev/s | raw with prev_kv "
                   f"{p3['raw_prev_kv_events_per_s']['median']:.0f} ev/s ({p3['events']} events, "
                   f"{p3['revisions']} revisions)")  # fmt: skip
    p4 = results.get("P4")
    if p4:
        out.append("P4  " + "  ".join(f"{k} {v['median']:.0f}/s"
                                      for k, v in p4["reads_per_s"].items()))  # fmt: skip
    p6 = results.get("P6")
    if p6:
        out.append(f"P6  rebuild {fmt_range(p6['rebuild_with_reader_s'], 's')}  cold start "
                   f"{fmt_range(p6['cold_start_s'], 's')}")  # fmt: skip
    p7 = results.get("P7")
    if p7:
        out.append(f"P7  replica {p7['replica_traced_mib']['median']} MiB "
                   f"({p7['bytes_per_group']} B/group), rebuild peak "
                   f"{p7['replica_rebuild_peak_mib']['median']} MiB, raw dict "
                   f"{p7['raw_pages_dict_traced_mib']['median']} MiB, key+value "
                   f"{p7['raw_key_plus_value_mib']} MiB")  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="3 reps, shorter P2/P3 runs")
    parser.add_argument("--only", default="P1,P2,P2b,P3,P4,P6,P7",
                        help="comma-separated subset")  # fmt: skip
    args = parser.parse_args(argv)
    reps = args.reps if args.reps is not None else (3 if args.quick else 5)
    if reps < (3 if args.quick else 5):
        print(f"warning: {reps} reps is below the required minimum", file=sys.stderr)
    only = set(args.only.split(","))
    p2_ops = 800 if args.quick else 2000
    p2b_ops = 150 if args.quick else 400
    p3_revs = 60 if args.quick else 100
    n = args.groups
    started = time.perf_counter()
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    with EtcdMember("replica-bench") as member:
        endpoint = member.endpoint
        writer = connect_to(endpoint)
        watcher_client = connect_to(endpoint)
        print(f"etcd {etcd_version(member.binary)} at {endpoint}; populating {n} groups ...",
              flush=True)  # fmt: skip
        values, data = populate(writer, n)
        print(f"  {data}", flush=True)
        if "P1" in only:
            print("P1 time-to-ready", flush=True)
            results["P1"] = run_p1(endpoint, n, reps)
        gate = Gate()
        replica = Replica(endpoints=[endpoint], root_prefix=OURS_ROOT,
                          session_factory=gate.factory).start()  # fmt: skip
        try:
            replica.wait_ready(300)
            if "P4" in only:
                print("P4 reads", flush=True)
                results["P4"] = run_p4(replica, writer, n, reps)
            if "P2" in only:
                print("P2 live watch, single puts", flush=True)
                results["P2"] = run_p2(replica, writer, watcher_client, values, reps, 1, p2_ops)
            if "P2b" in only:
                print("P2b live watch, 20-put txns", flush=True)
                results["P2b"] = run_p2(replica, writer, watcher_client, values, reps, 20,
                                        p2b_ops)  # fmt: skip
            if "P3" in only:
                print("P3 catch-up replay", flush=True)
                results["P3"] = run_p3(replica, gate, writer, watcher_client, values, reps,
                                       p3_revs)  # fmt: skip
            if "P6" in only:
                print("P6 rebuild under reads", flush=True)
                # Drop the history of the earlier phases first (untimed, replica live), so the
                # timed compactions below are small.
                compact_client(endpoint).compact(current_revision(writer), physical=True)
                results["P6"] = run_p6(replica, gate, writer, values, endpoint, reps)
        finally:
            gate.close()
            # See p1_ours: close() right after the stream is (re)opened segfaulted in cygrpc.
            with contextlib.suppress(RuntimeError):
                wait_for(stream_open(replica), 10, "the watch stream to open")
            time.sleep(0.05)
            replica.close()
            del replica
            gc.collect()
        if "P7" in only:
            print("P7 memory (tracemalloc)", flush=True)
            results["P7"] = run_p7(endpoint, writer, values, data["raw_key_plus_value_bytes"],
                                   reps)  # fmt: skip
        writer.close()
        watcher_client.close()
        version = etcd_version(member.binary)
    meta = {
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu": _cpu_model(),
        },
        "etcd_version": version,
        "data": data,
        "reps": reps,
        "quick": args.quick,
        "total_seconds": round(time.perf_counter() - started, 1),
        "loadavg_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "method": {
            "P1": "ours: Replica(...).start() -> wait_ready; raw: fresh client + paginated "
            "get_range_response(limit=5000, revision=R of page 1), values kept in a dict; "
            "raw+decode: same plus decode_settings per value",
            "P2": "writer thread (own client) issues puts (P2) or 20-put txns (P2b) back to "
            "back; latency = first time the consumer sees a revision - time the write was "
            "issued; rate = events / (last seen - first issue). ours: Replica listener "
            "(called after the snapshot is published); raw: etcdrpc WatchStub loop on a "
            "second prefix holding the same keys/values (prev_kv, progress_notify)",
            "P3": "ours: the real Replica parked in a gated session_factory, backlog of "
            "100-put txns written, gate released, time to wait_for_revision(last); raw: "
            "WatchStub from R+1 on the second prefix until the last revision is received, "
            "with prev_kv=True (as the replica asks) and without",
            "P4": "200k get calls over random existing names; etcd: 2000 serializable "
            "client.get(key, serializable=True); dict: dict name->ResourceGroup",
            "P6": "gate cut, 100 puts, physical compaction at the last revision, gate released "
            "(stream gets compact_revision -> rebuild); a reader thread calls get_group "
            "without pause; failure = exception or None for an existing group; alternated "
            "with a cold start (P1 ours)",
            "P7": "tracemalloc current bytes after wait_ready and gc (replica incl. its client) "
            "vs sum(len(key)+len(value)) and vs a dict key bytes -> value bytes from raw "
            "pages; peak = tracemalloc peak during a compaction-triggered rebuild",
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print()
    print(f"machine: nproc={meta['machine']['nproc']} cpu={meta['machine']['cpu']} "
          f"python={meta['machine']['python']} etcd={version}; groups={n} "
          f"(value mean {data['value_bytes_mean']} B); reps={reps}; 1-min load avg "
          f"before/after {meta['loadavg_before_after']}")  # fmt: skip
    for line in table(results):
        print(line)
    print()
    for line in absolute_lines(results):
        print(line)
    print(f"written to {RESULTS.relative_to(ROOT)} in {meta['total_seconds']}s")
    return 0


def _cpu_model() -> str:
    try:
        out = subprocess.run(
            ["lscpu"], check=False, capture_output=True, text=True, timeout=5
        ).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
