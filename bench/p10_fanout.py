"""P10: fan-out. 100 MetaStorage watchers on one replica vs 100 watches straight on etcd.

The same writes (``--events`` puts at ``--rate`` per second, ~300 B values under the RM prefix)
are watched two ways, alternating by rep:

- ours: 100 ``meta_storagepb.MetaStorage/Watch`` streams on the replica process (which holds
  one etcd watch);
- etcd: 100 ``etcdserverpb.Watch/Watch`` streams on etcd itself.

Figures (median over reps of ours/etcd):

- write->delivered p99: from just before the put to the moment each watcher holds the event
  (every (event, watcher) pair counts). Goal <= 1.5x.
- etcd CPU seconds per 10k events (utime + stime of the etcd process over the phase). The
  writes themselves cost etcd CPU in both phases, so a phase with no bench watchers is measured
  too and the figure is also given net of it (the watch-serving cost). Goal <= 0.1x.

Receivers run on one asyncio loop (grpc.aio) in this process.

    python -m bench.p10_fanout [--watchers 100] [--events 1000] [--rate 50] [--reps 2]

In the suite (``python -m bench``, phase ``grpc``) ``run`` measures against the suite's etcd.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from pyetcd.etcdrpc import rpc_pb2

from bench._common import (
    connect_to,
    free_port,
)
from bench._stats import Row, goal_row, pct, ratio_summary, summary
from bench.p9_grpc import start_server, stop_server
from rmwatch.store._pb import meta_storagepb_pb2 as mspb
from rmwatch.store.keys import KeyLayout
from rmwatch.watcher.watch_stream import prefix_end

BENCH_ROOT = "/bench10/"
_PAD = b"x" * 280
P99_GOAL = 1.5
CPU_GOAL = 0.1
# (smoke, full) sizes in the suite: watchers per side, puts per phase, puts per second.
WATCHERS = (5, 100)
EVENTS = (40, 1000)
RATE = (200.0, 50.0)


def etcd_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Phase:
    """One side's run."""

    latencies: list[float]
    cpu_seconds: float
    events: int
    delivered: int

    @property
    def cpu_per_10k(self) -> float:
        """etcd CPU seconds per 10k events written."""
        return self.cpu_seconds * 10_000 / self.events


class Receivers:
    """``watchers`` streams of one kind on a private asyncio loop, timing every event."""

    def __init__(self, kind: str, address: str, prefix: bytes, start: int, watchers: int,
                 last_seq: int, sent: dict[int, float]) -> None:  # fmt: skip
        self.kind, self.address, self.prefix, self.start = kind, address, prefix, start
        self.watchers, self.last_seq, self.sent = watchers, last_seq, sent
        self.latencies: list[float] = []
        self.delivered = 0
        self.done = threading.Event()
        self.opened = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._loop.run_until_complete(self._main())

    def _record(self, value: bytes, now: float) -> bool:
        seq = int(value.split(b":", 1)[0])
        self.latencies.append(now - self.sent[seq])
        self.delivered += 1
        return seq >= self.last_seq

    async def _ours(self, channel: grpc.aio.Channel) -> None:
        method = channel.unary_stream(
            "/meta_storagepb.MetaStorage/Watch",
            request_serializer=mspb.WatchRequest.SerializeToString,
            response_deserializer=mspb.WatchResponse.FromString,
        )
        request = mspb.WatchRequest(
            key=self.prefix, range_end=prefix_end(self.prefix), start_revision=self.start
        )
        async for response in method(request):
            now = time.perf_counter()
            finished = False
            for event in response.events:
                finished = self._record(event.kv.value, now) or finished
            if finished:
                return

    async def _etcd(self, channel: grpc.aio.Channel) -> None:
        method = channel.stream_stream(
            "/etcdserverpb.Watch/Watch",
            request_serializer=rpc_pb2.WatchRequest.SerializeToString,
            response_deserializer=rpc_pb2.WatchResponse.FromString,
        )
        call = method()
        create = rpc_pb2.WatchCreateRequest(
            key=self.prefix, range_end=prefix_end(self.prefix), start_revision=self.start
        )
        await call.write(rpc_pb2.WatchRequest(create_request=create))
        async for response in call:
            now = time.perf_counter()
            finished = False
            for event in response.events:
                finished = self._record(event.kv.value, now) or finished
            if finished:
                call.cancel()
                return

    async def _main(self) -> None:
        channel = grpc.aio.insecure_channel(self.address)
        one = self._ours if self.kind == "ours" else self._etcd
        tasks = [asyncio.ensure_future(one(channel)) for _ in range(self.watchers)]
        await asyncio.sleep(0.5)
        self.opened.set()
        await asyncio.wait(tasks, timeout=120)
        for task in tasks:
            task.cancel()
        await channel.close()
        self.done.set()


