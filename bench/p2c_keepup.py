"""P2c, keeping up: the highest write rate the replica follows without falling behind, against
the raw watch loop's (both consumers: ``bench._watch``).

Each side gets paced 20-put transactions at rising event rates (``STEPS``), a 2 s window per
step; a step is kept up with when every write is seen within ``KEPT_UP_MS`` at p99 (a consumer
that falls behind sees its latency grow through the window to seconds). A side stops at its
first missed step; its figure is the last step it kept up with. The writers' own ceiling on
this machine caps both sides alike (the rate the writers reached is kept in latest.json).

Goal: ours >= 0.95x raw.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

from bench._common import log
from bench._replica import Rig
from bench._stats import Row, alternated, goal_row, pct, ratio_summary, summary
from bench._watch import Consumer, keys_and_values, write_paced

GOAL = 0.95
BATCH = 20  # puts per transaction: event rates well past one writer's round trips
STEPS = (1000, 2000, 4000, 8000, 16000, 32000)  # events/s
STEP_SECONDS = (0.3, 2.0)  # smoke, full
KEPT_UP_MS = 100.0


def step(kind: str, rig: Rig, rate: int, seconds: float) -> dict[str, float]:
    """One paced step: p99 latency (ms) and the event rate the writers reached."""
    keys, vals = keys_and_values(rig, kind)
    send: dict[int, float] = {}
    txn_rate = rate / BATCH
    total = max(1, round(txn_rate * seconds))
    gc.collect()
    consumer = Consumer(kind, rig, total * BATCH)
    write_paced(rig.writer, keys, vals, txn_rate, seconds, BATCH, send)
    if not consumer.done.wait(120):
        raise RuntimeError(f"P2c {kind}: saw {consumer.count} of {total * BATCH} events")
    consumer.close()
    lat = [(consumer.seen[rev] - t) * 1000 for rev, t in send.items()]
    span = max(send.values()) - min(send.values()) or 1e-9
    return {"p99_ms": pct(lat, 0.99), "reached": total * BATCH / span}


def highest(kind: str, rig: Rig) -> dict[str, Any]:
    """The steps of one side, up to its first miss: the highest kept-up rate."""
    seconds = STEP_SECONDS[0 if rig.smoke else 1]
    steps = STEPS[:2] if rig.smoke else STEPS
    kept, tried = 0.0, []
    for rate in steps:
        result = step(kind, rig, rate, seconds)
        tried.append({"rate": rate, **{k: round(v, 2) for k, v in result.items()}})
        if result["p99_ms"] > KEPT_UP_MS:
            break
        kept = min(float(rate), result["reached"])
    return {"kept_up_events_per_s": kept, "steps": tried}


def run(rig: Rig) -> dict[str, Any]:
    """Both sides' highest kept-up rate, alternated."""

    def progress(rep: int, s: dict[str, list[dict[str, Any]]]) -> None:
        o, r = s["ours"][-1], s["raw"][-1]
        log(f"  P2c rep {rep + 1}: ours kept up to {o['kept_up_events_per_s']:.0f} ev/s "
            f"{[(x['rate'], x['p99_ms']) for x in o['steps']]} | raw "
            f"{r['kept_up_events_per_s']:.0f} ev/s "
            f"{[(x['rate'], x['p99_ms']) for x in r['steps']]}")  # fmt: skip

    def variant(kind: str) -> Callable[[int], dict[str, Any]]:
        return lambda _rep: highest(kind, rig)

    reps = alternated(rig.reps, {k: variant(k) for k in ("ours", "raw")}, after_rep=progress)
    ours = [max(1.0, r["kept_up_events_per_s"]) for r in reps["ours"]]
    raw = [max(1.0, r["kept_up_events_per_s"]) for r in reps["raw"]]
    return {
        "kept_up_ms": KEPT_UP_MS,
        "events_per_revision": BATCH,
        "ours_events_per_s": summary(ours, 0),
        "raw_events_per_s": summary(raw, 0),
        "rate_ratio": ratio_summary(ours, raw),
        "steps": {k: [r["steps"] for r in v] for k, v in reps.items()},
    }


def rows(pid: str, result: dict[str, Any]) -> list[Row]:
    """The table's P2c line; informative only when the raw loop itself kept up with no step
    in most reps (the machine, not the replica, was the limit: there is no ratio to judge)."""
    row = goal_row(pid, f"highest event rate kept up with (p99 <= {result['kept_up_ms']:g} "
                   "ms) / raw", result["rate_ratio"], ">=", GOAL)  # fmt: skip
    if result["raw_events_per_s"]["median"] < STEPS[0]:
        row["figure"] += " (not measured: the raw loop kept up with no step)"
        row["met"] = None
    return [row]


def absolute(pid: str, result: dict[str, Any]) -> str:
    """Both sides' highest kept-up rate."""
    return (f"{pid:<3} ours kept up to {result['ours_events_per_s']['median']:.0f} ev/s | raw "
            f"{result['raw_events_per_s']['median']:.0f} ev/s")  # fmt: skip
