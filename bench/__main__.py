"""The whole benchmark suite in one command: ``python -m bench`` (or ``./scripts/bench``).

It starts its own etcd (tests/harness ``EtcdMember``), runs every pair P1-P8 as a ratio of ours
to a raw baseline measured side by side in the same run (A/B/A/B alternation, median of
``--reps`` reps, min-max of the per-rep ratios), and writes ``bench/results/latest.json``
plus PNG plots (``bench/plots.py``, needs matplotlib: ``pip install -e '.[bench]'``). It
prints one table: every P-figure, its goal, PASS or MISS.

Phases, in order, all against the one etcd:

1. P5 -- the sidecar process vs etcd's HTTP gateway (bench/sidecar_bench.py).
2. P8 -- writer library and HTTP vs raw txns (bench/writer_bench.py).
3. sweep -- groups under ``/bench/`` grown to each ``--groups`` size in turn; at each size
   time-to-ready (``Replica.start(); wait_ready`` vs a raw paginated range) and memory
   (tracemalloc: a ready replica vs the raw pages held as bytes). At ``--p-groups`` (100k)
   the time-to-ready figure is P1 and the replica pairs P2, P2b, P3, P4, P6, P7 run there
   (bench/replica_bench.py: method notes).

``--smoke`` runs everything tiny (1000 groups, 1 rep, short loads; ~10 s) to check the
plumbing and the JSON's shape; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import replica_bench as rb
from bench import sidecar_bench, writer_bench
from bench._common import (
    ROOT,
    EtcdMember,
    bulk_put,
    connect_to,
    etcd_version,
    group_name,
    group_value,
    summary,
)
from rmwatch.store.keys import KeyLayout
from rmwatch.watcher.replica import Replica

RESULTS_DIR = ROOT / "bench" / "results"
DEFAULT_SIZES = (10_000, 50_000, 100_000, 200_000)
P_GROUPS = 100_000


def log(message: str) -> None:
    print(message, flush=True)


# ---- phase 1: sweep and replica pairs ------------------------------------------------------


class Population:
    """Groups ``0..n-1`` under the replica's root, grown on demand; values kept for reuse."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.values: list[bytes] = []
        self.layout = KeyLayout(rb.OURS_ROOT)

    def grow(self, n: int) -> None:
        start = len(self.values)
        if n <= start:
            return
        t0 = time.perf_counter()
        fresh = [group_value(i) for i in range(start, n)]
        bulk_put(self.client, [(self.layout.settings(group_name(start + j)), v)
                               for j, v in enumerate(fresh)])  # fmt: skip
        self.values += fresh
        log(f"  groups {start} -> {n} in {time.perf_counter() - t0:.1f}s")

    def key_value_bytes(self, n: int) -> int:
        return sum(len(self.layout.settings(group_name(i)).encode()) + len(self.values[i])
                   for i in range(n))  # fmt: skip


def replica_steady_bytes(endpoint: str, expect: int) -> float:
    """tracemalloc bytes held by a ready replica of ``expect`` groups (its client included)."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    replica = Replica(endpoints=[endpoint], root_prefix=rb.OURS_ROOT).start()
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


def memory_point(endpoint: str, pop: Population, n: int, reps: int) -> dict[str, Any]:
    """Replica bytes vs the raw pages' bytes at ``n`` groups, alternated."""
    ours: list[float] = []
    raw: list[float] = []
    for rep in range(reps):
        for kind in ["ours", "raw"] if rep % 2 == 0 else ["raw", "ours"]:
            if kind == "ours":
                ours.append(replica_steady_bytes(endpoint, n))
            else:
                raw.append(rb.p7_raw(endpoint))
    kv = pop.key_value_bytes(n)
    log(f"  memory n={n}: replica {statistics.median(ours) / 2**20:.1f} MiB, raw pages "
        f"{statistics.median(raw) / 2**20:.1f} MiB, key+value {kv / 2**20:.1f} MiB")  # fmt: skip
    return {
        "groups": n,
        "replica_traced_mib": summary([o / 2**20 for o in ours], 1),
        "raw_pages_dict_traced_mib": summary([r / 2**20 for r in raw], 1),
        "raw_key_plus_value_mib": round(kv / 2**20, 1),
        "ratio_vs_key_plus_value": summary([o / kv for o in ours], 2),
    }


