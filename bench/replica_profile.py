"""Profiling targets for the replica (run under py-spy), and a collapsed-stack analyzer.

    py-spy record --threads --format raw -r 250 -o bench/results/prof_load.txt -- \
        python -m bench.replica_profile load --groups 20000
    python -m bench.replica_profile analyze bench/results/prof_load.txt

Targets (each starts its own etcd; only the replica's worker thread matters in the analysis):
- ``load``: three cold starts (Replica.start -> wait_ready) of N groups.
- ``live``: a writer thread doing 20-put txns for ~8 s while the replica applies them.
- ``catchup``: the replica parked at a gate, 300 x 100-put txns written, then released (x3).
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import threading
import time

from bench._common import EtcdMember, bulk_put, connect_to, group_name, group_value
from bench.replica_bench import OURS_ROOT, Gate, backlog, populate, writer_run
from rmwatch.store.keys import KeyLayout
from rmwatch.watcher.replica import Replica

# (label, regex on a frame "func (file:line)") - inclusive time of the worker thread
BUCKETS = [
    ("load_prefix (etcd range RPCs + kv tuples)", r"(^|\.)_load_once \(.*snapshot\.py"),
    ("build_snapshot", r"(^|\.)build_snapshot \("),
    ("decode_entry", r"(^|\.)decode_entry \("),
    ("  KeyLayout.parse", r"(^|\.)parse \(.*keys\.py"),
    ("  decode_value", r"(^|\.)decode_value \("),
    ("    decode_settings", r"(^|\.)decode_settings \("),
    ("      ParseFromString", r"ParseFromString"),
    ("      _known_in_unknown", r"(^|\.)_known_in_unknown \("),
    ("      _message_to_dict", r"(^|\.)_message_to_dict \("),
    ("      ResourceGroup.model_validate", r"(^|\.)model_validate \("),
    ("      _has_unknown_fields", r"(^|\.)_has_unknown_fields \("),
    ("  Entry(...)", r"__init__ \(<string>"),
    ("  ChangeEvent/Snapshot dataclass init", r"__init__ \(<string>"),
    ("store_mark", r"(^|\.)store_mark \("),
    ("diff_snapshots", r"(^|\.)diff_snapshots \("),
    ("_stream: waiting on gRPC (next response)", r"(__next__|_next) \(.*grpc"),
    ("_apply", r"(^|\.)_apply \(.*replica\.py"),
    ("  apply_changes", r"(^|\.)apply_changes \("),
    ("    Overlay.updated", r"(^|\.)updated \(.*overlay\.py"),
    ("  RawChange/key decode loop (self)", r"(^|\.)_apply \(.*replica\.py"),
    ("_publish", r"(^|\.)_publish \("),
    ("  listeners", r"(^|\.)listener \("),
    ("structlog", r"structlog"),
    ("prometheus metrics", r"prometheus_client"),
    ("state machine move", r"(^|\.)move \(.*state\.py"),
]


def analyze(path: str, thread_pat: str = "rmwatch-replica-worker") -> None:
    """Print inclusive % of the worker thread's samples per bucket."""
    totals: collections.Counter[str] = collections.Counter()
    selfc: collections.Counter[str] = collections.Counter()
    all_samples = 0
    idle = 0
    with open(path) as fh:
        for line in fh:
            stack, _, count_s = line.rstrip("\n").rpartition(" ")
            count = int(count_s)
            frames = stack.split(";")
            if thread_pat not in frames[0] and not any(thread_pat in f for f in frames[:2]):
                continue
            all_samples += count
            seen = set()
            for label, pattern in BUCKETS:
                rx = re.compile(pattern)
                if label.strip().startswith("RawChange"):
                    # self time of _apply: the leaf frame is _apply itself
                    if rx.search(frames[-1]):
                        totals[label] += count
                    continue
                if any(rx.search(f) for f in frames[1:]) and label not in seen:
                    seen.add(label)
                    totals[label] += count
            leaf = re.sub(r":\d+\)$", ")", frames[-1])
            selfc[leaf] += count
            if "wait" in frames[-1] and "threading" in frames[-1]:
                idle += count
    print(f"{path}: {all_samples} samples in the worker thread")
    for label, _ in BUCKETS:
        if totals[label]:
            print(f"  {label:<45} {100 * totals[label] / all_samples:6.1f}%")
    print("  top self (leaf) frames:")
    for leaf, count in selfc.most_common(15):
        print(f"    {100 * count / all_samples:6.1f}%  {leaf}")


def run_target(target: str, groups: int) -> None:
    with EtcdMember("replica-profile") as member:
        endpoint = member.endpoint
        writer = connect_to(endpoint)
        values, _ = populate(writer, groups)
        print("populated", flush=True)
        if target == "load":
            for _ in range(3):
                t0 = time.perf_counter()
                replica = Replica(endpoints=[endpoint], root_prefix=OURS_ROOT).start()
                replica.wait_ready(600)
                print(f"ready in {time.perf_counter() - t0:.2f}s", flush=True)
                replica.close()
            return
        gate = Gate()
        replica = Replica(endpoints=[endpoint], root_prefix=OURS_ROOT,
                          session_factory=gate.factory).start()  # fmt: skip
        replica.wait_ready(600)
        try:
            if target == "live":
                layout = KeyLayout(OURS_ROOT)
                keys = [layout.settings(group_name(i)) for i in range(2000)]
                send: dict[int, float] = {}
                stop = time.monotonic() + 8
                n = 0
                while time.monotonic() < stop:
                    writer_run(writer, keys, values[:2000], 50, 20, send)
                    n += 1000
                replica.wait_for_revision(max(send), 60)
                print(f"live: {n} events", flush=True)
            elif target == "catchup":
                for rep in range(3):
                    gate.cut()
                    last = backlog(writer, OURS_ROOT, values, 100, rep * 10000)
                    t0 = time.perf_counter()
                    gate.release()
                    replica.wait_for_revision(last, 600)
                    dt = time.perf_counter() - t0
                    print(f"catch-up 10000 events in {dt:.2f}s ({10000 / dt:.0f}/s)", flush=True)
        finally:
            gate.close()
            replica.close()
        writer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("target", choices=["load", "live", "catchup", "analyze"])
    parser.add_argument("path", nargs="?")
    parser.add_argument("--groups", type=int, default=20000)
    args = parser.parse_args(argv)
    if args.target == "analyze":
        analyze(args.path)
        return 0
    run_target(args.target, args.groups)
    return 0


if __name__ == "__main__":
    del threading, bulk_put, group_value  # imported for the targets' namespace only
    sys.exit(main())
