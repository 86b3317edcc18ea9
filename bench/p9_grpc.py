"""P9: a replica's ``GetResourceGroup`` over gRPC vs etcd's own gRPC ``Range`` of the key.

Both sides answer the same question (one group's settings, by name) to the same client: Python
grpc stubs, ``--concurrency`` threads with a channel each, names drawn uniformly from every
stored group. The replica runs in its own process (as a sidecar does), serving
``rmwatch.grpc.serve_replica``; etcd is the harness's single member. Reps alternate which side
goes first; the figure is the median of the per-rep ratios ours/etcd (throughput: goal >= 1x;
p99 latency: goal <= 1x).

    python -m bench.p9_grpc [--groups 10000] [--concurrency 4] [--seconds 3] [--reps 3]

``--serve ENDPOINT ROOT PORT`` is the replica process itself (used by this module and P10).
In the suite (``python -m bench``, phase ``grpc``) ``run`` measures against the suite's etcd.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from bench._common import (
    ROOT,
    bulk_put,
    connect_to,
    free_port,
    group_name,
    group_value,
)
from bench._stats import Row, goal_row, pct, ratio_summary
from rmwatch.store.keys import KeyLayout

BENCH_ROOT = "/bench9/"
THROUGHPUT_GOAL = 1.0
P99_GOAL = 1.0
# (smoke, full) sizes in the suite: groups stored, client threads, seconds a side per rep.
GROUPS = (200, 10_000)
CONCURRENCY = (2, 4)
SECONDS = (0.5, 3.0)


# ---- the replica process ------------------------------------------------------------------


def serve(endpoint: str, root: str, port: int) -> None:
    """Run a ready replica with its gRPC server until stdin closes (the parent's end)."""
    from rmwatch.grpc import serve_replica  # noqa: PLC0415
    from rmwatch.watcher.replica import Replica  # noqa: PLC0415

    with Replica(endpoints=[endpoint], root_prefix=root) as replica:
        replica.wait_ready(300)
        server = serve_replica(replica, f"127.0.0.1:{port}")
        print("READY", flush=True)
        sys.stdin.read()
        server.stop(1.0)


def start_server(endpoint: str, root: str, port: int) -> subprocess.Popen[str]:
    """The replica process, returned once it serves."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.p9_grpc", "--serve", endpoint, root, str(port)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # the replica may log to stdout before it serves
        if line.strip() == "READY":
            return proc
    proc.kill()
    raise RuntimeError("replica process exited before serving")


def stop_server(proc: subprocess.Popen[str]) -> None:
    """End the replica process."""
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


# ---- the load ---------------------------------------------------------------------------


@dataclass
class Rep:
    """One side's run: calls, wall time, latencies (seconds)."""

    calls: int
    seconds: float
    latencies: list[float]

    @property
    def throughput(self) -> float:
        """Calls per second."""
        return self.calls / self.seconds

    def p(self, q: float) -> float:
        """A latency quantile in milliseconds."""
        return pct(self.latencies, q) * 1000


def run_load(make_call: Callable[[grpc.Channel], Callable[[int], Any]], address: str, *,
             groups: int, concurrency: int, seconds: float) -> Rep:  # fmt: skip
    """``concurrency`` threads, one channel each, calling for ``seconds``."""
    channels = [grpc.insecure_channel(address) for _ in range(concurrency)]
    calls = [make_call(channel) for channel in channels]
    for call in calls:  # connect and warm up
        for _ in range(50):
            call(random.randrange(groups))
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    stop = time.perf_counter() + seconds

    def worker(index: int) -> None:
        call, out = calls[index], latencies[index]
        rng = random.Random(index)
        while True:
            started = time.perf_counter()
            if started >= stop:
                return
            call(rng.randrange(groups))
            out.append(time.perf_counter() - started)

    began = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    for channel in channels:
        channel.close()
    flat = [x for row in latencies for x in row]
    return Rep(len(flat), elapsed, flat)


def ours(layout: KeyLayout) -> Callable[[grpc.Channel], Callable[[int], Any]]:
    """GetResourceGroup on the replica."""
    from rmwatch.grpc.stubs import resource_manager_pb2_grpc as pbg  # noqa: PLC0415
    from rmwatch.store._pb import resource_manager_pb2 as pb  # noqa: PLC0415

    def make(channel: grpc.Channel) -> Callable[[int], Any]:
        stub = pbg.ResourceManagerStub(channel)  # type: ignore[no-untyped-call]
        requests: dict[int, Any] = {}

        def call(i: int) -> Any:
            request = requests.get(i)
            if request is None:
                request = requests[i] = pb.GetResourceGroupRequest(
                    resource_group_name=group_name(i)
                )
            response = stub.GetResourceGroup(request)
            assert response.group.name
            return response

        return call

    return make


def etcd(layout: KeyLayout) -> Callable[[grpc.Channel], Callable[[int], Any]]:
    """etcd's Range of the group's settings key."""
    from pyetcd.etcdrpc import rpc_pb2, rpc_pb2_grpc  # noqa: PLC0415

    def make(channel: grpc.Channel) -> Callable[[int], Any]:
        stub = rpc_pb2_grpc.KVStub(channel)
        requests: dict[int, Any] = {}

        def call(i: int) -> Any:
            request = requests.get(i)
            if request is None:
                key = layout.settings(group_name(i)).encode()
                request = requests[i] = rpc_pb2.RangeRequest(key=key)
            response = stub.Range(request)
            assert response.kvs
            return response

        return call

    return make


def measure(endpoint: str, *, groups: int, concurrency: int, seconds: float,
            reps: int) -> dict[str, Any]:  # fmt: skip
    """Load the groups into the etcd at ``endpoint``, start the replica process, alternate
    the two sides ``reps`` times; per-rep ratios ours/etcd."""
    layout = KeyLayout(BENCH_ROOT)
    client = connect_to(endpoint)
    try:
        bulk_put(client, [(layout.settings(group_name(i)), group_value(i)) for i in range(groups)])
    finally:
        client.close()
    port = free_port()
    proc = start_server(endpoint, BENCH_ROOT, port)
    measured: list[dict[str, Rep]] = []
    try:
        for rep in range(reps):
            sides = [("etcd", endpoint, etcd(layout)),
                     ("ours", f"127.0.0.1:{port}", ours(layout))]  # fmt: skip
            if rep % 2:
                sides.reverse()
            measured.append({name: run_load(make, address, groups=groups,
                                            concurrency=concurrency, seconds=seconds)
                             for name, address, make in sides})  # fmt: skip
    finally:
        stop_server(proc)
    return {
        "groups": groups,
        "concurrency": concurrency,
        "seconds": seconds,
        "reps": [
            {
                side: {
                    "calls_per_s": round(r[side].throughput),
                    "p50_ms": round(r[side].p(0.5), 3),
                    "p99_ms": round(r[side].p(0.99), 3),
                }
                for side in ("ours", "etcd")
            }
            for r in measured
        ],  # fmt: skip
        "throughput_ratio": ratio_summary([r["ours"].throughput for r in measured],
                                          [r["etcd"].throughput for r in measured]),
        "p99_ratio": ratio_summary([r["ours"].p(0.99) for r in measured],
                                   [r["etcd"].p(0.99) for r in measured]),
    }  # fmt: skip


def run(endpoint: str, *, reps: int, smoke: bool) -> dict[str, Any]:
    """P9 against the etcd at ``endpoint``, at the suite's sizes (tiny with ``smoke``)."""
    size = 0 if smoke else 1
    return measure(endpoint, groups=GROUPS[size], concurrency=CONCURRENCY[size],
                   seconds=SECONDS[size], reps=reps)  # fmt: skip


def rows(pid: str, result: dict[str, Any]) -> list[Row]:
    """The table's lines: throughput and p99 latency, ours/etcd."""
    return [
        goal_row(pid, "replica gRPC GetResourceGroup calls/s / etcd gRPC Range",
                 result["throughput_ratio"], ">=", THROUGHPUT_GOAL),
        goal_row(pid, "replica gRPC GetResourceGroup p99 / etcd gRPC Range p99",
                 result["p99_ratio"], "<=", P99_GOAL),
    ]  # fmt: skip


def _median(result: dict[str, Any], side: str, field: str) -> float:
    return float(statistics.median(r[side][field] for r in result["reps"]))


def absolute(pid: str, result: dict[str, Any]) -> str:
    """Both sides' calls/s and latencies (medians over the reps)."""
    parts = [
        f"{name} {_median(result, side, 'calls_per_s'):.0f} calls/s p50 "
        f"{_median(result, side, 'p50_ms'):.2f} p99 {_median(result, side, 'p99_ms'):.2f} ms"
        for side, name in (("ours", "replica GetResourceGroup"), ("etcd", "etcd Range"))
    ]
    return (f"{pid:<3} " + " | ".join(parts) + f" ({result['concurrency']} threads, "
            f"{result['groups']} groups, {result['seconds']:g} s a side)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run P9 and print its figures (and write them with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", nargs=3, metavar=("ENDPOINT", "ROOT", "PORT"))
    parser.add_argument("--groups", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.serve:
        endpoint, root, port = args.serve
        serve(endpoint, root, int(port))
        return 0
    from harness import EtcdMember  # noqa: PLC0415 (tests/ is on sys.path via bench._common)

    with EtcdMember() as member:
        result = measure(member.endpoint, groups=args.groups, concurrency=args.concurrency,
                         seconds=args.seconds, reps=args.reps)  # fmt: skip
    print(json.dumps(result, indent=2))
    print(f"P9 GetResourceGroup vs etcd Range: throughput {result['throughput_ratio']['median']}x "
          f"(goal >= 1x), p99 {result['p99_ratio']['median']}x (goal <= 1x)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
