"""P8, writer throughput: writes per second of the writer library and of the writer's HTTP API,
against raw pyetcd transactions doing the same operation, at 1 and 8 connections.

Four operations, each measured three ways against one etcd:

- ``create`` (a new group): raw = ``txn(fence + create_revision == 0 -> put)``;
  library = ``Writer.add_group``; http = ``POST config/group``.
- ``modify`` (read-modify-write of a group): raw = ``get`` + ``txn(fence + mod_revision
  compare -> put)``; library = ``Writer.modify_group``; http = ``PUT config/group``.
- ``controller`` (read-modify-write of the controller config): raw = ``get`` + ``txn(fence +
  mod_revision compare -> put)``; library = ``Writer.update_controller``; http = ``POST
  config/controller``. One connection only: it is one key, and 8 writers of one key measure
  their conflicts, not the writer.
- ``service_limit`` (a blind put): raw = ``txn(fence -> put)``; library =
  ``Writer.set_service_limit``; http = ``POST config/keyspace/service-limit``.

raw and library run in this process on one shared client, each under its own fenced leadership
(root ``/wbench/lib/``); with 8 connections, 8 threads share it (gRPC multiplexes them on one
channel, as an application's threads would). http is ``rmwatch writer`` as deployed: a process
of its own (root ``/wbench/http/``, its per-write log to a file), driven over 1 or 8 keep-alive
raw-socket HTTP/1.1 connections (one thread each) with the request bytes prepared beforehand,
so the figure measures the writer, not the client. With 8 connections each connection writes
its own group (modify) or keyspace (service limit). The three variants rotate within each rep.

Goals: library >= 0.9x raw, HTTP >= 0.7x raw, for every operation and connection count.
"""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import tempfile
import threading
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
    ControllerConfig,
    GroupRequestUnitSettings,
    ResourceGroup,
    TokenBucket,
    TokenLimitSettings,
)
from rmwatch.store.writer import Writer

OPS = (16, 400)  # writes per sample (smoke, full): ~0.3-1 s each on a local fsync'd etcd
WARMUP = (8, 32)  # writes per variant before the first rep (smoke, full)
LIB_ROOT = "/wbench/lib/"
HTTP_ROOT = "/wbench/http/"
LIBRARY_GOAL = 0.9
HTTP_GOAL = 0.7
CONNECTIONS = (1, 8)
OPERATIONS = ("create", "modify", "controller", "service_limit")
LABELS = {
    "create": "group create",
    "modify": "group modify (read-modify-write)",
    "controller": "controller (read-modify-write)",
    "service_limit": "service limit (blind put)",
}

Op = Callable[[int, int], None]
"""One write: ``op(slot, k)`` with the connection's slot and a number unique to this write."""


def group(name: str, fill: int) -> ResourceGroup:
    """The RU group the create and modify operations write."""
    return ResourceGroup(
        name=name,
        r_u_settings=GroupRequestUnitSettings(
            r_u=TokenBucket(settings=TokenLimitSettings(fill_rate=fill, burst_limit=-1))
        ),
        priority=8,
    )


def group_body(name: str, fill: int) -> bytes:
    """``group(name, fill)`` as the HTTP body PD's clients send."""
    return json.dumps(group(name, fill).model_dump(mode="json", exclude_none=True)).encode()


