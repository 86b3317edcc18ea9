"""P8, writer throughput: sequential writes per second of the writer library and of the writer's
HTTP API, against raw pyetcd transactions of the same shape.

Two write shapes, each measured three ways against one etcd:

- ``set_service_limit`` (a blind put): raw = ``txn(fence compares -> put)``;
  library = ``Writer.set_service_limit``; http = ``POST .../service-limit``.
- ``modify_group`` (read-modify-write): raw = ``get`` + ``txn(fence + mod_revision compare ->
  put)``; library = ``Writer.modify_group``; http = ``PUT config/group``.

raw and library run in this process, each under its own fenced leadership (root
``/wbench/lib/``). http is ``rmwatch writer`` as deployed: a process of its own (root
``/wbench/http/``, its per-write log to a file), driven over one keep-alive HTTP/1.1 socket
with the request bytes prepared beforehand, so the figure measures the writer, not the client.
The three variants rotate within each rep (no variant always runs on a warmer etcd).

Goals: library >= 0.8x raw, HTTP >= 0.5x raw, for both shapes.
"""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._common import free_port, log, make_client, spawn, stop
from bench._stats import Row, alternated, goal_row, ratio_summary
from rmwatch.http.writer_app import PREFIX
from rmwatch.store import codec
from rmwatch.store.keys import KeyLayout
from rmwatch.store.leadership import Leadership
from rmwatch.store.models import (
    GroupRequestUnitSettings,
    ResourceGroup,
    TokenBucket,
    TokenLimitSettings,
)
from rmwatch.store.writer import Writer

OPS = (20, 400)  # writes per sample (smoke, full): ~0.3-1 s each on a local fsync'd etcd
WARMUP = (5, 30)  # writes per variant before the first rep (smoke, full)
LIB_ROOT = "/wbench/lib/"
HTTP_ROOT = "/wbench/http/"
LIBRARY_GOAL = 0.8
HTTP_GOAL = 0.5
SHAPES = (("set_service_limit", "put"), ("modify_group", "read-modify-write"))


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
        self.proc = spawn(["writer", "--etcd", endpoint, "--listen", f"127.0.0.1:{self.port}",
                           "--root-prefix", HTTP_ROOT, "--name", "bench-http"],
                          self.log_path)  # fmt: skip
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
        """One request with http.client (setup and checks, never timed)."""
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
        """Send prepared request bytes on the raw keep-alive socket; (status, body). The timed
        loop uses this lean client (as P5's does) rather than http.client, whose per-response
        header parsing (email.parser) would bill this process's GIL to the writer."""
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
        """Close both connections and stop the process."""
        self.conn.close()
        if hasattr(self, "sock"):
            self.sock.close()
        stop(self.proc)


def rate(fn: Callable[[int], Any], ops: int) -> float:
    """Writes per second of ``ops`` sequential calls ``fn(i)``."""
    start = time.perf_counter()
    for i in range(ops):
        fn(i)
    return ops / (time.perf_counter() - start)


def measure(shapes: dict[str, dict[str, Callable[[int], Any]]], *, ops: int, reps: int,
            warmup: int) -> dict[str, Any]:  # fmt: skip
    """Median writes/s of every variant of every shape, rotated, with ratios to raw."""
    results: dict[str, Any] = {}
    for shape, variants in shapes.items():
        for fn in variants.values():  # warm-up: connections, caches
            for i in range(warmup):
                fn(i)

        def progress(rep: int, s: dict[str, list[float]], shape: str = shape) -> None:
            log(f"  P8 {shape} rep {rep + 1}: " + " ".join(f"{n} {s[n][-1]:.0f}/s" for n in s))

        def variant(fn: Callable[[int], Any]) -> Callable[[int], float]:
            return lambda _rep: rate(fn, ops)

        samples = alternated(reps, {name: variant(fn) for name, fn in variants.items()},
                             after_rep=progress)  # fmt: skip
        raw = samples["raw_txn"]
        results[shape] = {
            name: {
                "writes_per_s": round(statistics.median(mine), 1),
                "samples": [round(s, 1) for s in mine],
                "ratio_to_raw": ratio_summary(mine, raw),
            }
            for name, mine in samples.items()
        }
    return results


def run(endpoint: str, *, reps: int, smoke: bool) -> dict[str, Any]:
    """P8 against the etcd at ``endpoint``: ``{"shapes": {...}, "method": ...}``."""
    ops, warmup = OPS[0 if smoke else 1], WARMUP[0 if smoke else 1]
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
        http_writer = server

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
            status, body = http_writer.send(limit_requests[i])
            assert status == 200, body

        def http_modify(i: int) -> None:
            status, body = http_writer.send(modify_requests[i])
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
        results = measure(shapes, ops=ops, reps=reps, warmup=warmup)
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


def rows(pid: str, result: dict[str, Any]) -> list[Row]:
    """The table's lines: library and HTTP, for both shapes."""
    out = []
    for shape, label in SHAPES:
        variants = result["shapes"][shape]
        out += [
            goal_row(pid, f"writer library writes/s / raw txn ({label})",
                     variants["library"]["ratio_to_raw"], ">=", LIBRARY_GOAL),
            goal_row(pid, f"writer HTTP writes/s / raw txn ({label})",
                     variants["http"]["ratio_to_raw"], ">=", HTTP_GOAL),
        ]  # fmt: skip
    return out


def absolute(pid: str, result: dict[str, Any]) -> str:
    """Writes/s of every variant of both shapes."""
    parts = []
    for shape, label in SHAPES:
        v = result["shapes"][shape]
        parts.append(f"{label}: raw {v['raw_txn']['writes_per_s']:.0f}, library "
                     f"{v['library']['writes_per_s']:.0f}, HTTP {v['http']['writes_per_s']:.0f}"
                     " writes/s")  # fmt: skip
    return f"{pid:<3} " + " | ".join(parts)
