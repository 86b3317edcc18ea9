"""Sidecar HTTP reads vs etcd's own HTTP gateway: req/s and latency, same etcd, same run.

What is compared: one group read per request.
- sidecar: ``GET /resource-manager/api/v1/config/group/{name}``, answered from the replica's
  memory by ``rmwatch replica`` running as its own process (as deployed);
- etcd: ``POST /v3/kv/range`` with the base64 key (etcd's grpc-gateway on its client URL), a
  linearizable read of the same key from the same etcd.

Both are driven by the same client, ``--concurrency`` keep-alive connections on one asyncio
loop sending raw HTTP/1.1 back to back, for ``--seconds`` per rep; targets alternate A/B, B/A
across ``--reps`` reps (>= 3) and the median rep is reported, so drift on a shared machine hits
both sides alike. The client is not httpx: 8 httpx threads topped out at ~800 req/s against
BOTH targets (the GIL-bound client was the ceiling, the ratio read 1.0 and meant nothing).
The client, the sidecar and etcd share the machine's CPUs, printed with the figures.

Standalone: it starts its own etcd (``tests/harness.EtcdMember``) and sidecar process::

    python bench/sidecar_bench.py [--groups 1000] [--concurrency 8] [--seconds 3] [--reps 3]

Writes ``bench/results/sidecar.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]

from _common import bulk_put, connect_to, group_name, group_value, pct  # noqa: E402
from harness import EtcdMember, free_port  # noqa: E402

from rmwatch.store.keys import KeyLayout  # noqa: E402

API = "/resource-manager/api/v1"
ROOT_PREFIX = "/sidecar/"


@dataclass(frozen=True)
class Rep:
    """One timed run against one target."""

    target: str
    rep: int
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class Target:
    """Where to send, and the request bytes to send (one per key, rotated)."""

    name: str
    host: str
    port: int
    requests: list[bytes]
    expect: bytes  # the answer body must contain this


def sidecar_target(port: int, groups: int) -> Target:
    """GETs of every seeded group from the sidecar."""
    requests = [
        f"GET {API}/config/group/{group_name(n)} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
        for n in range(groups)
    ]
    return Target("sidecar", "127.0.0.1", port, requests, b'"name":"tenant-')


def etcd_target(port: int, layout: KeyLayout, groups: int) -> Target:
    """Ranges of the same groups' settings keys through etcd's JSON gateway."""
    requests = []
    for n in range(groups):
        key = base64.b64encode(layout.settings(group_name(n)).encode()).decode()
        body = json.dumps({"key": key}).encode()
        head = (
            "POST /v3/kv/range HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    return Target("etcd_gateway", "127.0.0.1", port, requests, b'"kvs"')


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if b"content-length" in headers:
        return status, await reader.readexactly(int(headers[b"content-length"]))
    body = b""
    while True:  # chunked
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return status, body
        body += chunk[:-2]


async def _load(target: Target, concurrency: int, seconds: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    stop = False

    async def connection(slot: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(target.host, target.port)
        i = slot
        try:
            while not stop:
                request = target.requests[i % len(target.requests)]
                began = time.perf_counter()
                writer.write(request)
                status, body = await _read_response(reader)
                latencies.append(time.perf_counter() - began)
                if status != 200 or target.expect not in body:
                    errors += 1
                i += concurrency
        finally:
            writer.close()

    tasks = [asyncio.create_task(connection(n)) for n in range(concurrency)]
    await asyncio.sleep(seconds)
    stop = True
    await asyncio.gather(*tasks)
    return latencies, errors


def run_load(target: Target, *, concurrency: int, seconds: float, rep: int = 0) -> Rep:
    """``concurrency`` keep-alive connections sending back to back for ``seconds``."""
    began = time.perf_counter()
    latencies, errors = asyncio.run(_load(target, concurrency, seconds))
    elapsed = time.perf_counter() - began
    count = len(latencies)
    return Rep(
        target=target.name,
        rep=rep,
        requests=count,
        errors=errors,
        seconds=round(elapsed, 3),
        rps=round(count / elapsed, 1),
        p50_ms=round(pct(latencies, 0.50) * 1000, 3),
        p99_ms=round(pct(latencies, 0.99) * 1000, 3),
    )


def start_sidecar(endpoint: str, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """``rmwatch replica`` as a process of its own, as an operator runs it."""
    command = [sys.executable, "-m", "rmwatch", "replica", "--etcd", endpoint,
               "--listen", f"127.0.0.1:{port}", "--root-prefix", ROOT_PREFIX,
               "--no-forward", "--drain-seconds", "0"]  # fmt: skip
    with log_path.open("wb") as log_file:
        return subprocess.Popen(command, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)


def wait_ready(base_url: str, timeout: float = 30.0) -> None:
    """Poll ``/ready`` until 200."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base_url, timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                if client.get("/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise TimeoutError(f"sidecar at {base_url} not ready after {timeout}s")


def median_of(reps: list[Rep], field: str) -> float:
    """Median of one field over reps."""
    return float(statistics.median(getattr(r, field) for r in reps))