def replica_pairs(endpoint: str, pop: Population, n: int, reps: int, smoke: bool
                  ) -> dict[str, Any]:  # fmt: skip
    """P2, P2b, P3, P4, P6, P7 at ``n`` groups (P1 comes from the sweep)."""
    values = pop.values[:n]
    out: dict[str, Any] = {}
    writer = connect_to(endpoint)
    watcher_client = connect_to(endpoint)
    gate = rb.Gate()
    replica = Replica(endpoints=[endpoint], root_prefix=rb.OURS_ROOT,
                      session_factory=gate.factory).start()  # fmt: skip
    try:
        replica.wait_ready(300)
        log("P4 library reads")
        out["P4"] = rb.run_p4(replica, writer, n, reps, *((20_000, 200) if smoke else ()))
        log("P2 live watch, single puts")
        out["P2"] = rb.run_p2(replica, writer, watcher_client, values, reps, 1,
                              50 if smoke else 2000)  # fmt: skip
        log("P2b live watch, 20-put txns")
        out["P2b"] = rb.run_p2(replica, writer, watcher_client, values, reps, 20,
                               20 if smoke else 400)  # fmt: skip
        log("P3 catch-up replay")
        out["P3"] = rb.run_p3(replica, gate, writer, watcher_client, values, reps,
                              5 if smoke else 100)  # fmt: skip
        log("P6 rebuild under reads")
        # Drop the earlier phases' history first (untimed) so the timed compactions are small.
        rb.compact_client(endpoint).compact(rb.current_revision(writer), physical=True)
        out["P6"] = rb.run_p6(replica, gate, writer, values, endpoint, reps)
    finally:
        gate.close()
        replica.close()
        del replica
        gc.collect()
    log("P7 memory (tracemalloc)")
    out["P7"] = rb.run_p7(endpoint, writer, values, pop.key_value_bytes(n), reps)
    writer.close()
    watcher_client.close()
    return out


def replica_phase(endpoint: str, sizes: list[int], p_groups: int, reps: int,
                  smoke: bool) -> dict[str, Any]:  # fmt: skip
    client = connect_to(endpoint)
    pop = Population(client)
    sweep: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    pairs: dict[str, Any] = {}
    try:
        for n in sizes:
            log(f"sweep: {n} groups")
            pop.grow(n)
            point = rb.run_p1(endpoint, n, reps, decode=False)
            sweep.append(point)
            if n == p_groups:
                pairs["P1"] = point
                pairs.update(replica_pairs(endpoint, pop, n, reps, smoke))
                memory.append({**memory_from_p7(pairs["P7"], n)})
            else:
                # Memory barely varies between reps (P7 shows it): 3 reps off the pairs' size.
                memory.append(memory_point(endpoint, pop, n, min(reps, 3)))
    finally:
        client.close()
    return {"pairs": pairs, "ready_sweep": sweep, "memory_sweep": memory}


def memory_from_p7(p7: dict[str, Any], n: int) -> dict[str, Any]:
    """The memory-sweep point at P7's size, from P7 itself (same measurement, same reps)."""
    return {
        "groups": n,
        "replica_traced_mib": p7["replica_traced_mib"],
        "raw_pages_dict_traced_mib": p7["raw_pages_dict_traced_mib"],
        "raw_key_plus_value_mib": p7["raw_key_plus_value_mib"],
        "ratio_vs_key_plus_value": p7["ratio_vs_key_plus_value"],
        "replica_rebuild_peak_mib": p7["replica_rebuild_peak_mib"],
    }


# ---- the table -----------------------------------------------------------------------------


