"""P7, memory: what a ready replica holds against the raw data, after every group was read
once against the floor for a decoded cache, and its peak during a compaction-triggered rebuild.

- before reads: tracemalloc's current bytes after ``wait_ready`` and a full collection (its
  client included), against the plain sum of key and value lengths (and, informative, the raw
  pages held as a dict of key bytes -> value bytes);
- after reads: each side in a process of its own (``python -m bench.p7_memory child ...``),
  its RSS growth from before it connects: ours = a replica started, ready, every group read
  once with ``get_group``; the floor = a paginated range turned into a plain dict of group name
  -> parsed protobuf ``ResourceGroup`` (upb keeps messages outside Python's allocator, so RSS,
  not tracemalloc, sees both alike);
- rebuild peak: tracemalloc's peak while the replica rebuilds (P6's trigger: gate cut, 100
  puts, compaction, release), against its steady bytes.

Also measured at every sweep size (``memory_sweep``, the memory plot), with 3 reps off the
pairs' size: memory barely varies between reps.

Goals: before reads <= 3x the key+value bytes; after reads <= 1.5x the protobuf dict; rebuild
peak <= 1.5x steady.
"""

from __future__ import annotations

import gc
import json
import statistics
import subprocess
import sys
import tracemalloc
from typing import Any

from bench._common import OURS_ROOT, ROOT, Population, connect_to, group_name, log
from bench._replica import Gate, raw_pages, trigger_rebuild
from bench._stats import Row, alternated, goal_row, ratio_summary, summary
from rmwatch.store.keys import KeyLayout
from rmwatch.watcher.replica import Replica

RATIO_GOAL = 3
READ_GOAL = 1.5
PEAK_GOAL = 1.5
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


def rss() -> int:
    """This process's resident set in bytes (/proc/self/status VmRSS)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def child(kind: str, endpoint: str, n: int) -> int:
    """In a process of its own: RSS growth (bytes) of ``kind`` holding ``n`` decoded groups --
    ``ours`` (a replica, every group read once) or ``pb`` (name -> parsed protobuf)."""
    from rmwatch.store._pb import resource_manager_pb2 as pb  # noqa: PLC0415 (child only)

    gc.collect()
    before = rss()
    if kind == "ours":
        replica = Replica(endpoints=[endpoint], root_prefix=OURS_ROOT).start()
        replica.wait_ready(600)
        get = replica.get_group
        missing = sum(1 for i in range(n) if get(group_name(i)).value is None)
        assert missing == 0, missing
        gc.collect()
        grown = rss() - before
        replica.close()
        return grown
    client = connect_to(endpoint)
    _revision, held = raw_pages(client, KeyLayout(OURS_ROOT).prefix)
    groups: dict[str, Any] = {}
    for value in held.values():
        msg = pb.ResourceGroup()
        msg.ParseFromString(value)
        groups[msg.name] = msg
    del held
    assert len(groups) == n, (len(groups), n)
    gc.collect()
    grown = rss() - before
    client.close()
    return grown


def child_bytes(kind: str, endpoint: str, n: int) -> float:
    """Run ``child`` in a fresh interpreter; its RSS growth in bytes."""
    run = subprocess.run(
        [sys.executable, "-m", "bench.p7_memory", "child", kind, endpoint, str(n)],
        cwd=ROOT, capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    if run.returncode != 0:
        raise RuntimeError(f"P7 child {kind} failed: {run.stderr[-2000:]}")
    return float(json.loads(run.stdout.strip().splitlines()[-1])["bytes"])


def run(endpoint: str, values: list[bytes], key_value_bytes: int, reps: int) -> dict[str, Any]:
    """Ours (steady and rebuild peak) vs the raw pages, alternated."""
    writer = connect_to(endpoint)

    def progress(rep: int, s: dict[str, list[Any]]) -> None:
        o = s["ours"][-1]
        log(f"  P7 rep {rep + 1}: replica {o['steady'] / MIB:.1f} MiB, rebuild peak "
            f"{o['rebuild_peak'] / MIB:.1f} MiB | raw dict {s['raw'][-1] / MIB:.1f} MiB | "
            f"key+value bytes {key_value_bytes / MIB:.1f} MiB")  # fmt: skip

    n = len(values)

    def read_progress(rep: int, s: dict[str, list[float]]) -> None:
        log(f"  P7 rep {rep + 1}: after reading every group, replica RSS +"
            f"{s['ours'][-1] / MIB:.1f} MiB | name -> protobuf dict RSS "
            f"+{s['pb'][-1] / MIB:.1f} MiB")  # fmt: skip

    try:
        samples = alternated(reps, {"ours": lambda rep: ours_bytes(endpoint, writer, values, rep),
                                    "raw": lambda _rep: raw_bytes(endpoint)},
                             after_rep=progress)  # fmt: skip
        read = alternated(reps, {"ours": lambda _rep: child_bytes("ours", endpoint, n),
                                 "pb": lambda _rep: child_bytes("pb", endpoint, n)},
                          after_rep=read_progress)  # fmt: skip
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
        "after_reads_rss_mib": summary([b / MIB for b in read["ours"]], 1),
        "protobuf_dict_rss_mib": summary([b / MIB for b in read["pb"]], 1),
        "after_reads_vs_protobuf_dict": ratio_summary(read["ours"], read["pb"], digits=2),
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
        goal_row(pid, "after every group read once / name->protobuf dict (RSS, own process)",
                 result["after_reads_vs_protobuf_dict"], "<=", READ_GOAL, 2),
        goal_row(pid, "rebuild peak / steady memory", result["rebuild_peak_over_steady"], "<=",
                 PEAK_GOAL, 2),
    ]  # fmt: skip


def absolute(pid: str, result: dict[str, Any]) -> str:
    """Replica, rebuild peak, raw dict and key+value sizes."""
    return (f"{pid:<3} replica {result['replica_traced_mib']['median']} MiB "
            f"({result['bytes_per_group']} B/group), rebuild peak "
            f"{result['replica_rebuild_peak_mib']['median']} MiB, raw dict "
            f"{result['raw_pages_dict_traced_mib']['median']} MiB, key+value "
            f"{result['raw_key_plus_value_mib']} MiB | after reads RSS +"
            f"{result['after_reads_rss_mib']['median']} MiB, protobuf dict RSS +"
            f"{result['protobuf_dict_rss_mib']['median']} MiB")  # fmt: skip


if __name__ == "__main__":
    # python -m bench.p7_memory child <ours|pb> <endpoint> <groups>: one "after reads" side.
    if len(sys.argv) == 5 and sys.argv[1] == "child":
        print(json.dumps({"bytes": child(sys.argv[2], sys.argv[3], int(sys.argv[4]))}))
    else:
        raise SystemExit("usage: python -m bench.p7_memory child <ours|pb> <endpoint> <groups>")
