"""The whole benchmark suite in one command: ``python -m bench`` (or ``./scripts/bench``).

It starts its own etcd (tests/harness ``EtcdMember``), runs every pair P1-P10 as a ratio of ours
to a raw baseline measured side by side in the same run (A/B/A/B alternation, median of
``--reps`` reps, min-max of the per-rep ratios), and writes ``bench/results/latest.json``
plus PNG plots (``bench/plots.py``, needs matplotlib: ``pip install -e '.[bench]'``). It
prints one table: every P-figure, its goal, PASS or MISS.

Phases, in order, all against the one etcd:

1. P5 -- the sidecar process vs etcd's HTTP gateway (``p5_sidecar``).
2. P8 -- writer library and HTTP vs raw txns (``p8_writer``).
3. grpc -- P9, replica ``GetResourceGroup`` vs etcd's gRPC ``Range`` (``p9_grpc``), and P10,
   100 MetaStorage watchers on one replica vs 100 etcd watches (``p10_fanout``).
4. sweep -- groups under ``/bench/`` grown to each ``--groups`` size in turn; at each size
   time-to-ready (``p1_ready``) and memory (``p7_memory``). At ``--p-groups`` (100k) the
   time-to-ready point is P1 (with the 10k point as its second line), and the pairs that need
   a live replica run there on one shared replica (P1b, P4, P2, P2b, P2c, P3, P6), then P7.

``--phases`` runs a subset; the figures of the phases left out are kept from the
``latest.json`` being replaced (its date noted in ``meta``), so the file always holds every
figure.

Each figure is one module (``bench/p<N>_*.py``): its method in its docstring, its sizes, its
measurement, its goals (``rows``) and its absolute line. ``--smoke`` runs everything tiny (1000
groups, 1 rep, short loads; ~15 s) to check the plumbing and the JSON's shape; its figures mean
nothing. bench/README.md has the method, the baselines and the history.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from bench import (
    p1_ready,
    p1b_first_read,
    p2_watch,
    p2c_keepup,
    p3_catchup,
    p4_reads,
    p5_sidecar,
    p6_rebuild,
    p7_memory,
    p8_writer,
    p9_grpc,
    p10_fanout,
)
from bench._common import ROOT, EtcdMember, Population, connect_to, cpu_model, etcd_version, log
from bench._replica import Rig
from bench._stats import Row

RESULTS_DIR = ROOT / "bench" / "results"
DEFAULT_SIZES = (10_000, 50_000, 100_000, 200_000)
P_GROUPS = 100_000

# Every figure's table lines and absolute line, in the table's order: (id, rows, absolute).
REPORTS: tuple[tuple[str, Callable[[str, dict[str, Any]], list[Row]],
                     Callable[[str, dict[str, Any]], str]], ...] = (
    ("P1", p1_ready.rows, p1_ready.absolute),
    ("P1b", p1b_first_read.rows, p1b_first_read.absolute),
    ("P2", p2_watch.rows, p2_watch.absolute),
    ("P2b", p2_watch.rows, p2_watch.absolute),
    ("P2c", p2c_keepup.rows, p2c_keepup.absolute),
    ("P3", p3_catchup.rows, p3_catchup.absolute),
    ("P4", p4_reads.rows, p4_reads.absolute),
    ("P5", p5_sidecar.rows, p5_sidecar.absolute),
    ("P6", p6_rebuild.rows, p6_rebuild.absolute),
    ("P7", p7_memory.rows, p7_memory.absolute),
    ("P8", p8_writer.rows, p8_writer.absolute),
    ("P9", p9_grpc.rows, p9_grpc.absolute),
    ("P10", p10_fanout.rows, p10_fanout.absolute),
)  # fmt: skip


# ---- the replica phase: sweep and pairs ----------------------------------------------------


def replica_pairs(endpoint: str, pop: Population, n: int, reps: int, smoke: bool
                  ) -> dict[str, Any]:  # fmt: skip
    """P1b, P4, P2, P2b, P2c, P3, P6 on one live replica of ``n`` groups, then P7 (P1 comes
    from the sweep). P1b goes first: it needs groups nobody has read yet."""
    out: dict[str, Any] = {}
    with Rig(endpoint, pop.values[:n], reps, smoke) as rig:
        log("P1b first read vs warm read")
        out["P1b"] = p1b_first_read.run(rig)
        log("P4 library reads")
        out["P4"] = p4_reads.run(rig)
        log("P2 live watch, single puts")
        out["P2"] = p2_watch.run(rig, 1)
        log("P2b live watch, 20-put txns")
        out["P2b"] = p2_watch.run(rig, 20)
        log("P2c highest rate kept up with")
        out["P2c"] = p2c_keepup.run(rig)
        log("P3 catch-up replay")
        out["P3"] = p3_catchup.run(rig)
        log("P6 rebuild under reads")
        out["P6"] = p6_rebuild.run(rig)
    log("P7 memory (tracemalloc)")
    out["P7"] = p7_memory.run(endpoint, pop.values[:n], pop.key_value_bytes(n), reps)
    return out


def replica_phase(endpoint: str, sizes: list[int], p_groups: int, reps: int,
                  smoke: bool) -> dict[str, Any]:  # fmt: skip
    """The sweep over ``sizes`` (time-to-ready and memory at each), with the replica pairs at
    ``p_groups``."""
    client = connect_to(endpoint)
    pop = Population(client)
    sweep: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    pairs: dict[str, Any] = {}
    try:
        for n in sizes:
            log(f"sweep: {n} groups")
            pop.grow(n)
            point = p1_ready.run(endpoint, n, reps)
            sweep.append(point)
            if n == p_groups:
                pairs["P1"] = point
                pairs.update(replica_pairs(endpoint, pop, n, reps, smoke))
                memory.append(p7_memory.sweep_point_from_run(pairs["P7"], n))
            else:
                # Memory barely varies between reps (P7 shows it): 3 reps off the pairs' size.
                memory.append(p7_memory.sweep_point(endpoint, pop, n, min(reps, 3)))
    finally:
        client.close()
    small = next((p for p in sweep if p["groups"] == p1_ready.SMALL), None)
    if "P1" in pairs and small is not None and p_groups != p1_ready.SMALL:
        pairs["P1"]["small"] = small
    return {"pairs": pairs, "ready_sweep": sweep, "memory_sweep": memory}


# ---- the report ----------------------------------------------------------------------------


def figures(results: dict[str, Any]) -> list[Row]:
    """Every measured figure's table rows, in the table's order."""
    rows: list[Row] = []
    for pid, make_rows, _absolute in REPORTS:
        if pid in results:
            rows += make_rows(pid, results[pid])
    return rows


def absolute_lines(results: dict[str, Any]) -> list[str]:
    """Every measured figure's absolute medians, one line each."""
    return [absolute(pid, results[pid]) for pid, _rows, absolute in REPORTS if pid in results]


