"""P5, sidecar HTTP reads: req/s and p99 of ``rmwatch replica`` against etcd's own HTTP gateway,
one group read per request, same etcd, same run.

- sidecar: ``GET /resource-manager/api/v1/config/group/{name}``, answered from the replica's
  memory by ``rmwatch replica`` running as its own process (as deployed);
- etcd: ``POST /v3/kv/range`` with the base64 key (etcd's grpc-gateway on its client URL), a
  linearizable read of the same key from the same etcd.

Both are driven by the same client: 8 keep-alive connections on one asyncio loop sending raw
HTTP/1.1 back to back, rotating over 1000 seeded groups, for 3 s per rep; the targets alternate
A/B, B/A over the reps (at least 5). The client is deliberately lean (bench/README.md says what
a heavier one measured instead). Client, sidecar and etcd share the machine's CPUs.

Goals: sidecar req/s >= 1x the gateway's, p99 <= 1x.
"""

from __future__ import annotations

import asyncio
import base64
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench._common import bulk_put, connect_to, free_port, group_name, group_value, log, spawn, stop
from bench._stats import Row, alternated, goal_row, pct, ratio_summary
from rmwatch.store.keys import KeyLayout

API = "/resource-manager/api/v1"
ROOT_PREFIX = "/sidecar/"
GROUPS = 1000
CONCURRENCY = 8
SECONDS = (0.3, 3.0)  # per rep: smoke, full
WARMUP = (0.1, 0.5)  # seconds per target before the first rep: smoke, full
MIN_REPS = (2, 5)  # smoke, full
GOAL = 1.0


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
    stop_sending = False

    async def connection(slot: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(target.host, target.port)
        i = slot
        try:
            while not stop_sending:
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
    stop_sending = True
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


def measure(endpoint: str, client_port: int, *, reps: int, smoke: bool) -> list[Rep]:
    """Seed the groups under ``ROOT_PREFIX``, start the sidecar process, run the alternating
    reps; every rep of both targets, in the order they ran."""
    seconds = SECONDS[0 if smoke else 1]
    layout = KeyLayout(ROOT_PREFIX)
    out: list[Rep] = []
    client = connect_to(endpoint)
    try:  # the realistic ~300 B groups the replica figures use
        bulk_put(client, [(layout.settings(group_name(n)), group_value(n))
                          for n in range(GROUPS)])  # fmt: skip
    finally:
        client.close()
    port = free_port()
    sidecar_url = f"http://127.0.0.1:{port}"
    log_path = Path(tempfile.gettempdir()) / f"rmwatch-bench-sidecar-{port}.log"
    proc = spawn(["replica", "--etcd", endpoint, "--listen", f"127.0.0.1:{port}",
                  "--root-prefix", ROOT_PREFIX, "--no-forward", "--drain-seconds", "0"],
                 log_path)  # fmt: skip
    try:
        wait_ready(sidecar_url)
        log(f"  sidecar pid {proc.pid} on {sidecar_url}, log {log_path}")
        targets = {
            "sidecar": sidecar_target(port, GROUPS),
            "etcd_gateway": etcd_target(client_port, layout, GROUPS),
        }
        for target in targets.values():  # warm-up: connections, caches, allocator
            run_load(target, concurrency=CONCURRENCY, seconds=WARMUP[0 if smoke else 1])

        def variant(name: str) -> Callable[[int], Rep]:
            def one(rep: int) -> Rep:
                result = run_load(targets[name], concurrency=CONCURRENCY, seconds=seconds,
                                  rep=rep)  # fmt: skip
                out.append(result)
                log(f"  P5 rep {rep + 1} {name:13s} {result.rps:9.1f} req/s  "
                    f"p50 {result.p50_ms:7.3f} ms  p99 {result.p99_ms:7.3f} ms  "
                    f"errors {result.errors}")  # fmt: skip
                return result

            return one

        alternated(reps, {name: variant(name) for name in targets})
    finally:
        stop(proc)
    return out


def summarize(reps: list[Rep]) -> dict[str, Any]:
    """Medians per target, and the per-rep ratios sidecar/etcd (median, min, max)."""
    side = [r for r in reps if r.target == "sidecar"]
    etcd = [r for r in reps if r.target == "etcd_gateway"]

    def median_of(mine: list[Rep], field: str) -> float:
        return float(statistics.median(getattr(r, field) for r in mine))

    def ratios(field: str) -> dict[str, Any]:
        return ratio_summary([getattr(a, field) for a in side], [getattr(b, field) for b in etcd])

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


def run(endpoint: str, client_port: int, *, reps: int, smoke: bool) -> dict[str, Any]:
    """P5 against the etcd at ``endpoint`` (its gateway on ``client_port``)."""
    reps = max(reps, MIN_REPS[0 if smoke else 1])
    return summarize(measure(endpoint, client_port, reps=reps, smoke=smoke))


def rows(pid: str, result: dict[str, Any]) -> list[Row]:
    """The table's lines: throughput and tail latency."""
    return [
        goal_row(pid, "sidecar GET req/s / etcd gateway /v3/kv/range", result["rps_ratio"], ">=",
                 GOAL),
        goal_row(pid, "sidecar GET p99 / etcd gateway p99", result["p99_ratio"], "<=", GOAL),
    ]  # fmt: skip


def absolute(pid: str, result: dict[str, Any]) -> str:
    """Both targets' req/s and latencies."""
    s, e = result["median"]["sidecar"], result["median"]["etcd_gateway"]
    return (f"{pid:<3} sidecar {s['rps']:.0f} req/s p50 {s['p50_ms']:.2f} p99 "
            f"{s['p99_ms']:.2f} ms | etcd gateway {e['rps']:.0f} req/s p50 {e['p50_ms']:.2f} "
            f"p99 {e['p99_ms']:.2f} ms ({CONCURRENCY} connections)")  # fmt: skip
