"""P5, sidecar HTTP reads as a user meets them: ``wrk`` against ``rmwatch replica`` and against
etcd's own HTTP gateway, the same group's value fetched on both sides, same etcd, same run.

- sidecar: ``GET /resource-manager/api/v1/config/group/{name}``, answered from the replica's
  memory by ``rmwatch replica`` running as its own process (as deployed);
- etcd: ``POST /v3/kv/range`` with the base64 settings key (etcd's grpc-gateway on its client
  URL), a linearizable read of the same key.

The load tool is ``wrk`` (Debian package ``wrk``; ``./scripts/bench`` installs it where apt-get
can), a process of its own: one thread, 8 keep-alive connections, a Lua script (``WRK_SCRIPT``)
walking a seeded shuffle of the names, and reporting requests, p50, p99 and max from wrk's own
latency histogram. Without ``wrk`` the same loads run on the lean asyncio client below, and the
result says so (``load_tool``). Three measurements:

- **pass**: right after the sidecar is ready, every one of the ``GROUPS`` groups read once
  (the first read a group ever gets): the slowest request (goal: none over 50 ms) and the
  sidecar's RSS after it, next to its RSS when ready. One pass per run: a second is no
  longer a first read.
- **spread**: reads spread over all ``GROUPS`` groups, 3 s a rep;
- **hot**: reads over a hot set of ``HOT`` groups, 3 s a rep.

spread and hot alternate with their gateway twins (rotated A/B/C/D), at least 5 reps; each
figure is the median [min-max] of per-rep ratios. Client, sidecar and etcd share the CPUs.

Goals: req/s sidecar / gateway >= 2x (spread) and >= 3x (hot); p99 <= 0.5x for both.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench._common import bulk_put, connect_to, free_port, group_name, group_value, log, spawn, stop
from bench._stats import Row, alternated, goal_row, pct, ratio_summary
from rmwatch.store import codec
from rmwatch.store.keys import KeyLayout

API = "/resource-manager/api/v1"
ROOT_PREFIX = "/sidecar/"
GROUPS = (2000, 100_000)  # smoke, full: every group of the replica is read
HOT = (200, 2000)  # the hot set's size: smoke, full
CONNECTIONS = 8
SECONDS = (0.5, 3.0)  # per rep: smoke, full
WARMUP = (0.3, 1.0)  # seconds per target before the first rep: smoke, full
MIN_REPS = (2, 5)  # smoke, full
SPREAD_GOAL = 2.0
HOT_GOAL = 3.0
P99_GOAL = 0.5
PASS_MAX_MS = 50.0
PASS_TIMEOUT = 300.0  # seconds: a pass of 100k reads takes ~10-40 s on 2 loaded CPUs
SEED = 14

# wrk's Lua script. Each line of the requests file is METHOD \t PATH \t BODY (the body may be
# empty); requests go out in the file's order, wrapping around. With "pass" as the second
# argument, the script counts answers and prints PASS_DONE once every line was answered, so
# the bench can stop wrk (SIGINT makes wrk print its summary and run done()). done() prints
# one JSON line from wrk's own histogram (microseconds).
WRK_SCRIPT = r"""
local reqs, n, i, answered, mode = {}, 0, 0, 0, "loop"
function init(args)
  for line in io.lines(args[1]) do
    local method, path, body = line:match("^(%u+)\t([^\t]*)\t(.*)$")
    local headers = nil
    if body == "" then body = nil else headers = {["Content-Type"] = "application/json"} end
    n = n + 1
    reqs[n] = wrk.format(method, path, headers, body)
  end
  mode = args[2] or "loop"
  if mode == "pass" then
    response = function(status, headers, body)
      answered = answered + 1
      if answered == n then io.stdout:write("PASS_DONE\n"); io.stdout:flush() end
    end
  end
end
function request()
  i = i + 1
  if i > n then i = 1 end
  return reqs[i]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.stdout:write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"errors":%d,"p50_us":%d,"p99_us":%d,' ..
    '"max_us":%d}\n', summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


@dataclass(frozen=True)
class Rep:
    """One timed load against one target."""

    target: str
    rep: int
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class Target:
    """Where to send, and the requests to send in order: (method, path, body)."""

    name: str
    port: int
    requests: list[tuple[str, str, bytes]]


def sidecar_requests(names: list[str]) -> list[tuple[str, str, bytes]]:
    """GETs of ``names`` from the sidecar."""
    return [("GET", f"{API}/config/group/{name}", b"") for name in names]