class HttpWriter:
    """``rmwatch writer`` in a process of its own, and keep-alive connections to it."""

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
        self.sockets = [RawConnection(self.port) for _ in range(max(CONNECTIONS))]

    def reconnect(self) -> None:
        """Fresh keep-alive connections (untimed, before every sample): uvicorn closes a
        connection idle for 5 s, as the HTTP variant's are while the other variants run."""
        for sock in self.sockets:
            sock.close()
        self.sockets[:] = [RawConnection(self.port) for _ in range(max(CONNECTIONS))]

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """One request with http.client (setup and checks, never timed)."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        """Close every connection and stop the process."""
        self.conn.close()
        for sock in getattr(self, "sockets", ()):
            sock.close()
        stop(self.proc)


class RawConnection:
    """One keep-alive HTTP/1.1 socket sending prepared request bytes. The timed loops use this
    lean client (as P5's fallback does) rather than http.client, whose per-response header
    parsing (email.parser) would bill this process's GIL to the writer."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    @staticmethod
    def prepare(method: str, path: str, body: bytes) -> bytes:
        """The bytes of one keep-alive HTTP/1.1 request (prepared before timing)."""
        head = (f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")  # fmt: skip
        return head.encode() + body

    def send(self, request: bytes) -> tuple[int, bytes]:
        """Send prepared request bytes; (status, body)."""
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
        """Close the socket."""
        self.sock.close()


class Counter:
    """Hands out consecutive write numbers to a variant's samples (a create needs a new name
    every time, across reps)."""

    def __init__(self) -> None:
        self.next = 0

    def take(self, count: int) -> int:
        """The first of ``count`` fresh numbers."""
        first = self.next
        self.next += count
        return first


def rate(op: Op, ops: int, connections: int, counter: Counter,
         before: Callable[[], None]) -> float:  # fmt: skip
    """Writes per second of ``ops`` writes over ``connections`` slots (threads when > 1),
    each slot writing one at a time; ``before()`` runs first, untimed."""
    before()
    first = counter.take(ops)
    if connections == 1:
        start = time.perf_counter()
        for k in range(first, first + ops):
            op(0, k)
        return ops / (time.perf_counter() - start)
    errors: list[BaseException] = []
    barrier = threading.Barrier(connections + 1)

    def slot(s: int) -> None:
        barrier.wait()
        try:
            for k in range(first + s, first + ops, connections):
                op(s, k)
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    threads = [threading.Thread(target=slot, args=(s,)) for s in range(connections)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return ops / elapsed


def measure(cases: dict[str, dict[str, Op]], *, ops: int, reps: int, warmup: int,
            before: Callable[[], None]) -> dict[str, Any]:  # fmt: skip
    """Median writes/s of every variant of every case (``operation/connections``), rotated,
    with per-rep ratios to raw; ``before()`` runs ahead of every sample, untimed."""
    results: dict[str, Any] = {}
    counters: dict[str, Counter] = {}  # per operation and variant, across connection counts
    for case, variants in cases.items():
        operation, conns = case.rsplit("/", 1)
        connections = int(conns)
        for name in variants:
            counters.setdefault(f"{operation}/{name}", Counter())
        for name, op in variants.items():  # warm-up: connections, caches, threads
            rate(op, warmup, connections, counters[f"{operation}/{name}"], before)

        def progress(rep: int, s: dict[str, list[float]], case: str = case) -> None:
            log(f"  P8 {case} rep {rep + 1}: " + " ".join(f"{n} {s[n][-1]:.0f}/s" for n in s))

        def variant(op: Op, counter: Counter, connections: int) -> Callable[[int], float]:
            return lambda _rep: rate(op, ops, connections, counter, before)

        timed = {
            name: variant(op, counters[f"{operation}/{name}"], connections)
            for name, op in variants.items()
        }
        samples = alternated(reps, timed, after_rep=progress)
        raw = samples["raw_txn"]
        results[case] = {
            name: {
                "writes_per_s": round(statistics.median(mine), 1),
                "samples": [round(s, 1) for s in mine],
                "ratio_to_raw": ratio_summary(mine, raw),
            }
            for name, mine in samples.items()
        }
    return results


def run(endpoint: str, *, reps: int, smoke: bool) -> dict[str, Any]:
    """P8 against the etcd at ``endpoint``: ``{"cases": {...}, "method": ...}``."""
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
        cases = _cases(client, layout, leadership, writer, server,
                       count=len(CONNECTIONS) * (warmup + reps * ops))  # fmt: skip
        results = measure(cases, ops=ops, reps=reps, warmup=warmup, before=server.reconnect)
    finally:
        if server is not None:
            server.close()
        leadership.close()
        client.close()
    return {
        "ops_per_sample": ops,
        "reps": reps,
        "cases": results,
        "method": "writes one at a time per connection; raw/library in this process (library "
        "log quieted; 8 connections = 8 threads on one client), http = `rmwatch writer` "
        "process (its log to a file) over 1 or 8 keep-alive raw-socket HTTP/1.1 connections, "
        "request bytes prepared beforehand",
    }


def _cases(client: Any, layout: KeyLayout, leadership: Leadership, writer: Writer,
           server: HttpWriter, *, count: int) -> dict[str, dict[str, Op]]:  # fmt: skip
    """Every measured case (``operation/connections``) and its three variants."""
    tx = client.transactions
    slots = max(CONNECTIONS)
    for s in range(slots):  # the groups modify rewrites, one per connection, on both roots
        writer.add_group(group(f"bench-{s}", 1))
        status, body = server.request("POST", f"{PREFIX}/config/group", group_body(f"bench-{s}", 1))
        assert status == 200, body
    socks = server.sockets  # refreshed in place by ``reconnect``

    def prepared(method: str, path: str, body: Callable[[int], bytes]) -> list[bytes]:
        return [RawConnection.prepare(method, path, body(k)) for k in range(count)]

    group_path = f"{PREFIX}/config/group"
    create_http = prepared("POST", group_path, lambda k: group_body(f"http-{k}", 1000 + k))
    modify_http = [
        prepared("PUT", group_path, lambda k, s=s: group_body(f"bench-{s}", 2 + k))  # type: ignore[misc]
        for s in range(slots)
    ]
    controller_http = prepared(
        "POST",
        f"{PREFIX}/config/controller",
        lambda k: json.dumps({"read-base-cost": 0.25 + k * 1e-6}).encode(),
    )
    limit_http = [
        prepared(
            "POST",
            f"{PREFIX}/config/keyspace/service-limit?keyspace_id={s + 1}",
            lambda k: json.dumps({"service_limit": k}).encode(),
        )
        for s in range(slots)
    ]

    def http(request: Callable[[int, int], bytes]) -> Op:
        def op(s: int, k: int) -> None:
            status, body = socks[s].send(request(s, k))
            assert status == 200, body

        return op

    def raw_create(_s: int, k: int) -> None:
        key = layout.settings(f"raw-{k}")
        ok, _ = client.transaction(
            compare=[*leadership.fence_compares(), tx.create(key) == 0],
            success=[tx.put(key, codec.encode_settings(group(f"raw-{k}", 1000 + k), base=b""))],
            failure=[tx.get(leadership.key), tx.get(key)],
        )
        assert ok

    def raw_read_modify_write(key: str, make: Callable[[bytes], bytes]) -> None:
        value, meta = client.get(key)
        ok, _ = client.transaction(
            compare=[*leadership.fence_compares(), tx.mod(key) == meta.mod_revision],
            success=[tx.put(key, make(value))],
            failure=[tx.get(leadership.key), tx.get(key)],
        )
        assert ok

    def raw_modify(s: int, k: int) -> None:
        raw_read_modify_write(layout.settings(f"bench-{s}"),
                              lambda old: codec.encode_settings(group(f"bench-{s}", 2 + k),
                                                                base=old))  # fmt: skip

    controller_key = layout.controller()
    client.put(controller_key, codec.encode_controller(ControllerConfig()))

    def raw_controller(_s: int, k: int) -> None:
        def make(old: bytes) -> bytes:
            config = codec.decode_controller(controller_key, old)
            return codec.encode_controller(config.with_updates({"read-base-cost": 0.25 + k * 1e-6}))

        raw_read_modify_write(controller_key, make)

    def raw_limit(s: int, k: int) -> None:
        ok, _ = client.transaction(
            compare=leadership.fence_compares(),
            success=[tx.put(layout.service_limit(s + 1), codec.encode_service_limit(float(k)))],
            failure=[tx.get(leadership.key)],
        )
        assert ok

    def lib_create(_s: int, k: int) -> None:
        writer.add_group(group(f"lib-{k}", 1000 + k))

    def lib_modify(s: int, k: int) -> None:
        writer.modify_group(group(f"bench-{s}", 2 + k))

    def lib_controller(_s: int, k: int) -> None:
        writer.update_controller({"read-base-cost": 0.25 + k * 1e-6})

    def lib_limit(s: int, k: int) -> None:
        writer.set_service_limit(s + 1, float(k))

    per_op: dict[str, tuple[dict[str, Op], tuple[int, ...]]] = {
        "create": ({"raw_txn": raw_create, "library": lib_create,
                    "http": http(lambda _s, k: create_http[k])}, CONNECTIONS),
        "modify": ({"raw_txn": raw_modify, "library": lib_modify,
                    "http": http(lambda s, k: modify_http[s][k])}, CONNECTIONS),
        "controller": ({"raw_txn": raw_controller, "library": lib_controller,
                        "http": http(lambda _s, k: controller_http[k])}, (1,)),
        "service_limit": ({"raw_txn": raw_limit, "library": lib_limit,
                           "http": http(lambda s, k: limit_http[s][k])}, CONNECTIONS),
    }  # fmt: skip
    return {f"{name}/{c}": variants for name, (variants, conns) in per_op.items() for c in conns}


def rows(pid: str, result: dict[str, Any]) -> list[Row]:
    """The table's lines: library and HTTP, for every operation and connection count."""
    out = []
    for case, variants in result["cases"].items():
        operation, connections = case.rsplit("/", 1)
        label = f"{LABELS[operation]}, {connections} conn"
        out += [
            goal_row(pid, f"writer library writes/s / raw txn: {label}",
                     variants["library"]["ratio_to_raw"], ">=", LIBRARY_GOAL),
            goal_row(pid, f"writer HTTP writes/s / raw txn: {label}",
                     variants["http"]["ratio_to_raw"], ">=", HTTP_GOAL),
        ]  # fmt: skip
    return out


def absolute(pid: str, result: dict[str, Any]) -> str:
    """Writes/s of every variant of every case."""
    parts = []
    for case, v in result["cases"].items():
        parts.append(
            f"{case}: raw {v['raw_txn']['writes_per_s']:.0f}, library "
            f"{v['library']['writes_per_s']:.0f}, HTTP {v['http']['writes_per_s']:.0f}"
        )
    return f"{pid:<3} writes/s " + " | ".join(parts)  # fmt: skip