def figures(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every P-figure: id, what, the ratio summary, goal text, and whether it is met."""
    rows: list[dict[str, Any]] = []

    def add(pid: str, what: str, fig: dict[str, Any] | None, op: str, goal: float | None,
            digits: int = 3) -> None:  # fmt: skip
        if fig is None:
            return
        met = None
        if goal is not None:
            met = fig["median"] <= goal if op == "<=" else fig["median"] >= goal
        rows.append({"id": pid, "figure": what, "median": fig["median"], "min": fig["min"],
                     "max": fig["max"], "goal": f"{op} {goal:g}x" if goal is not None else
                     "(info)", "met": met, "digits": digits})  # fmt: skip

    r = results
    p1 = r.get("P1")
    if p1:
        add(
            "P1",
            f"time-to-ready {p1['groups']} groups / raw paginated range",
            p1["ratio_vs_raw_range"],
            "<=",
            2.0,
        )
    for key, label in (("P2", "1 ev/rev"), ("P2b", "20 ev/rev")):
        p2 = r.get(key)
        if p2:
            add(
                key, f"live watch events/s / raw watch loop ({label})", p2["rate_ratio"], ">=", 0.95
            )
            add(key, f"write->visible p99 / raw watch loop ({label})", p2["p99_ratio"], "<=", 1.1)
    p3 = r.get("P3")
    if p3:
        add("P3", "catch-up replay events/s / raw watch from R+1", p3["rate_ratio"], ">=", 0.7)
    p4 = r.get("P4")
    if p4:
        add(
            "P4", "get_group/s / serializable etcd get/s", p4["ours_vs_etcd_speedup"], ">=", 1000, 0
        )
        add("P4", "get_group time / dict.get time", p4["ours_vs_dict_slowdown"], "<=", 3)
    p5 = r.get("P5")
    if p5:
        add("P5", "sidecar GET req/s / etcd gateway /v3/kv/range", p5["rps_ratio"], ">=", 1.0)
        add("P5", "sidecar GET p99 / etcd gateway p99", p5["p99_ratio"], "<=", 1.0)
    p6 = r.get("P6")
    if p6:
        failed = sum(p6["failed_reads"])
        rows.append({"id": "P6", "figure": f"failed reads during rebuild (of "
                     f"{sum(p6['reads_during_rebuild'])})", "median": failed, "min": min(
                     p6["failed_reads"]), "max": max(p6["failed_reads"]), "goal": "= 0",
                     "met": failed == 0, "digits": 0})  # fmt: skip
        add(
            "P6",
            "rebuild time (reader hammering) / cold start",
            p6["rebuild_vs_cold_start"],
            "<=",
            1.2,
        )
    p7 = r.get("P7")
    if p7:
        add("P7", "replica memory / raw key+value bytes", p7["ratio_vs_key_plus_value"], "<=", 3, 2)
        add("P7", "rebuild peak / steady memory", p7["rebuild_peak_over_steady"], "<=", 2, 2)
    p8 = r.get("P8")
    if p8:
        for shape, label in (("set_service_limit", "put"), ("modify_group", "read-modify-write")):
            variants = p8["shapes"][shape]
            add(
                "P8",
                f"writer library writes/s / raw txn ({label})",
                variants["library"]["ratio_to_raw"],
                ">=",
                0.8,
            )
            add(
                "P8",
                f"writer HTTP writes/s / raw txn ({label})",
                variants["http"]["ratio_to_raw"],
                ">=",
                0.5,
            )
    return rows


def table(rows: list[dict[str, Any]]) -> list[str]:
    cells = [("id", "figure (ours / baseline, same run)", "median [min-max]", "goal", "")]
    for row in rows:
        d = row["digits"]
        fig = f"{row['median']:.{d}f} [{row['min']:.{d}f}-{row['max']:.{d}f}]"
        verdict = "" if row["met"] is None else ("PASS" if row["met"] else "MISS")
        cells.append((row["id"], row["figure"], fig, row["goal"], verdict))
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(cells[0])).rstrip(),
             "  ".join("-" * w for w in widths)]  # fmt: skip
    lines += ["  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in cells[1:]]
    return lines


# ---- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny and fast (~10 s): checks the plumbing, figures mean nothing",
    )
    parser.add_argument(
        "--groups",
        default=",".join(map(str, DEFAULT_SIZES)),
        help="sweep sizes, comma-separated (default %(default)s)",
    )
    parser.add_argument(
        "--max-groups", type=int, default=None, help="drop sweep sizes above this (a shorter run)"
    )
    parser.add_argument(
        "--p-groups",
        type=int,
        default=P_GROUPS,
        help="size the replica pairs run at (default %(default)s)",
    )
    parser.add_argument("--reps", type=int, default=None, help="reps per figure (default 5)")
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS_DIR,
        help="directory of latest.json and the plots (default bench/results)",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--phases", default="replica,sidecar,writer",
                        help="subset of replica,sidecar,writer")  # fmt: skip
    args = parser.parse_args(argv)
    if args.smoke:
        args.groups, args.p_groups = "1000", 1000
        args.reps = args.reps or 1
    args.reps = args.reps or 5
    sizes = sorted({int(s) for s in args.groups.split(",") if s.strip()})
    if args.max_groups is not None:
        sizes = [s for s in sizes if s <= args.max_groups]
    if args.p_groups not in sizes:
        # the pairs need a sweep point of their own size
        sizes = sorted({*sizes, args.p_groups})
    args.sizes = sizes
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    phases = set(args.phases.split(","))
    smoke: bool = args.smoke
    reps: int = args.reps
    started = time.perf_counter()
    load_before = os.getloadavg()
    import structlog  # noqa: PLC0415

    # The replica and writer log every transition/write as JSON to stdout: not here.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    results: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    with EtcdMember("bench") as member:
        version = etcd_version(member.binary)
        log(f"etcd {version} at {member.endpoint}; sizes {args.sizes}, pairs at "
            f"{args.p_groups}, {reps} reps{' (smoke)' if smoke else ''}")  # fmt: skip
        # The HTTP pairs first, while this process's heap is small: their clients (asyncio
        # and http.client) allocate per request, and with the replica phase's millions of
        # objects alive every gen-2 collection here cost them tens of ms (P8 HTTP read
        # 0.43x after the replica phase, ~0.5x before it).
        if "sidecar" in phases:
            log("P5 sidecar GET vs etcd HTTP gateway")
            p5_reps = sidecar_bench.measure_on(
                member.endpoint, member.client_port, groups=1000, concurrency=8,
                seconds=0.3 if smoke else 3.0, reps=max(reps, 2 if smoke else 5),
                warmup=0.1 if smoke else 0.5, log=log)  # fmt: skip
            results["P5"] = sidecar_bench.summarize(p5_reps)
        if "writer" in phases:
            log("P8 writer throughput")
            results["P8"] = writer_bench.run(member.endpoint, ops=20 if smoke else 400,
                                             reps=reps, warmup=5 if smoke else 30,
                                             log=log)  # fmt: skip
        if "replica" in phases:
            phase = replica_phase(member.endpoint, args.sizes, args.p_groups, reps, smoke)
            results.update(phase["pairs"])
            extra["ready_sweep"] = phase["ready_sweep"]
            extra["memory_sweep"] = phase["memory_sweep"]
    rows = figures(results)
    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {"nproc": os.cpu_count(), "cpu": rb._cpu_model(),
                    "python": platform.python_version(), "platform": platform.platform()},
        "etcd_version": version,
        "reps": reps,
        "smoke": smoke,
        "sizes": args.sizes,
        "p_groups": args.p_groups,
        "total_seconds": round(time.perf_counter() - started, 1),
        "loadavg_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }  # fmt: skip
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    latest = out_dir / "latest.json"
    document = {"meta": meta, "figures": rows, "results": results, **extra}
    latest.write_text(json.dumps(document, indent=1) + "\n")
    plots: list[str] = []
    if not args.no_plots:
        plots = make_plots(document, out_dir)
    log("")
    log(f"machine: nproc={meta['machine']['nproc']} cpu={meta['machine']['cpu']} "
        f"python={meta['machine']['python']} etcd={version}; {meta['date']}; reps={reps}; "
        f"1-min load avg before/after {meta['loadavg_before_after']}")  # fmt: skip
    for line in table(rows):
        log(line)
    log("")
    for line in rb.absolute_lines(results):
        log(line)
    log(f"written: {latest}" + "".join(f", {p}" for p in plots)
        + f" in {meta['total_seconds']}s")  # fmt: skip
    return 0


def make_plots(document: dict[str, Any], out_dir: Path) -> list[str]:
    try:
        from bench import plots  # noqa: PLC0415
    except ImportError as exc:  # matplotlib is the optional extra `bench`
        log(f"no plots: {exc} (pip install -e '.[bench]')")
        return []
    made: Callable[[dict[str, Any], Path], list[Path]] = plots.write_all
    return [str(p) for p in made(document, out_dir)]


if __name__ == "__main__":
    raise SystemExit(main())
