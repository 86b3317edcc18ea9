"""P4, in-process reads: ``replica.get_group`` against a plain ``dict.get`` of the same models,
and (informative) against a serializable etcd get.

Every loop reads random existing names spread over all groups (the case a user meets, not one
hot key): 200k calls for the in-memory variants, 2000 for etcd (each ~0.5 ms). The baseline is
as fast as a dict gets: keyed by the very string objects the loops look up (hashes cached,
identity hits), so ours pays for everything it does beyond one lookup. Variants are rotated
across the reps; ``snapshot().get_group`` and a held snapshot's ``get_group`` are informative
lines in latest.json.

Goal: <= 2.5x ``dict.get``'s time per call.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable
from typing import Any

from bench._common import OURS_ROOT, group_name, log
from bench._replica import Rig
from bench._stats import Row, alternated, goal_row, ratio_summary, summary
from rmwatch.store.keys import KeyLayout

DICT_GOAL = 2.5
CALLS = ((20_000, 200), (200_000, 2000))  # (in-memory calls, etcd calls): smoke, full


def run(rig: Rig) -> dict[str, Any]:
    """Reads per second of every variant; the goal ratios."""
    replica, client, n = rig.live, rig.writer, len(rig.values)
    calls, etcd_calls = CALLS[0 if rig.smoke else 1]
    rnd = random.Random(4)
    every = [group_name(i) for i in range(n)]
    names = [every[rnd.randrange(n)] for _ in range(calls)]
    layout = KeyLayout(OURS_ROOT)
    snap0 = replica.snapshot()
    models = {name: snap0.get_group(name) for name in every}
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

    loops: dict[str, Callable[[], float]] = {
        "ours_get_group": loop_ours,
        "ours_snapshot().get_group": loop_snapshot_call,
        "ours_held_snapshot.get_group": loop_held_snapshot,
        "dict_get": loop_dict,
        "etcd_serializable_get": loop_etcd,
    }
    for loop in loops.values():  # warm-up
        loop()

    def collected(loop: Callable[[], float]) -> Callable[[int], float]:
        def rep(_rep: int) -> float:
            gc.collect()  # no variant pays for another's garbage
            return loop()

        return rep

    def progress(rep: int, s: dict[str, list[float]]) -> None:
        log(f"  P4 rep {rep + 1} " + " ".join(f"{k}={v[-1]:.0f}/s" for k, v in s.items()))

    samples = alternated(rig.reps, {k: collected(v) for k, v in loops.items()},
                         after_rep=progress)  # fmt: skip
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


def rows(pid: str, result: dict[str, Any]) -> list[Row]:
    """The table's lines: against a dict (the goal), and against etcd (informative)."""
    etcd = result["ours_vs_etcd_speedup"]
    return [
        goal_row(pid, "get_group time / dict.get time (same names)",
                 result["ours_vs_dict_slowdown"], "<=", DICT_GOAL),
        {"id": pid, "figure": "get_group/s / serializable etcd get/s (informative)",
         "median": etcd["median"], "min": etcd["min"], "max": etcd["max"], "goal": "-",
         "met": None, "digits": 0},
    ]  # fmt: skip


def absolute(pid: str, result: dict[str, Any]) -> str:
    """Reads per second of every variant."""
    return f"{pid:<3} " + "  ".join(f"{k} {v['median']:.0f}/s"
                                   for k, v in result["reads_per_s"].items())  # fmt: skip
