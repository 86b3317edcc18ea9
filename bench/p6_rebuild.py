"""P6, rebuild after compaction under reads: a reader thread calls ``get_group`` without pause
while the replica rebuilds; failed reads, and the rebuild's time against a cold start.

Each rep: the gate is cut, 100 puts are written, etcd is physically compacted at the last
revision, the gate is released, so the reopened stream is told its revision is compacted and
the replica rebuilds (a new snapshot loaded to the side, diffed, swapped in). Timed from the
release until the rebuilt snapshot is published. A failure is an exception or ``None`` for an
existing group. Alternated with a cold start (P1's "ours") of the same prefix.

Goals: no failed read; rebuild time <= 1.2x a cold start. The median rep's reads per 100 ms go
to latest.json for the timeline plot; the process's RSS peak against its RSS before is
informative.
"""

from __future__ import annotations

import gc
import random
import threading
import time
from typing import Any

from bench._common import compact_client, current_revision, group_name, log
from bench._replica import Rig, time_to_ready, trigger_rebuild
from bench._stats import Row, alternated, fmt_range, goal_row, ratio_summary, summary
from rmwatch.watcher.replica import Replica

GOAL = 1.2
NAMES = 10_000  # random names the reader cycles through
AFTER_SWAP = 0.5  # seconds the reader keeps going after the swap, so the timeline shows it


def proc_status() -> dict[str, int]:
    """VmRSS / VmHWM of this process in bytes, from /proc/self/status."""
    out: dict[str, int] = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value, _unit = line.split()
                out[name.rstrip(":")] = int(value) * 1024
    return out


def reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class Reader(threading.Thread):
    """Calls ``get_group`` over random existing names until stopped; counts reads, failures
    and reads per 100 ms since it started."""

    def __init__(self, replica: Replica, n: int, seed: int, errors: list[str]) -> None:
        super().__init__(daemon=True)
        rnd = random.Random(seed)
        self.names = [group_name(rnd.randrange(n)) for _ in range(NAMES)]
        self.replica = replica
        self.errors = errors  # the first 5 failures over all reps
        self.stopping = threading.Event()
        self.reads = 0
        self.failed = 0
        self.bins: list[int] = []
        self.started_at = 0.0

    def run(self) -> None:
        """The read loop (the thread's body); the counts are stored when it stops."""
        i = reads = failed = 0
        get = self.replica.get_group
        clock = time.perf_counter
        names, bins, errors, stopping = self.names, self.bins, self.errors, self.stopping
        began = self.started_at = clock()
        while not stopping.is_set():
            name = names[i % NAMES]
            i += 1
            try:
                if get(name).value is None:
                    failed += 1
                    if len(errors) < 5:
                        errors.append(f"{name}: None")
            except Exception as exc:
                failed += 1
                if len(errors) < 5:
                    errors.append(f"{name}: {exc!r}")
            reads += 1
            slot = int((clock() - began) * 10)
            while len(bins) <= slot:
                bins.append(0)
            bins[slot] += 1
        self.reads, self.failed = reads, failed


def rebuild_rep(rig: Rig, rep: int, errors: list[str]) -> dict[str, Any]:
    """One rebuild with the reader running: seconds, reads, failures, RSS, timeline."""
    replica = rig.live
    reader = Reader(replica, len(rig.values), rep, errors)
    gc.collect()
    before = proc_status()
    reset_hwm()
    reader.start()
    marks: dict[str, float] = {}
    dt, _last = trigger_rebuild(replica, rig.gate, rig.writer, rig.values, rep, rig.endpoint,
                                marks, collect=False)  # fmt: skip
    time.sleep(AFTER_SWAP)
    reader.stopping.set()
    reader.join()
    after = proc_status()
    causes = [t.cause for t in replica.transitions() if "rebuilt" in t.cause]
    return {
        "seconds": dt,
        "reads": reader.reads,
        "failed": reader.failed,
        "rss_steady": before["VmRSS"],
        "rss_peak": after["VmHWM"],
        "cause": causes[-1] if causes else "?",
        "timeline": {
            "reads_per_100ms": reader.bins[:-1],  # the last bin is partial
            "release_s": round(marks["release"] - reader.started_at, 3),
            "done_s": round(marks["done"] - reader.started_at, 3),
        },
    }


def run(rig: Rig) -> dict[str, Any]:
    """Rebuilds under reads alternated with cold starts."""
    # Drop the earlier figures' history first (untimed, replica live), so the timed
    # compactions below are small.
    compact_client(rig.endpoint).compact(current_revision(rig.writer), physical=True)
    errors: list[str] = []
    n = len(rig.values)

    def progress(rep: int, s: dict[str, list[Any]]) -> None:
        r = s["rebuild"][-1]
        log(f"  P6 rep {rep + 1}: rebuild {r['seconds']:.3f}s (reads {r['reads']}, failed "
            f"{r['failed']}) | cold start {s['cold'][-1]:.3f}s | RSS "
            f"{r['rss_steady'] / 2**20:.0f} -> peak {r['rss_peak'] / 2**20:.0f} MiB")  # fmt: skip

    samples = alternated(rig.reps, {"rebuild": lambda rep: rebuild_rep(rig, rep, errors),
                                    "cold": lambda _rep: time_to_ready(rig.endpoint, n)},
                         after_rep=progress)  # fmt: skip
    reps: list[dict[str, Any]] = samples["rebuild"]
    rebuild = [r["seconds"] for r in reps]
    cold: list[float] = samples["cold"]
    timelines = [r["timeline"] for r in reps]
    return {
        "rebuild_with_reader_s": summary(rebuild),
        "cold_start_s": summary(cold),
        "rebuild_vs_cold_start": ratio_summary(rebuild, cold),
        "reads_during_rebuild": [r["reads"] for r in reps],
        "failed_reads": [r["failed"] for r in reps],
        "failed_read_examples": errors,
        "process_rss_before_mib": [round(r["rss_steady"] / 2**20, 1) for r in reps],
        "process_rss_peak_mib": [round(r["rss_peak"] / 2**20, 1) for r in reps],
        "process_peak_over_rss": ratio_summary(
            [float(r["rss_peak"]) for r in reps], [float(r["rss_steady"]) for r in reps]
        ),
        "last_rebuild_transition": reps[-1]["cause"] if reps else None,
        # the rep whose rebuild time is the median: reads per 100 ms around it
        "timeline": sorted(timelines, key=lambda t: t["done_s"] - t["release_s"])[
            len(timelines) // 2
        ],
    }


def rows(pid: str, result: dict[str, Any]) -> list[Row]:
    """The table's lines: failed reads (must be 0), and rebuild time against a cold start."""
    failed = result["failed_reads"]
    return [
        {"id": pid, "figure": f"failed reads during rebuild (of "
         f"{sum(result['reads_during_rebuild'])})", "median": sum(failed), "min": min(failed),
         "max": max(failed), "goal": "= 0", "met": sum(failed) == 0, "digits": 0},
        goal_row(pid, "rebuild time (reader hammering) / cold start",
                 result["rebuild_vs_cold_start"], "<=", GOAL),
    ]  # fmt: skip


def absolute(pid: str, result: dict[str, Any]) -> str:
    """Rebuild and cold-start seconds."""
    return (f"{pid:<3} rebuild {fmt_range(result['rebuild_with_reader_s'], 's')}  cold start "
            f"{fmt_range(result['cold_start_s'], 's')}")  # fmt: skip
