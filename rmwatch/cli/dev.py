"""``rmwatch dev``: an embedded etcd, one writer and one replica on fixed loopback ports.

The quickest way to see rmwatch work: it starts everything, creates the ``default`` group,
prints the URLs and three ``curl`` lines to try, and stops everything on Ctrl-C (SIGINT or
SIGTERM). ``--smoke`` runs those curl steps itself over HTTP and exits (0 on success).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import httpx

from rmwatch.store.models import default_group
from rmwatch.testing.etcd import EmbeddedEtcd

API = "/resource-manager/api/v1"
EXAMPLE_GROUP = {
    "name": "rg1",
    "mode": 1,
    "r_u_settings": {"r_u": {"settings": {"fill_rate": 1000, "burst_limit": 2000}}},
    "priority": 8,
}


def register(subparsers: Any) -> None:
    """Add ``rmwatch dev``."""
    parser = subparsers.add_parser(
        "dev",
        help="run an embedded etcd, a writer and a replica on loopback (try rmwatch here)",
        description=__doc__,
    )
    parser.add_argument("--etcd-port", type=int, default=23790, help="etcd client port (23790)")
    parser.add_argument("--writer-port", type=int, default=3379, help="writer API port (3379)")
    parser.add_argument("--replica-port", type=int, default=3380, help="replica port (3380)")
    parser.add_argument("--data-dir", help="keep etcd's data here (default: a temp dir)")
    parser.add_argument(
        "--smoke", action="store_true", help="run the example requests, print them, and exit"
    )
    parser.set_defaults(run=run)


def _check_free(port: int, what: str) -> None:
    with socket.socket() as sock:
        # As the servers do: a port left in TIME_WAIT by a previous run is free to listen on.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise SystemExit(
                f"rmwatch dev: port {port} ({what}) is in use; pick another with --{what}-port"
            ) from None


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "rmwatch", *args], env=env)


def _wait_http(url: str, timeout: float, what: str, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise SystemExit(f"rmwatch dev: {what} exited during start-up (see its log above)")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"rmwatch dev: {what} not ready at {url} within {timeout:g}s")


def _ensure_default(writer: str) -> None:
    body = default_group().model_dump(mode="json", by_alias=True, exclude_none=True)
    answer = httpx.post(f"{writer}{API}/config/group", json=body, timeout=10)
    if answer.status_code not in (200, 400):  # 400: it exists already (a kept --data-dir)
        raise SystemExit(
            f"rmwatch dev: creating 'default' failed: {answer.status_code} {answer.text}"
        )


def _curl_lines(writer: str, replica: str) -> list[str]:
    body = json.dumps(EXAMPLE_GROUP, separators=(",", ":"))
    return [
        "# 1. create a group through the writer; X-Revision is its commit revision",
        f"REV=$(curl -s -D - -o /dev/null -X POST {writer}{API}/config/group -d '{body}' "
        "| tr -d '\\r' | awk -F': ' 'tolower($1)==\"x-revision\" {print $2}'); echo \"$REV\"",
        "# 2. read it back from the replica, waiting until it has that revision",
        f'curl -s "{replica}{API}/config/group/rg1?min_revision=$REV"; echo',
        "# 3. watch the replica's state, revisions, lag and recoveries",
        f"curl -s {replica}/status; echo",
    ]


def _smoke(writer: str, replica: str) -> None:
    created = httpx.post(f"{writer}{API}/config/group", json=EXAMPLE_GROUP, timeout=10)
    print(f"POST {writer}{API}/config/group -> {created.status_code} {created.text}")
    if created.status_code != 200:
        raise SystemExit(1)
    revision = created.headers["X-Revision"]
    read = httpx.get(
        f"{replica}{API}/config/group/rg1", params={"min_revision": revision}, timeout=10
    )
    print(f"GET {replica}{API}/config/group/rg1?min_revision={revision} -> {read.status_code}")
    print(f"  X-Revision: {read.headers.get('X-Revision')}  body: {read.text}")
    if read.status_code != 200 or read.json()["name"] != "rg1":
        raise SystemExit(1)
    status = httpx.get(f"{replica}/status", timeout=10).json()
    print(f"GET {replica}/status -> state={status['state']} applied={status['applied_revision']}")


def run(args: argparse.Namespace) -> int:
    """Start etcd, writer and replica; print how to use them; stop all on Ctrl-C."""
    for port, what in (
        (args.etcd_port, "etcd"),
        (args.etcd_port + 1, "etcd"),
        (args.writer_port, "writer"),
        (args.replica_port, "replica"),
    ):
        _check_free(port, what)
    writer = f"http://127.0.0.1:{args.writer_port}"
    replica = f"http://127.0.0.1:{args.replica_port}"
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    procs: list[subprocess.Popen[bytes]] = []
    with EmbeddedEtcd(
        client_port=args.etcd_port, peer_port=args.etcd_port + 1, data_dir=args.data_dir
    ) as etcd:
        try:
            writer_listen = f"127.0.0.1:{args.writer_port}"
            replica_listen = f"127.0.0.1:{args.replica_port}"
            procs.append(
                _spawn(["writer", "--etcd", etcd.endpoint, "--listen", writer_listen,
                        "--name", "dev-writer"])
            )  # fmt: skip
            # No load balancer to drain from here: Ctrl-C stops the replica at once (not 5 s).
            procs.append(
                _spawn(["replica", "--etcd", etcd.endpoint, "--listen", replica_listen,
                        "--drain-seconds", "0"])
            )  # fmt: skip
            _wait_http(f"{writer}/health", 30, "writer", procs)
            _wait_http(f"{replica}/ready", 30, "replica", procs)
            _ensure_default(writer)
            banner = [
                "",
                "rmwatch dev is running:",
                f"  etcd     http://{etcd.endpoint}   ({etcd.binary}, data in {etcd.data_dir})",
                f"  writer   {writer}   (PD's write API; docs at {writer}/docs)",
                f"  replica  {replica}   (PD's read API from the cache; {replica}/status)",
                "",
                *_curl_lines(writer, replica),
                "",
                "Ctrl-C stops everything.",
            ]
            print("\n".join(banner), flush=True)
            if args.smoke:
                _smoke(writer, replica)
                return 0
            while not stop.wait(0.5):
                dead = [p for p in procs if p.poll() is not None]
                if dead:
                    print("rmwatch dev: a child process exited; stopping", file=sys.stderr)
                    return 1
            return 0
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            print("rmwatch dev: stopped", flush=True)