def gateway_requests(layout: KeyLayout, names: list[str]) -> list[tuple[str, str, bytes]]:
    """Ranges of the same groups' settings keys through etcd's JSON gateway."""
    out = []
    for name in names:
        key = base64.b64encode(layout.settings(name).encode()).decode()
        out.append(("POST", "/v3/kv/range", json.dumps({"key": key}).encode()))
    return out


# ---- the load tools --------------------------------------------------------------------------


class Wrk:
    """``wrk`` driven with ``WRK_SCRIPT``: a requests file per target, written once."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.script = workdir / "p5.lua"
        self.script.write_text(WRK_SCRIPT)
        self.files: dict[str, Path] = {}

    def _file(self, target: Target) -> Path:
        if target.name not in self.files:
            path = self.workdir / f"{target.name}.requests"
            path.write_text("".join(f"{m}\t{p}\t{b.decode()}\n" for m, p, b in target.requests))
            self.files[target.name] = path
        return self.files[target.name]

    def _command(self, target: Target, seconds: float, mode: str) -> list[str]:
        return [self.binary, "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s",
                "--timeout", "10s", "-s", str(self.script), f"http://127.0.0.1:{target.port}",
                "--", str(self._file(target)), mode]  # fmt: skip

    def load(self, target: Target, seconds: float, rep: int) -> Rep:
        """``CONNECTIONS`` connections sending back to back for ``seconds``."""
        out = subprocess.run(
            self._command(target, seconds, "loop"),
            check=True,
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        ).stdout
        return _wrk_rep(target.name, rep, out)

    def one_pass(self, target: Target) -> Rep:
        """Every request of ``target`` answered once, then wrk stopped (SIGINT)."""
        proc = subprocess.Popen(self._command(target, PASS_TIMEOUT, "pass"),
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("PASS_DONE"):
                proc.send_signal(signal.SIGINT)
        proc.wait(60)
        return _wrk_rep(target.name, 0, "".join(lines))


def _wrk_rep(name: str, rep: int, output: str) -> Rep:
    for line in output.splitlines():
        if line.startswith("WRKJSON "):
            d = json.loads(line[len("WRKJSON ") :])
            seconds = d["duration_us"] / 1e6
            return Rep(target=name, rep=rep, requests=d["requests"], errors=d["errors"],
                       seconds=round(seconds, 3), rps=round(d["requests"] / seconds, 1),
                       p50_ms=d["p50_us"] / 1000, p99_ms=d["p99_us"] / 1000,
                       max_ms=d["max_us"] / 1000)  # fmt: skip
    raise RuntimeError(f"wrk printed no summary:\n{output[-2000:]}")


class AsyncClient:
    """The fallback load tool without ``wrk``: keep-alive raw HTTP/1.1 on one asyncio loop."""

    def load(self, target: Target, seconds: float, rep: int) -> Rep:
        """``CONNECTIONS`` connections sending back to back for ``seconds``."""
        return self._run(target, rep, seconds=seconds)

    def one_pass(self, target: Target) -> Rep:
        """Every request of ``target`` answered once."""
        return self._run(target, 0, seconds=None)

    def _run(self, target: Target, rep: int, *, seconds: float | None) -> Rep:
        began = time.perf_counter()
        latencies, errors = asyncio.run(_async_load(target, seconds))
        elapsed = time.perf_counter() - began
        return Rep(target=target.name, rep=rep, requests=len(latencies), errors=errors,
                   seconds=round(elapsed, 3), rps=round(len(latencies) / elapsed, 1),
                   p50_ms=round(pct(latencies, 0.50) * 1000, 3),
                   p99_ms=round(pct(latencies, 0.99) * 1000, 3),
                   max_ms=round(max(latencies, default=0.0) * 1000, 3))  # fmt: skip


def _raw(method: str, path: str, body: bytes) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Status of one HTTP/1.1 response (Content-Length or chunked), its body read."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is not None:
        await reader.readexactly(length)
        return status
    while True:  # chunked
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        await reader.readexactly(size + 2)
        if size == 0:
            return status


async def _async_load(target: Target, seconds: float | None) -> tuple[list[float], int]:
    requests = [_raw(*r) for r in target.requests]
    latencies: list[float] = []
    errors = 0
    next_index = 0
    deadline = None if seconds is None else time.perf_counter() + seconds

    async def connection() -> None:
        nonlocal errors, next_index
        reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
        try:
            while deadline is None or time.perf_counter() < deadline:
                if deadline is None and next_index >= len(requests):
                    return
                request = requests[next_index % len(requests)]
                next_index += 1
                began = time.perf_counter()
                writer.write(request)
                status = await _read_response(reader)
                latencies.append(time.perf_counter() - began)
                errors += status != 200
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    return latencies, errors


LoadTool = Wrk | AsyncClient


# ---- the measurement -------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    """The resident set of process ``pid`` (VmRSS), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def wait_ready(base_url: str, timeout: float = 120.0) -> None:
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


