"""How much of a replica cold start and of a catch-up is the cyclic GC (gc.callbacks timing).

Run: ``python -m bench.replica_gc [--groups N]``; prints the seconds spent in collections
during each phase, per generation, next to the phase's wall time.
"""

from __future__ import annotations

import argparse
import gc
import time

from bench._common import EtcdMember, connect_to
from bench.replica_bench import OURS_ROOT, Gate, backlog, populate
from rmwatch.watcher.replica import Replica

_stats = {"t0": 0.0, "by_gen": [0.0, 0.0, 0.0], "count": [0, 0, 0]}


def _cb(phase: str, info: dict) -> None:
    if phase == "start":
        _stats["t0"] = time.perf_counter()
    else:
        gen = info["generation"]
        _stats["by_gen"][gen] += time.perf_counter() - _stats["t0"]
        _stats["count"][gen] += 1


def _reset() -> None:
    _stats["by_gen"] = [0.0, 0.0, 0.0]
    _stats["count"] = [0, 0, 0]


def _report(what: str, wall: float) -> None:
    total = sum(_stats["by_gen"])
    print(
        f"{what}: wall {wall:.2f}s, in GC {total:.2f}s ({100 * total / wall:.0f}%) "
        f"by generation {[round(x, 3) for x in _stats['by_gen']]} "
        f"collections {_stats['count']}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--groups", type=int, default=20000)
    parser.add_argument("--freeze", action="store_true", help="gc.freeze() after ready")
    args = parser.parse_args()
    with EtcdMember("replica-gc") as member:
        writer = connect_to(member.endpoint)
        values, _ = populate(writer, args.groups)
        gc.collect()
        gc.callbacks.append(_cb)
        for _ in range(2):
            _reset()
            t0 = time.perf_counter()
            replica = Replica(endpoints=[member.endpoint], root_prefix=OURS_ROOT).start()
            replica.wait_ready(600)
            _report(f"cold start {args.groups} groups", time.perf_counter() - t0)
            replica.close()
            del replica
            gc.collect()
        gate = Gate()
        replica = Replica(
            endpoints=[member.endpoint], root_prefix=OURS_ROOT, session_factory=gate.factory
        ).start()
        replica.wait_ready(600)
        if args.freeze:
            gc.freeze()
        for rep in range(2):
            gate.cut()
            last = backlog(writer, OURS_ROOT, values, 100, rep * 10000)
            _reset()
            t0 = time.perf_counter()
            gate.release()
            replica.wait_for_revision(last, 600)
            _report(
                "catch-up 10000 events" + (" (after gc.freeze)" if args.freeze else ""),
                time.perf_counter() - t0,
            )
        gc.callbacks.remove(_cb)
        gate.close()
        replica.close()
        writer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