def table(rows: list[Row]) -> list[str]:
    """The rows as an aligned text table with PASS or MISS."""
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


def make_plots(document: dict[str, Any], out_dir: Path) -> list[str]:
    """The PNG plots, when matplotlib (the ``bench`` extra) is installed."""
    try:
        from bench import plots  # noqa: PLC0415
    except ImportError as exc:
        log(f"no plots: {exc} (pip install -e '.[bench]')")
        return []
    return [str(p) for p in plots.write_all(document, out_dir)]


# ---- main ----------------------------------------------------------------------------------

PHASE_FIGURES = {"sidecar": ("P5",), "writer": ("P8",), "grpc": ("P9", "P10")}
"""The figures of the phases other than ``replica`` (which holds every other figure)."""


def merge_previous(latest: Path, results: dict[str, Any], extra: dict[str, Any],
                   phases: set[str], smoke: bool) -> dict[str, str]:  # fmt: skip
    """A run of only some phases keeps the other phases' figures from the ``latest.json`` it
    replaces (a full, non-smoke one), so the file always holds every figure; returns which
    figures came from which earlier run (its date)."""
    if smoke or not latest.exists():
        return {}
    previous = json.loads(latest.read_text())
    if previous.get("meta", {}).get("smoke"):
        return {}
    date = previous.get("meta", {}).get("date", "?")
    # A figure the previous file had itself kept from an earlier run keeps that run's date.
    earlier: dict[str, str] = previous.get("meta", {}).get("merged_from_previous_run", {})
    merged: dict[str, str] = {}
    skipped = {"replica", *PHASE_FIGURES} - phases
    others = {pid for ids in PHASE_FIGURES.values() for pid in ids}
    for phase in skipped:
        if phase == "replica":
            ids = [pid for pid, _r, _a in REPORTS if pid not in others]
            for key in ("ready_sweep", "memory_sweep"):
                if key in previous:
                    extra[key] = previous[key]
        else:
            ids = list(PHASE_FIGURES[phase])
        for pid in ids:
            if pid in previous.get("results", {}) and pid not in results:
                results[pid] = previous["results"][pid]
                merged[pid] = earlier.get(pid, date)
    return merged


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options; ``--smoke`` fixes the sizes, and the pairs' size joins the sweep."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny and fast (~15 s): checks the plumbing, figures mean nothing",
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
    parser.add_argument("--phases", default="replica,sidecar,writer,grpc",
                        help="subset of replica,sidecar,writer,grpc")  # fmt: skip
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
    """Run the phases, write latest.json and the plots, print the table."""
    args = parse_args(argv)
    phases = set(args.phases.split(","))
    smoke: bool = args.smoke
    reps: int = args.reps
    started = time.perf_counter()
    load_before = os.getloadavg()
    # The bench is the application here: quiet the library's per-transition and per-write
    # logs (cut streams and compactions are the point of some figures), whether a module logs
    # through structlog's own pipeline or through the stdlib `rmwatch` loggers.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    logging.getLogger("rmwatch").setLevel(logging.ERROR)
    results: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    with EtcdMember("bench") as member:
        version = etcd_version(member.binary)
        log(f"etcd {version} at {member.endpoint}; sizes {args.sizes}, pairs at "
            f"{args.p_groups}, {reps} reps{' (smoke)' if smoke else ''}")  # fmt: skip
        # The HTTP pairs first, while this process's heap is small: their clients (asyncio
        # and http.client) allocate per request, and with the replica phase's millions of
        # objects alive every gen-2 collection here would be billed to them.
        if "sidecar" in phases:
            log("P5 sidecar GET vs etcd HTTP gateway")
            results["P5"] = p5_sidecar.run(member.endpoint, member.client_port, reps=reps,
                                           smoke=smoke)  # fmt: skip
        if "writer" in phases:
            log("P8 writer throughput")
            results["P8"] = p8_writer.run(member.endpoint, reps=reps, smoke=smoke)
        if "grpc" in phases:
            log("P9 replica gRPC GetResourceGroup vs etcd gRPC Range")
            results["P9"] = p9_grpc.run(member.endpoint, reps=reps, smoke=smoke)
            log("P10 MetaStorage watch fan-out vs etcd watches")
            etcd_pid = member.pid
            assert etcd_pid is not None
            results["P10"] = p10_fanout.run(member.endpoint, etcd_pid, reps=reps, smoke=smoke)
        if "replica" in phases:
            phase = replica_phase(member.endpoint, args.sizes, args.p_groups, reps, smoke)
            results.update(phase["pairs"])
            extra["ready_sweep"] = phase["ready_sweep"]
            extra["memory_sweep"] = phase["memory_sweep"]
    rows = figures(results)
    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {"nproc": os.cpu_count(), "cpu": cpu_model(),
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
    merged = merge_previous(latest, results, extra, phases, smoke)
    if merged:
        meta["merged_from_previous_run"] = merged
        rows = figures(results)
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
    for line in absolute_lines(results):
        log(line)
    log(f"written: {latest}" + "".join(f", {p}" for p in plots)
        + f" in {meta['total_seconds']}s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
