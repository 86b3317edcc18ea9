"""P1b, the first read: ``get_group`` of a group nobody read yet, against a warm read, on the
shared ready replica.

A value that decodes on first use makes the first pass over the groups slow (the user's case:
reads spread over every group right after start). Each rep takes 2000 names never read before
(a fresh slice of the groups), times every first read one by one, and alternates with timed
reads of 2000 names already read once (untimed) before. Figure: p99 of the first reads / p99 of
the warm reads, per rep.

Goal: <= 2x. Runs before every other pair on the rig, so its names are really unread.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from bench._common import group_name, log
from bench._replica import Rig
from bench._stats import Row, alternated, fmt_range, goal_row, pct, ratio_summary, summary

GOAL = 2.0
NAMES = (200, 2000)  # names per rep (smoke, full)


def timed_reads(rig: Rig, names: list[str]) -> list[float]:
    """Microseconds of each ``get_group`` call over ``names`` (each must find its group)."""
    get = rig.live.get_group
    clock = time.perf_counter
    out: list[float] = []
    for name in names:
        t0 = clock()
        found = get(name).value
        out.append((clock() - t0) * 1e6)
        assert found is not None, name
    return out


def run(rig: Rig) -> dict[str, Any]:
    """First reads vs warm reads, alternated; disjoint fresh names every rep."""
    size = NAMES[0 if rig.smoke else 1]
    n = len(rig.values)
    stride = max(1, n // (size * (rig.reps + 2)))  # spread the slices over every group
    slices = [[group_name((r * size + i) * stride % n) for i in range(size)]
              for r in range(rig.reps + 2)]  # fmt: skip
    warm = slices[-1]
    timed_reads(rig, warm)  # read once: these are the warm names from now on
    timed_reads(rig, warm)

    def first(rep: int) -> list[float]:
        gc.collect()
        return timed_reads(rig, slices[rep])

    def again(_rep: int) -> list[float]:
        gc.collect()
        return timed_reads(rig, warm)

    def progress(rep: int, s: dict[str, list[list[float]]]) -> None:
        log(f"  P1b rep {rep + 1}: first p99 {pct(s['first'][-1], 0.99):.2f} us | warm p99 "
            f"{pct(s['warm'][-1], 0.99):.2f} us")  # fmt: skip

    samples = alternated(rig.reps, {"first": first, "warm": again}, after_rep=progress)
    p99_first = [pct(s, 0.99) for s in samples["first"]]
    p99_warm = [pct(s, 0.99) for s in samples["warm"]]
    return {
        "names_per_rep": size,
        "first_p99_us": summary(p99_first, 2),
        "warm_p99_us": summary(p99_warm, 2),
        "first_p50_us": summary([pct(s, 0.5) for s in samples["first"]], 2),
        "warm_p50_us": summary([pct(s, 0.5) for s in samples["warm"]], 2),
        "p99_ratio": ratio_summary(p99_first, p99_warm),
    }


def rows(pid: str, result: dict[str, Any]) -> list[Row]:
    """The table's P1b line."""
    return [goal_row(pid, "first read of a never-read group, p99 / warm read p99",
                     result["p99_ratio"], "<=", GOAL)]  # fmt: skip


def absolute(pid: str, result: dict[str, Any]) -> str:
    """Both sides' p99 (and p50) in microseconds."""
    return (f"{pid:<3} first read p99 {fmt_range(result['first_p99_us'], ' us', 2)} (p50 "
            f"{result['first_p50_us']['median']:.2f}) | warm p99 "
            f"{fmt_range(result['warm_p99_us'], ' us', 2)} (p50 "
            f"{result['warm_p50_us']['median']:.2f})")  # fmt: skip