def write_events(client: Any, layout: KeyLayout, events: int, rate: float,
                 sent: dict[int, float]) -> None:  # fmt: skip
    """``events`` puts at ``rate`` per second, each value ``seq:...``, send time recorded."""
    interval = 1.0 / rate
    next_at = time.perf_counter()
    for seq in range(events):
        key = f"{layout.prefix}bench/k{seq % 100}"
        sent[seq] = time.perf_counter()
        client.put(key, b"%d:" % seq + _PAD)
        next_at += interval
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


def run_phase(kind: str, endpoint: str, etcd_pid: int, replica_address: str, *,
              watchers: int, events: int, rate: float, layout: KeyLayout) -> Phase:  # fmt: skip
    """One phase: open the watchers (none for the baseline), write, wait, measure."""
    client = connect_to(endpoint)
    try:
        start = int(client.get_response(b"\0", count_only=True).header.revision) + 1
        sent: dict[int, float] = {}
        receivers = None
        if kind != "none":
            address = replica_address if kind == "ours" else endpoint
            receivers = Receivers(kind, address, layout.prefix.encode(), start, watchers,
                                  events - 1, sent)  # fmt: skip
            receivers.opened.wait(10)
            time.sleep(0.5)
        cpu0 = etcd_cpu_seconds(etcd_pid)
        write_events(client, layout, events, rate, sent)
        if receivers is not None:
            receivers.done.wait(120)
        cpu = etcd_cpu_seconds(etcd_pid) - cpu0
    finally:
        client.close()
    if receivers is None:
        return Phase([], cpu, events, 0)
    return Phase(receivers.latencies, cpu, events, receivers.delivered)


def measure(endpoint: str, etcd_pid: int, *, watchers: int, events: int, rate: float,
            reps: int) -> dict[str, Any]:  # fmt: skip
    """Start the replica process on the etcd at ``endpoint`` (process ``etcd_pid``); run the
    baseline, ours and etcd phases per rep; per-rep ratios ours/etcd."""
    layout = KeyLayout(BENCH_ROOT)
    reps_out: list[dict[str, Phase]] = []
    port = free_port()
    proc = start_server(endpoint, BENCH_ROOT, port)
    try:
        for rep in range(reps):
            order = ["none", "etcd", "ours"] if rep % 2 else ["none", "ours", "etcd"]
            reps_out.append(
                {kind: run_phase(kind, endpoint, etcd_pid, f"127.0.0.1:{port}",
                                 watchers=watchers, events=events, rate=rate, layout=layout)
                 for kind in order}
            )  # fmt: skip
    finally:
        stop_server(proc)
    expected = events * watchers
    rows_out = []
    for r in reps_out:
        row: dict[str, Any] = {"baseline_cpu_per_10k": round(r["none"].cpu_per_10k, 3)}
        for side in ("ours", "etcd"):
            phase = r[side]
            row[side] = {
                "p50_ms": round(pct(phase.latencies, 0.5) * 1000, 3),
                "p99_ms": round(pct(phase.latencies, 0.99) * 1000, 3),
                "delivered": phase.delivered,
                "expected": expected,
                "etcd_cpu_per_10k": round(phase.cpu_per_10k, 3),
            }
        rows_out.append(row)
    # The writes cost etcd CPU in every phase; net of the no-watcher phase is what serving the
    # watches costs (floored at 0 for ours, and the divisor at 1e-9 so a tick-quantised 0
    # cannot divide by zero: /proc counts CPU in 10 ms ticks).
    net = [
        max(0.0, r["ours"].cpu_per_10k - r["none"].cpu_per_10k)
        / max(1e-9, r["etcd"].cpu_per_10k - r["none"].cpu_per_10k)
        for r in reps_out
    ]
    return {
        "watchers": watchers,
        "events": events,
        "rate": rate,
        "reps": rows_out,
        "p99_ratio": ratio_summary([pct(r["ours"].latencies, 0.99) for r in reps_out],
                                   [pct(r["etcd"].latencies, 0.99) for r in reps_out]),
        "etcd_cpu_ratio": ratio_summary([r["ours"].cpu_per_10k for r in reps_out],
                                        [r["etcd"].cpu_per_10k for r in reps_out]),
        "etcd_cpu_ratio_net_of_writes": summary(net, 3),
    }  # fmt: skip