def check_same_value(sidecar_port: int, gateway_port: int, layout: KeyLayout,
                     names: list[str]) -> None:  # fmt: skip
    """Both targets answer the same group for ``names`` (checked before timing, untimed)."""
    with httpx.Client(timeout=5) as client:
        for name in names:
            mine = client.get(f"http://127.0.0.1:{sidecar_port}{API}/config/group/{name}")
            key = layout.settings(name)
            raw = client.post(f"http://127.0.0.1:{gateway_port}/v3/kv/range",
                              json={"key": base64.b64encode(key.encode()).decode()})  # fmt: skip
            value = base64.b64decode(raw.json()["kvs"][0]["value"])
            group = codec.decode_settings(key, value)
            assert mine.status_code == 200, mine.text
            assert mine.json()["name"] == group.name == name, (mine.text, group)


def measure(endpoint: str, client_port: int, *, reps: int, smoke: bool) -> dict[str, Any]:
    """Seed the groups, start the sidecar, run the pass, then the alternating reps."""
    size = 0 if smoke else 1
    groups, hot, seconds = GROUPS[size], HOT[size], SECONDS[size]
    layout = KeyLayout(ROOT_PREFIX)
    names = [group_name(n) for n in range(groups)]
    client = connect_to(endpoint)
    try:  # the realistic ~300 B groups the replica figures use
        t0 = time.perf_counter()
        bulk_put(client, [(layout.settings(names[n]), group_value(n)) for n in range(groups)])
        log(f"  {groups} groups under {ROOT_PREFIX} in {time.perf_counter() - t0:.1f}s")
    finally:
        client.close()
    rng = random.Random(SEED)
    spread = rng.sample(names, len(names))  # every group, in a seeded shuffle
    hot_set = rng.sample(names, hot)
    wrk = shutil.which("wrk")
    workdir = Path(tempfile.mkdtemp(prefix="rmwatch-bench-p5-"))
    tool: LoadTool = Wrk(wrk, workdir) if wrk else AsyncClient()
    if not wrk:
        log("  wrk not found: the asyncio client loads instead (apt-get install wrk)")
    port = free_port()
    log_path = workdir / "sidecar.log"
    proc = spawn(["replica", "--etcd", endpoint, "--listen", f"127.0.0.1:{port}",
                  "--root-prefix", ROOT_PREFIX, "--no-forward", "--drain-seconds", "0"],
                 log_path)  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}")
        ready_rss = rss_mib(proc.pid)
        log(f"  sidecar pid {proc.pid} on :{port}, RSS {ready_rss} MiB when ready, log {log_path}")
        first = Target("sidecar_pass", port, sidecar_requests(spread))
        one_pass = tool.one_pass(first)
        pass_rss = rss_mib(proc.pid)
        log(f"  P5 pass: {one_pass.requests} first reads, {one_pass.rps:.0f} req/s, p99 "
            f"{one_pass.p99_ms:.2f} ms, max {one_pass.max_ms:.2f} ms, errors "
            f"{one_pass.errors}; RSS {pass_rss} MiB")  # fmt: skip
        check_same_value(port, client_port, layout, spread[:20])
        targets = {
            "sidecar_spread": Target("sidecar_spread", port, sidecar_requests(spread)),
            "gateway_spread": Target("gateway_spread", client_port,
                                     gateway_requests(layout, spread)),
            "sidecar_hot": Target("sidecar_hot", port, sidecar_requests(hot_set)),
            "gateway_hot": Target("gateway_hot", client_port, gateway_requests(layout, hot_set)),
        }  # fmt: skip
        for target in targets.values():  # warm-up: connections, caches, allocator
            tool.load(target, WARMUP[size], -1)
        out: list[Rep] = []

        def variant(name: str) -> Callable[[int], Rep]:
            def one(rep: int) -> Rep:
                result = tool.load(targets[name], seconds, rep)
                out.append(result)
                log(f"  P5 rep {rep + 1} {name:14s} {result.rps:9.1f} req/s  "
                    f"p50 {result.p50_ms:7.3f} ms  p99 {result.p99_ms:7.3f} ms  "
                    f"max {result.max_ms:7.2f} ms  errors {result.errors}")  # fmt: skip
                return result

            return one

        alternated(reps, {name: variant(name) for name in targets})
        end_rss = rss_mib(proc.pid)
    finally:
        stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "groups": groups,
        "hot": hot,
        "connections": CONNECTIONS,
        "load_tool": "wrk" if wrk else "asyncio client (wrk not installed)",
        "pass": {
            **asdict(one_pass),
            "rss_ready_mib": ready_rss,
            "rss_after_mib": pass_rss,
            "rss_end_mib": end_rss,
        },  # fmt: skip
        "reps": [asdict(r) for r in out],
    }