def measure_on(endpoint: str, client_port: int, *, groups: int, concurrency: int,
               seconds: float, reps: int, warmup: float = 0.5,
               log: Callable[[str], None] = print) -> list[Rep]:  # fmt: skip
    """Seed ``groups`` groups under ``ROOT_PREFIX`` of the etcd at ``endpoint``, start the
    sidecar process, run the alternating reps (sidecar, etcd; etcd, sidecar; ...)."""
    layout = KeyLayout(ROOT_PREFIX)
    out: list[Rep] = []
    client = connect_to(endpoint)
    try:  # realistic ~300 B groups (bench/_common.py), as the replica benchmark uses
        bulk_put(client, [(layout.settings(group_name(n)), group_value(n))
                          for n in range(groups)])  # fmt: skip
    finally:
        client.close()
    port = free_port()
    sidecar_url = f"http://127.0.0.1:{port}"
    log_path = Path(tempfile.gettempdir()) / f"rmwatch-bench-sidecar-{port}.log"
    proc = start_sidecar(endpoint, port, log_path)
    try:
        wait_ready(sidecar_url)
        log(f"  sidecar pid {proc.pid} on {sidecar_url}, log {log_path}")
        targets = {
            "sidecar": sidecar_target(port, groups),
            "etcd_gateway": etcd_target(client_port, layout, groups),
        }
        for target in targets.values():  # warm-up: connections, caches, allocator
            run_load(target, concurrency=concurrency, seconds=warmup)
        for rep in range(reps):
            order = list(targets) if rep % 2 == 0 else list(reversed(targets))
            for name in order:
                result = run_load(targets[name], concurrency=concurrency, seconds=seconds,
                                  rep=rep)  # fmt: skip
                out.append(result)
                log(f"  P5 rep {rep + 1} {name:13s} {result.rps:9.1f} req/s  "
                    f"p50 {result.p50_ms:7.3f} ms  p99 {result.p99_ms:7.3f} ms  "
                    f"errors {result.errors}")  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return out


def summarize(reps: list[Rep]) -> dict[str, Any]:
    """Medians per target, and the per-rep ratios sidecar/etcd (median, min, max)."""
    side = [r for r in reps if r.target == "sidecar"]
    etcd = [r for r in reps if r.target == "etcd_gateway"]

    def ratios(field: str) -> dict[str, Any]:
        values = [getattr(a, field) / getattr(b, field) for a, b in zip(side, etcd, strict=True)]
        return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
                "max": round(max(values), 3), "samples": [round(v, 3) for v in values]}  # fmt: skip

    return {
        "median": {
            name: {
                "rps": median_of(mine, "rps"),
                "p50_ms": median_of(mine, "p50_ms"),
                "p99_ms": median_of(mine, "p99_ms"),
                "errors": sum(r.errors for r in mine),
            }
            for name, mine in (("sidecar", side), ("etcd_gateway", etcd))
        },
        "rps_ratio": ratios("rps"),
        "p99_ratio": ratios("p99_ms"),
        "reps": [asdict(r) for r in reps],
    }


def measure(args: argparse.Namespace) -> list[Rep]:
    """Start etcd, then ``measure_on`` it."""
    with EtcdMember() as member:
        return measure_on(member.endpoint, member.client_port, groups=args.groups,
                          concurrency=args.concurrency, seconds=args.seconds,
                          reps=args.reps)  # fmt: skip


def report(args: argparse.Namespace, reps: list[Rep]) -> None:
    """Medians and ratios: written to ``args.out`` as JSON and printed as a table."""
    summary: dict[str, dict[str, float]] = {}
    for name in ("sidecar", "etcd_gateway"):
        mine = [r for r in reps if r.target == name]
        summary[name] = {
            "rps": median_of(mine, "rps"),
            "p50_ms": median_of(mine, "p50_ms"),
            "p99_ms": median_of(mine, "p99_ms"),
            "errors": float(sum(r.errors for r in mine)),
        }
    side, etcd = summary["sidecar"], summary["etcd_gateway"]
    ratio = {
        "rps_sidecar_over_etcd": round(side["rps"] / etcd["rps"], 3),
        "p99_sidecar_over_etcd": round(side["p99_ms"] / etcd["p99_ms"], 3),
    }
    result = {
        "benchmark": "sidecar GET config/group/{name} vs etcd POST /v3/kv/range",
        "params": {
            "groups": args.groups,
            "concurrency": args.concurrency,
            "seconds_per_rep": args.seconds,
            "reps": args.reps,
            "client": "one asyncio process, raw HTTP/1.1 keep-alive connections",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "median": summary,
        "ratio": ratio,
        "reps": [asdict(r) for r in reps],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(
        f"{'target':14s} {'req/s':>10s} {'p50 ms':>9s} {'p99 ms':>9s} {'errors':>7s}"
        f"   (median of {args.reps} reps, {args.concurrency} connections, {os.cpu_count()} CPUs)"
    )
    for name, row in summary.items():
        print(f"{name:14s} {row['rps']:10.1f} {row['p50_ms']:9.3f} {row['p99_ms']:9.3f} "
              f"{int(row['errors']):7d}")  # fmt: skip
    print(
        f"sidecar/etcd: req/s x{ratio['rps_sidecar_over_etcd']}, "
        f"p99 x{ratio['p99_sidecar_over_etcd']}   -> {args.out}"
    )


def main(argv: list[str] | None = None) -> int:
    """Parse the options, measure, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sidecar.json")
    args = parser.parse_args(argv)
    if args.reps < 3:
        parser.error("--reps must be at least 3 (the median of fewer is not a median)")
    report(args, measure(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
