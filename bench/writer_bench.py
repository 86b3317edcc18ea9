"""Writer throughput as a ratio to raw pyetcd transactions of the same shape, in one run (P8).

Run: ``python -m bench.writer_bench`` (starts its own etcd through tests/harness), or as part
of ``python -m bench`` (the whole suite).

Two write shapes, each measured three ways against one etcd:
- ``set_service_limit`` (a blind put): raw = ``txn(fence compares -> put)``;
  library = ``Writer.set_service_limit``; http = ``POST .../service-limit``.
- ``modify_group`` (read-modify-write): raw = ``get`` + ``txn(fence + mod_revision compare ->
  put)``; library = ``Writer.modify_group``; http = ``PUT config/group``.

raw and library run in this process (each under its own fenced leadership, root
``/wbench/lib/``). http is ``rmwatch writer`` as deployed: a process of its own (root
``/wbench/http/``, its per-write log to a file), driven by one keep-alive HTTP/1.1 socket
with the request bytes prepared beforehand (a lean client, as P5's: http.client's header
parsing alone cost ~0.1 ms of this process per write). An earlier version
served the app from a thread of this process and drove it with httpx: the client then shared
the GIL with the server and httpx alone cost ~0.4 ms a request, so the figure measured the
harness as much as the writer.

Variants alternate A/B/C within each repetition (the order rotates every repetition so no
variant always runs on a warmer etcd); the figure kept is the median of ``reps`` with the
min-max of the per-rep ratios.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))  # the harness (EtcdMember, make_client, free_port)

from harness import EtcdMember, etcd_version, free_port, make_client  # noqa: E402

from rmwatch.http.writer_app import PREFIX  # noqa: E402
from rmwatch.store import codec  # noqa: E402
from rmwatch.store.keys import KeyLayout  # noqa: E402
from rmwatch.store.leadership import Leadership  # noqa: E402
from rmwatch.store.models import (  # noqa: E402
    GroupRequestUnitSettings,
    ResourceGroup,
    TokenBucket,
    TokenLimitSettings,
)
from rmwatch.store.writer import Writer  # noqa: E402

OPS = 400  # writes per measurement: ~0.3-1 s each on a local fsync'd etcd
REPS = 5  # median of 5
RESULTS = ROOT / "bench" / "results" / "writer.json"
LIB_ROOT = "/wbench/lib/"
HTTP_ROOT = "/wbench/http/"


def group(fill: int) -> ResourceGroup:
    """The RU group the modify shape rewrites."""
    return ResourceGroup(
        name="bench",
        r_u_settings=GroupRequestUnitSettings(
            r_u=TokenBucket(settings=TokenLimitSettings(fill_rate=fill, burst_limit=-1))
        ),
        priority=8,
    )


class HttpWriter:
    """``rmwatch writer`` in a process of its own, and one keep-alive connection to it."""

    def __init__(self, endpoint: str) -> None:
        self.port = free_port()
        self.log_path = Path(tempfile.gettempdir()) / f"rmwatch-bench-writer-{self.port}.log"
        command = [sys.executable, "-m", "rmwatch", "writer", "--etcd", endpoint,
                   "--listen", f"127.0.0.1:{self.port}", "--root-prefix", HTTP_ROOT,
                   "--name", "bench-http"]  # fmt: skip
        with self.log_path.open("wb") as log_file:
            self.proc = subprocess.Popen(command, cwd=ROOT, stdout=log_file,
                                         stderr=subprocess.STDOUT)  # fmt: skip
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body = self.request("GET", "/health")
                if status == 200 and json.loads(body).get("leader"):
                    break
            except OSError:
                self.conn.close()
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError(f"the writer process never led; log: {self.log_path}")
            time.sleep(0.05)

        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """One request with http.client (setup and checks)."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        return response.status, response.read()

    @staticmethod
    def raw_request(method: str, path: str, body: bytes) -> bytes:
        """The bytes of one keep-alive HTTP/1.1 request (prepared before timing)."""
        head = (f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")  # fmt: skip
        return head.encode() + body

    def send(self, request: bytes) -> tuple[int, bytes]:
        """Send prepared request bytes on the raw keep-alive socket; (status, body). The
        measured loop uses this lean client (as P5's does) rather than http.client, whose
        per-response header parsing (email.parser) cost ~0.1 ms of this process's GIL."""
        self.sock.sendall(request)
        data = self.buffer
        while b"\r\n\r\n" not in data:
            data += self._recv()
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += self._recv()
        self.buffer = rest[length:]
        return status, rest[:length]

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the writer closed the connection")
        return chunk

    def close(self) -> None:
        self.conn.close()
        if hasattr(self, "sock"):
            self.sock.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def rate(fn: Callable[[int], Any], ops: int) -> float:
    """Writes per second of ``ops`` sequential calls ``fn(i)``."""
    start = time.perf_counter()
    for i in range(ops):
        fn(i)
    return ops / (time.perf_counter() - start)


def measure(shapes: dict[str, dict[str, Callable[[int], Any]]], *, ops: int, reps: int,
            warmup: int = 30, log: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    """Median writes/s of every variant of every shape, A/B/C-alternated, with ratios."""
    results: dict[str, Any] = {}
    for shape, variants in shapes.items():
        for fn in variants.values():  # warm-up: connections, caches
            for i in range(warmup):
                fn(i)
        samples: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for rep in range(reps):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for name in order:
                samples[name].append(rate(variants[name], ops))
            log(f"  P8 {shape} rep {rep + 1}: "
                + " ".join(f"{n} {samples[n][-1]:.0f}/s" for n in names))  # fmt: skip
        raw = samples["raw_txn"]
        results[shape] = {
            name: {
                "writes_per_s": round(statistics.median(samples[name]), 1),
                "samples": [round(s, 1) for s in samples[name]],
                "ratio_to_raw": _ratio(samples[name], raw),
            }
            for name in names
        }
    return results


def _ratio(ours: list[float], base: list[float]) -> dict[str, Any]:
    ratios = [o / b for o, b in zip(ours, base, strict=True)]
    return {"median": round(statistics.median(ratios), 3), "min": round(min(ratios), 3),
            "max": round(max(ratios), 3), "samples": [round(r, 3) for r in ratios]}  # fmt: skip


def run(endpoint: str, *, ops: int = OPS, reps: int = REPS, warmup: int = 30,
        log: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    """P8 against the etcd at ``endpoint``: ``{"shapes": {...}, "method": ...}``."""
    import structlog  # noqa: PLC0415

    # Quiet the library's per-write JSON log here (the writer process logs to its file).
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    client = make_client([endpoint])
    layout = KeyLayout(LIB_ROOT)
    leadership = Leadership(client=client, layout=layout, name="bench",
                            address="http://127.0.0.1:9").start()  # fmt: skip
    server: HttpWriter | None = None
    try:
        assert leadership.wait_until_leader(10), "no leadership"
        writer = Writer(client=client, layout=layout, leadership=leadership)
        server = HttpWriter(endpoint)
        tx = client.transactions
        limit_key = layout.service_limit(1)
        group_key = layout.settings("bench")
        writer.add_group(group(1))
        status, body = server.request("POST", f"{PREFIX}/config/group",
                                      json.dumps(group(1).model_dump(mode="json",
                                                 exclude_none=True)).encode())  # fmt: skip
        assert status == 200, body
        count = max(ops, warmup)
        limit_path = f"{PREFIX}/config/keyspace/service-limit?keyspace_id=1"
        group_path = f"{PREFIX}/config/group"
        limit_requests = [
            server.raw_request("POST", limit_path, json.dumps({"service_limit": i}).encode())
            for i in range(count)
        ]
        modify_requests = [
            server.raw_request("PUT", group_path, json.dumps(
                group(i + 2).model_dump(mode="json", exclude_none=True)).encode())
            for i in range(count)
        ]  # fmt: skip

        def raw_limit(i: int) -> None:
            ok, _ = client.transaction(
                compare=leadership.fence_compares(),
                success=[tx.put(limit_key, codec.encode_service_limit(float(i)))],
                failure=[tx.get(leadership.key)],
            )
            assert ok

        def raw_modify(i: int) -> None:
            value, meta = client.get(group_key)
            wire = codec.encode_settings(group(i + 2), base=value)
            ok, _ = client.transaction(
                compare=[*leadership.fence_compares(), tx.mod(group_key) == meta.mod_revision],
                success=[tx.put(group_key, wire)],
                failure=[tx.get(leadership.key), tx.get(group_key)],
            )
            assert ok

        def http_limit(i: int) -> None:
            status, body = server.send(limit_requests[i])
            assert status == 200, body

        def http_modify(i: int) -> None:
            status, body = server.send(modify_requests[i])
            assert status == 200, body

        shapes: dict[str, dict[str, Callable[[int], Any]]] = {
            "set_service_limit": {
                "raw_txn": raw_limit,
                "library": lambda i: writer.set_service_limit(1, float(i)),
                "http": http_limit,
            },
            "modify_group": {
                "raw_txn": raw_modify,
                "library": lambda i: writer.modify_group(group(i + 2)),
                "http": http_modify,
            },
        }
        results = measure(shapes, ops=ops, reps=reps, warmup=warmup, log=log)
    finally:
        if server is not None:
            server.close()
        leadership.close()
        client.close()
    return {
        "ops_per_sample": ops,
        "reps": reps,
        "shapes": results,
        "method": "sequential writes, one at a time; raw/library in this process (library "
        "log quieted), http = `rmwatch writer` process (its log to a file) over one "
        "keep-alive raw-socket HTTP/1.1 connection, request bytes prepared beforehand",
    }


def main(argv: list[str] | None = None) -> int:
    """Start etcd, measure, print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=OPS)
    parser.add_argument("--reps", type=int, default=REPS)
    args = parser.parse_args(argv)
    with EtcdMember("bench") as member:
        out = run(member.endpoint, ops=args.ops, reps=args.reps)
        version = etcd_version(member.binary)
    meta = {"etcd": version, "python": platform.python_version(), "cpus": os.cpu_count()}
    print(f"{'shape':<20}{'variant':<10}{'writes/s':>10}{'ratio':>8}")
    for shape, variants_out in out["shapes"].items():
        for name, row in variants_out.items():
            print(f"{shape:<20}{name:<10}{row['writes_per_s']:>10.1f}"
                  f"{row['ratio_to_raw']['median']:>8.3f}")  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"meta": meta, **out}, indent=2) + "\n")
    print(f"written to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
