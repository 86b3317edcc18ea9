"""P2 and P2b, the live watch: events/s and write-to-visible latency of the replica against a
bare etcd watch loop (both consumers: ``bench._watch``).

- events/s: a writer issues single puts (P2, 1 event per revision) or 20-put transactions
  (P2b) back to back over the first 2000 groups; rate = events / (last seen - first issue);
- tail latency (P2 only): writers paced at 500 and 2000 writes/s for a 5 s window each, from
  the first write (no warm-up inside the window): p99 of write -> first seen, over every write
  of the window. The gen-2 GC pauses of this process (which hosts the replica) during our
  windows are recorded (``gc.callbacks``): their longest is the tail a frozen snapshot removes.

Goals: events/s >= 0.95x raw; windowed p99 <= 1.5x raw (the replica must never be the
bottleneck of the watch stream). Every rep's full-speed latencies, pooled, are kept as a
200-point CDF for the plot.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

from bench._common import log
from bench._replica import Rig
from bench._stats import Row, alternated, goal_row, pct, quantiles, ratio_summary, summary
from bench._watch import Consumer, GcPauses, keys_and_values, write_all, write_paced

RATE_GOAL = 0.95
P99_GOAL = 1.5
# Writes per rep at full speed (smoke, full): single puts, and 20-put transactions.
OPS = {1: (50, 2000), 20: (20, 400)}
WINDOW_RATES = (500, 2000)  # paced writes/s of the latency windows
WINDOW_SECONDS = (0.5, 5.0)  # smoke, full


def measure(kind: str, rig: Rig, ops: int, batch: int) -> dict[str, Any]:
    """One full-speed rep of ``kind`` (``"ours"`` or ``"raw"``): rate, p50, p99, latencies."""
    keys, vals = keys_and_values(rig, kind)
    send: dict[int, float] = {}
    gc.collect()
    consumer = Consumer(kind, rig, ops * batch)
    write_all(rig.writer, keys, vals, ops, batch, send)
    if not consumer.done.wait(120):
        raise RuntimeError(f"P2 {kind}: saw {consumer.count} of {ops * batch} events")
    consumer.close()
    seen = consumer.seen
    lat = [(seen[rev] - t) * 1000 for rev, t in send.items()]
    return {
        "events_per_s": ops * batch / (max(seen.values()) - min(send.values())),
        "p50_ms": pct(lat, 0.50),
        "p99_ms": pct(lat, 0.99),
        "lat_ms": lat,
    }


def window(kind: str, rig: Rig, rate: int, seconds: float) -> dict[str, Any]:
    """One paced window of ``kind``: p50, p99 and max latency, the rate reached, GC pauses."""
    keys, vals = keys_and_values(rig, kind)
    send: dict[int, float] = {}
    total = max(1, round(rate * seconds))
    gc.collect()
    consumer = Consumer(kind, rig, total)
    with GcPauses() as pauses:
        write_paced(rig.writer, keys, vals, rate, seconds, 1, send)
        if not consumer.done.wait(120):
            raise RuntimeError(f"P2 window {kind}: saw {consumer.count} of {total} events")
    consumer.close()
    seen = consumer.seen
    lat = [(seen[rev] - t) * 1000 for rev, t in send.items()]
    return {
        "p50_ms": pct(lat, 0.50),
        "p99_ms": pct(lat, 0.99),
        "max_ms": max(lat),
        "writes_per_s": total / (max(send.values()) - min(send.values()) or 1e-9),
        "gen2_pauses": pauses.collections,
        "gen2_max_ms": max(pauses.gen2_ms, default=0.0),
    }


def windows(rig: Rig) -> dict[str, Any]:
    """The paced windows at every rate, ours and raw alternated."""
    seconds = WINDOW_SECONDS[0 if rig.smoke else 1]
    out: dict[str, Any] = {}
    for rate in WINDOW_RATES:

        def variant(kind: str, rate: int = rate) -> Callable[[int], dict[str, Any]]:
            return lambda _rep: window(kind, rig, rate, seconds)

        def progress(rep: int, s: dict[str, list[dict[str, Any]]], rate: int = rate) -> None:
            o, r = s["ours"][-1], s["raw"][-1]
            log(f"  P2 window {rate}/s rep {rep + 1}: ours p99 {o['p99_ms']:.2f} max "
                f"{o['max_ms']:.1f} ms ({o['writes_per_s']:.0f} w/s, gen-2 "
                f"{o['gen2_pauses']}x max {o['gen2_max_ms']:.1f} ms) | raw p99 "
                f"{r['p99_ms']:.2f} max {r['max_ms']:.1f} ms")  # fmt: skip

        reps = alternated(rig.reps, {k: variant(k) for k in ("ours", "raw")},
                          after_rep=progress)  # fmt: skip
        metrics = ("p50_ms", "p99_ms", "max_ms", "writes_per_s", "gen2_pauses", "gen2_max_ms")
        col = {k: {m: [row[m] for row in v] for m in metrics} for k, v in reps.items()}
        out[str(rate)] = {
            "seconds": seconds,
            "ours": {m: summary(v, 2) for m, v in col["ours"].items()},
            "raw": {m: summary(v, 2) for m, v in col["raw"].items()},
            "p99_ratio": ratio_summary(col["ours"]["p99_ms"], col["raw"]["p99_ms"]),
        }
    return out


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
    result = {
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
    if batch == 1:
        result["windows"] = windows(rig)
    return result


def rows(pid: str, result: dict[str, Any]) -> list[Row]:
    """The table's lines: the event rate, and the windowed p99 at each paced rate."""
    label = f"{result['events_per_revision']} ev/rev"
    out = [goal_row(pid, f"live watch events/s / raw watch loop ({label})",
                    result["rate_ratio"], ">=", RATE_GOAL)]  # fmt: skip
    for rate, w in result.get("windows", {}).items():
        out.append(goal_row(pid, f"write->visible p99, {w['seconds']:g} s window at {rate} "
                            "writes/s / raw", w["p99_ratio"], "<=", P99_GOAL))  # fmt: skip
    return out


def absolute(pid: str, result: dict[str, Any]) -> str:
    """Both sides' events/s and latencies, and the windows' p99 and GC pauses."""
    o, r = result["ours"], result["raw"]
    line = (f"{pid:<3} ours {o['events_per_s']['median']:.0f} ev/s p50 "
            f"{o['p50_ms']['median']:.2f} p99 {o['p99_ms']['median']:.2f} ms | raw "
            f"{r['events_per_s']['median']:.0f} ev/s p50 {r['p50_ms']['median']:.2f}"
            f" p99 {r['p99_ms']['median']:.2f} ms")  # fmt: skip
    for rate, w in result.get("windows", {}).items():
        wo, wr = w["ours"], w["raw"]
        line += (
            f" | {rate}/s: ours p99 {wo['p99_ms']['median']:.2f} ms (gen-2 max "
            f"{wo['gen2_max_ms']['max']:.1f} ms) raw p99 {wr['p99_ms']['median']:.2f} ms"
        )
    return line
