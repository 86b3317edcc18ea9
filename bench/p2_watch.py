"""P2 and P2b, the live watch: events/s and write-to-visible latency of the replica against a
bare etcd watch loop, while a writer thread writes at full speed.

A writer client issues single puts (P2, 1 event per revision) or 20-put transactions (P2b)
back to back over the first 2000 groups. Latency = the first time the consumer sees a
revision - the time its write was issued (tail latency from the first write, not from when
the consumer happened to be looking); rate = events / (last seen - first issue).

- ours: a ``Replica.subscribe`` listener (called once the revision's snapshot is published);
- raw: an ``etcdrpc.WatchStub`` loop on a second prefix holding the same keys and values, so
  the two never see each other's writes.

Goals: events/s >= 0.95x raw, p99 <= 1.1x raw (the replica must never be the bottleneck of the
watch stream). Every rep's latencies, pooled, are kept as a 200-point CDF for the plot.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from typing import Any

from bench._common import OURS_ROOT, RAW_ROOT, current_revision, group_name, log
from bench._replica import RawWatch, Rig
from bench._stats import Row, alternated, goal_row, pct, quantiles, ratio_summary, summary
from rmwatch.store.etcd import txn
from rmwatch.store.keys import KeyLayout
from rmwatch.watcher.cache import ChangeEvent

RATE_GOAL = 0.95
P99_GOAL = 1.1
WRITE_KEYS = 2000  # the writer cycles over this many groups
# Writes per rep (smoke, full): single puts, and 20-put transactions.
OPS = {1: (50, 2000), 20: (20, 400)}


def write_all(client: Any, keys: list[str], values: list[bytes], ops: int, batch: int,
              send: dict[int, float]) -> None:  # fmt: skip
    """``ops`` writes (puts, or ``batch``-put txns) at max rate; send[rev] = issue time."""
    nk = len(keys)
    for j in range(ops):
        if batch == 1:
            k = j % nk
            t0 = time.perf_counter()
            rev = int(client.put(keys[k], values[k]).header.revision)
        else:
            base = (j * batch) % nk
            puts = [client.transactions.put(keys[(base + b) % nk], values[(base + b) % nk])
                    for b in range(batch)]  # fmt: skip
            t0 = time.perf_counter()
            rev = txn(client, [], puts).revision
        send[rev] = t0


def measure(kind: str, rig: Rig, ops: int, batch: int) -> dict[str, Any]:
    """One rep of ``kind`` (``"ours"`` or ``"raw"``): rate, p50, p99 and every latency."""
    layout = KeyLayout(OURS_ROOT if kind == "ours" else RAW_ROOT)
    wkeys = min(WRITE_KEYS, len(rig.values))
    keys = [layout.settings(group_name(i)) for i in range(wkeys)]
    vals = rig.values[:wkeys]
    expected = ops * batch
    seen: dict[int, float] = {}
    count = [0]
    done = threading.Event()
    send: dict[int, float] = {}
    gc.collect()
    thread = None
    if kind == "ours":

        def listener(event: ChangeEvent) -> None:
            now = time.perf_counter()
            if event.revision not in seen:
                seen[event.revision] = now
            count[0] += 1
            if count[0] >= expected:
                done.set()

        stop_consumer: Callable[[], None] = rig.live.subscribe(listener)
    else:
        raw = RawWatch(rig.watcher_client, layout.prefix, current_revision(rig.writer) + 1)
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
    write_all(rig.writer, keys, vals, ops, batch, send)
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
        "lat_ms": lat,
    }


def run(rig: Rig, batch: int) -> dict[str, Any]:
    """Ours vs the raw watch loop with ``batch`` events per revision (1: P2, 20: P2b)."""
    ops = OPS[batch][0 if rig.smoke else 1]
    for kind in ("ours", "raw"):  # warm-up
        measure(kind, rig, max(50, ops // 10), batch)

    def progress(rep: int, s: dict[str, list[dict[str, Any]]]) -> None:
        o, r = s["ours"][-1], s["raw"][-1]
        log(f"  P2 batch={batch} rep {rep + 1}: ours {o['events_per_s']:.0f}/s "
            f"p50 {o['p50_ms']:.2f} p99 {o['p99_ms']:.2f} ms | raw {r['events_per_s']:.0f}/s "
            f"p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms")  # fmt: skip

    def variant(kind: str) -> Callable[[int], dict[str, Any]]:
        return lambda _rep: measure(kind, rig, ops, batch)

    reps = alternated(rig.reps, {kind: variant(kind) for kind in ("ours", "raw")},
                      after_rep=progress)  # fmt: skip
    col = {k: {m: [row[m] for row in v] for m in ("events_per_s", "p50_ms", "p99_ms")}
           for k, v in reps.items()}  # fmt: skip
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
            k: quantiles([x for row in v for x in row["lat_ms"]]) for k, v in reps.items()
        },
    }


def rows(pid: str, result: dict[str, Any]) -> list[Row]:
    """The table's lines: the event rate and the p99 latency."""
    label = f"{result['events_per_revision']} ev/rev"
    return [
        goal_row(pid, f"live watch events/s / raw watch loop ({label})", result["rate_ratio"],
                 ">=", RATE_GOAL),
        goal_row(pid, f"write->visible p99 / raw watch loop ({label})", result["p99_ratio"],
                 "<=", P99_GOAL),
    ]  # fmt: skip


def absolute(pid: str, result: dict[str, Any]) -> str:
    """Both sides' events/s and latencies."""
    o, r = result["ours"], result["raw"]
    return (f"{pid:<3} ours {o['events_per_s']['median']:.0f} ev/s p50 "
            f"{o['p50_ms']['median']:.2f} p99 {o['p99_ms']['median']:.2f} ms | raw "
            f"{r['events_per_s']['median']:.0f} ev/s p50 {r['p50_ms']['median']:.2f}"
            f" p99 {r['p99_ms']['median']:.2f} ms")  # fmt: skip