def run(endpoint: str, etcd_pid: int, *, reps: int, smoke: bool) -> dict[str, Any]:
    """P10 against the etcd at ``endpoint`` (process ``etcd_pid``, for its CPU time), at the
    suite's sizes (tiny with ``smoke``)."""
    size = 0 if smoke else 1
    return measure(endpoint, etcd_pid, watchers=WATCHERS[size], events=EVENTS[size],
                   rate=RATE[size], reps=reps)  # fmt: skip


def rows(pid: str, result: dict[str, Any]) -> list[Row]:
    """The table's lines: write->delivered p99, and etcd CPU net of the writes."""
    n = result["watchers"]
    return [
        goal_row(pid, f"{n} MetaStorage watchers: write->delivered p99 / {n} etcd watches",
                 result["p99_ratio"], "<=", P99_GOAL),
        goal_row(pid, f"etcd CPU s per 10k events, {n} watchers: ours / etcd (net of writes)",
                 result["etcd_cpu_ratio_net_of_writes"], "<=", CPU_GOAL),
    ]  # fmt: skip


def absolute(pid: str, result: dict[str, Any]) -> str:
    """Both sides' latencies and etcd CPU (medians over the reps), and the writes' own CPU."""

    def med(side: str, field: str) -> float:
        return float(statistics.median(r[side][field] for r in result["reps"]))

    base = statistics.median(r["baseline_cpu_per_10k"] for r in result["reps"])
    parts = [
        f"{name} p50 {med(side, 'p50_ms'):.2f} p99 {med(side, 'p99_ms'):.2f} ms, etcd CPU "
        f"{med(side, 'etcd_cpu_per_10k'):.2f} s/10k events"
        for side, name in (("ours", "replica MetaStorage"), ("etcd", "etcd Watch"))
    ]
    return (f"{pid:<3} " + " | ".join(parts) + f" | writes alone {base:.2f} s/10k "
            f"({result['watchers']} watchers a side, {result['events']} puts at "
            f"{result['rate']:g}/s; gross CPU ratio "
            f"{result['etcd_cpu_ratio']['median']}x)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run P10 and print its figures (and write them with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from harness import EtcdMember  # noqa: PLC0415 (tests/ is on sys.path via bench._common)

    with EtcdMember() as member:
        pid = member.pid
        assert pid is not None
        result = measure(member.endpoint, pid, watchers=args.watchers, events=args.events,
                         rate=args.rate, reps=args.reps)  # fmt: skip
    print(json.dumps(result, indent=2))
    net = result["etcd_cpu_ratio_net_of_writes"]["median"]
    print(f"P10 fan-out ({args.watchers} watchers): write->delivered p99 "
          f"{result['p99_ratio']['median']}x (goal <= 1.5x); etcd CPU per 10k events "
          f"{result['etcd_cpu_ratio']['median']}x, {net}x net of the writes "
          "(goal <= 0.1x)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
