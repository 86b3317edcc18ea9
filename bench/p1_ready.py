"""P1, time to ready: a replica's cold start against a raw paginated range of the same prefix.

- ours: ``Replica(...).start()`` until ``wait_ready`` returns (snapshot loaded at one revision
  with every value decoded and checked, the watch open and caught up to the revision observed
  after the load; checked afterwards: no value left undecoded);
- raw: a fresh client and a paginated ``get_range_response`` (limit 5000, pinned at page one's
  revision, as the loader reads), values kept in a dict.

Measured at every size of the sweep (``ready_sweep`` in latest.json, the time-to-ready plot);
the point at ``--p-groups`` (100k) is the figure, and the 10k point a second line. Goals:
ours <= 2x raw at 100k, <= 2.5x at 10k (a fixed part -- connecting, the store mark, opening the
watch -- weighs more on a small prefix).
"""

from __future__ import annotations

import gc
import time
from typing import Any

from bench._common import OURS_ROOT, connect_to, log
from bench._replica import raw_pages, time_to_ready
from bench._stats import Row, alternated, fmt_range, goal_row, ratio_summary, summary
from rmwatch.store.keys import KeyLayout

GOAL = 2.0
GOAL_SMALL = 2.5
SMALL = 10_000  # the second line's size


def raw_range_seconds(endpoint: str, expect: int) -> float:
    """Seconds to connect and range the replica's prefix page by page (count checked)."""
    gc.collect()
    t0 = time.perf_counter()
    client = connect_to(endpoint)
    _revision, held = raw_pages(client, KeyLayout(OURS_ROOT).prefix)
    dt = time.perf_counter() - t0
    count = len(held)
    client.close()
    gc.collect()
    assert count == expect, (count, expect)
    return dt


def run(endpoint: str, n: int, reps: int) -> dict[str, Any]:
    """Ours vs the raw range at ``n`` groups, alternated over ``reps`` reps."""
    raw_range_seconds(endpoint, n)  # warm-up (server page cache, imports)

    def progress(rep: int, s: dict[str, list[float]]) -> None:
        log(f"  P1 n={n} rep {rep + 1}: ours {s['ours'][-1]:.3f}s raw {s['raw'][-1]:.3f}s")

    samples = alternated(reps, {"ours": lambda _rep: time_to_ready(endpoint, n),
                                "raw": lambda _rep: raw_range_seconds(endpoint, n)},
                         after_rep=progress)  # fmt: skip
    ours, raw = samples["ours"], samples["raw"]
    return {
        "groups": n,
        "ours_s": summary(ours),
        "raw_range_s": summary(raw),
        "ratio_vs_raw_range": ratio_summary(ours, raw),
    }


def rows(pid: str, result: dict[str, Any]) -> list[Row]:
    """The table's P1 lines: at the pairs' size, and at 10k when the sweep measured it."""
    out = [goal_row(pid, f"ready, all decoded, {result['groups']} groups / raw paginated range",
                    result["ratio_vs_raw_range"], "<=", GOAL)]  # fmt: skip
    small = result.get("small")
    if small is not None:
        out.append(goal_row(pid, f"ready, all decoded, {small['groups']} groups / raw paginated "
                            "range", small["ratio_vs_raw_range"], "<=", GOAL_SMALL))  # fmt: skip
    return out


def absolute(pid: str, result: dict[str, Any]) -> str:
    """Both sides' seconds."""
    line = (f"{pid:<3} ours {fmt_range(result['ours_s'], 's')}  raw range "
            f"{fmt_range(result['raw_range_s'], 's')}")  # fmt: skip
    small = result.get("small")
    if small is not None:
        line += (f" | {small['groups']}: ours {fmt_range(small['ours_s'], 's')}  raw range "
                 f"{fmt_range(small['raw_range_s'], 's')}")  # fmt: skip
    return line