def summarize(measured: dict[str, Any]) -> dict[str, Any]:
    """Medians per target, and the per-rep ratios sidecar/gateway (median, min, max)."""
    reps = measured["reps"]

    def of(target: str) -> list[dict[str, Any]]:
        return [r for r in reps if r["target"] == target]

    def ratios(case: str, field: str) -> dict[str, Any]:
        return ratio_summary([r[field] for r in of(f"sidecar_{case}")],
                             [r[field] for r in of(f"gateway_{case}")])  # fmt: skip

    medians = {
        target: {field: float(statistics.median(r[field] for r in of(target)))
                 for field in ("rps", "p50_ms", "p99_ms", "max_ms")}
        | {"errors": sum(r["errors"] for r in of(target))}
        for target in ("sidecar_spread", "gateway_spread", "sidecar_hot", "gateway_hot")
    }  # fmt: skip
    return {
        **measured,
        "median": medians,
        "spread_rps_ratio": ratios("spread", "rps"),
        "spread_p99_ratio": ratios("spread", "p99_ms"),
        "hot_rps_ratio": ratios("hot", "rps"),
        "hot_p99_ratio": ratios("hot", "p99_ms"),
    }


def run(endpoint: str, client_port: int, *, reps: int, smoke: bool) -> dict[str, Any]:
    """P5 against the etcd at ``endpoint`` (its gateway on ``client_port``)."""
    reps = max(reps, MIN_REPS[0 if smoke else 1])
    return summarize(measure(endpoint, client_port, reps=reps, smoke=smoke))


def rows(pid: str, result: dict[str, Any]) -> list[Row]:
    """The table's lines: throughput and tail latency, spread and hot; the first pass."""
    one = result["pass"]
    first = {"median": one["max_ms"], "min": one["max_ms"], "max": one["max_ms"]}
    return [
        goal_row(pid, "sidecar GET req/s / etcd gateway, spread over all groups",
                 result["spread_rps_ratio"], ">=", SPREAD_GOAL),
        goal_row(pid, "sidecar GET p99 / etcd gateway p99, spread", result["spread_p99_ratio"],
                 "<=", P99_GOAL),
        goal_row(pid, "sidecar GET req/s / etcd gateway, hot set", result["hot_rps_ratio"],
                 ">=", HOT_GOAL),
        goal_row(pid, "sidecar GET p99 / etcd gateway p99, hot set", result["hot_p99_ratio"],
                 "<=", P99_GOAL),
        {**goal_row(pid, "first pass over every group: slowest request (ms, absolute)", first,
                    "<=", PASS_MAX_MS, digits=1), "goal": f"<= {PASS_MAX_MS:g} ms"},
    ]  # fmt: skip


def absolute(pid: str, result: dict[str, Any]) -> str:
    """Every target's req/s and latencies, and the first pass."""
    m, one = result["median"], result["pass"]
    parts = [
        f"{name} {m[name]['rps']:.0f} req/s p50 {m[name]['p50_ms']:.2f} p99 "
        f"{m[name]['p99_ms']:.2f} ms"
        for name in ("sidecar_spread", "gateway_spread", "sidecar_hot", "gateway_hot")
    ]
    return (f"{pid:<3} " + " | ".join(parts) + f" ({result['connections']} connections, "
            f"{result['load_tool']}, {result['groups']} groups, hot {result['hot']}) | first "
            f"pass {one['rps']:.0f} req/s max {one['max_ms']:.1f} ms, sidecar RSS "
            f"{one['rss_ready_mib']} MiB ready -> {one['rss_after_mib']} MiB after")  # fmt: skip
