"""P7, memory: the Python bytes a ready replica holds (tracemalloc, its client included) against
the raw data, and its peak during a compaction-triggered rebuild.

- ours: tracemalloc's current bytes after ``wait_ready`` and a full collection, then its peak
  while the replica rebuilds (P6's trigger: gate cut, 100 puts, compaction, release);
- raw: the same paginated range held as a dict of key bytes -> value bytes, and the plain sum
  of key and value lengths (the yardstick of the goal).

Values decode on first read; nothing reads them here, so this is the memory of a replica
whose values are still undecoded (the validator checks each one without keeping the model).
Also measured at every sweep size (``memory_sweep``, the memory plot), with 3 reps off the
pairs' size: memory barely varies between reps.

Goals: replica <= 3x the key+value bytes; rebuild peak <= 2x steady.
"""

from __future__ import annotations

import gc
import statistics
import tracemalloc
from typing import Any

from bench._common import OURS_ROOT, Population, connect_to, log
from bench._replica import Gate, raw_pages, trigger_rebuild
from bench._stats import Row, alternated, goal_row, ratio_summary, summary
from rmwatch.store.keys import KeyLayout
from rmwatch.watcher.replica import Replica

RATIO_GOAL = 3
PEAK_GOAL = 2
MIB = 2**20


def ours_bytes(endpoint: str, writer: Any, values: list[bytes], rep: int) -> dict[str, float]:
    """tracemalloc: bytes held by a ready replica, and the peak during a rebuild."""
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


def steady_bytes(endpoint: str, expect: int) -> float:
    """tracemalloc: bytes held by a ready replica of ``expect`` groups (no rebuild)."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    replica = Replica(endpoints=[endpoint], root_prefix=OURS_ROOT).start()
    replica.wait_ready(600)
    gc.collect()
    size = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    keys = len(replica.snapshot().entries)
    replica.close()
    del replica
    gc.collect()
    assert keys == expect, (keys, expect)
    return float(size)


def raw_bytes(endpoint: str) -> float:
    """tracemalloc: bytes of the raw pages held as (key bytes -> value bytes)."""
    client = connect_to(endpoint)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    _revision, held = raw_pages(client, KeyLayout(OURS_ROOT).prefix)
    gc.collect()
    size = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del held
    client.close()
    return float(size)


def run(endpoint: str, values: list[bytes], key_value_bytes: int, reps: int) -> dict[str, Any]:
    """Ours (steady and rebuild peak) vs the raw pages, alternated."""
    writer = connect_to(endpoint)

    def progress(rep: int, s: dict[str, list[Any]]) -> None:
        o = s["ours"][-1]
        log(f"  P7 rep {rep + 1}: replica {o['steady'] / MIB:.1f} MiB, rebuild peak "
            f"{o['rebuild_peak'] / MIB:.1f} MiB | raw dict {s['raw'][-1] / MIB:.1f} MiB | "
            f"key+value bytes {key_value_bytes / MIB:.1f} MiB")  # fmt: skip

    try:
        samples = alternated(reps, {"ours": lambda rep: ours_bytes(endpoint, writer, values, rep),
                                    "raw": lambda _rep: raw_bytes(endpoint)},
                             after_rep=progress)  # fmt: skip
    finally:
        writer.close()
    steady = [o["steady"] for o in samples["ours"]]
    peak = [o["rebuild_peak"] for o in samples["ours"]]
    raw: list[float] = samples["raw"]
    return {
        "replica_traced_mib": summary([s / MIB for s in steady], 1),
        "replica_rebuild_peak_mib": summary([p / MIB for p in peak], 1),
        "raw_pages_dict_traced_mib": summary([r / MIB for r in raw], 1),
        "raw_key_plus_value_mib": round(key_value_bytes / MIB, 1),
        "ratio_vs_key_plus_value": summary([s / key_value_bytes for s in steady], 2),
        "ratio_vs_raw_dict": ratio_summary(steady, raw, digits=2),
        "rebuild_peak_over_steady": ratio_summary(peak, steady, digits=2),
        "bytes_per_group": round(statistics.median(steady) / len(values)),
    }


def sweep_point(endpoint: str, pop: Population, n: int, reps: int) -> dict[str, Any]:
    """A point of the memory sweep: replica bytes vs the raw pages' bytes at ``n`` groups."""
    samples = alternated(reps, {"ours": lambda _rep: steady_bytes(endpoint, n),
                                "raw": lambda _rep: raw_bytes(endpoint)})  # fmt: skip
    ours, raw = samples["ours"], samples["raw"]
    kv = pop.key_value_bytes(n)
    log(f"  memory n={n}: replica {statistics.median(ours) / MIB:.1f} MiB, raw pages "
        f"{statistics.median(raw) / MIB:.1f} MiB, key+value {kv / MIB:.1f} MiB")  # fmt: skip
    return {
        "groups": n,
        "replica_traced_mib": summary([o / MIB for o in ours], 1),
        "raw_pages_dict_traced_mib": summary([r / MIB for r in raw], 1),
        "raw_key_plus_value_mib": round(kv / MIB, 1),
        "ratio_vs_key_plus_value": summary([o / kv for o in ours], 2),
    }


def sweep_point_from_run(result: dict[str, Any], n: int) -> dict[str, Any]:
    """The memory-sweep point at P7's own size, from P7 itself (same measurement, same reps)."""
    return {
        "groups": n,
        "replica_traced_mib": result["replica_traced_mib"],
        "raw_pages_dict_traced_mib": result["raw_pages_dict_traced_mib"],
        "raw_key_plus_value_mib": result["raw_key_plus_value_mib"],
        "ratio_vs_key_plus_value": result["ratio_vs_key_plus_value"],
        "replica_rebuild_peak_mib": result["replica_rebuild_peak_mib"],
    }


def rows(pid: str, result: dict[str, Any]) -> list[Row]:
    """The table's lines: steady memory, and the rebuild's peak."""
    return [
        goal_row(pid, "replica memory / raw key+value bytes", result["ratio_vs_key_plus_value"],
                 "<=", RATIO_GOAL, 2),
        goal_row(pid, "rebuild peak / steady memory", result["rebuild_peak_over_steady"], "<=",
                 PEAK_GOAL, 2),
    ]  # fmt: skip


def absolute(pid: str, result: dict[str, Any]) -> str:
    """Replica, rebuild peak, raw dict and key+value sizes."""
    return (f"{pid:<3} replica {result['replica_traced_mib']['median']} MiB "
            f"({result['bytes_per_group']} B/group), rebuild peak "
            f"{result['replica_rebuild_peak_mib']['median']} MiB, raw dict "
            f"{result['raw_pages_dict_traced_mib']['median']} MiB, key+value "
            f"{result['raw_key_plus_value_mib']} MiB")  # fmt: skip
