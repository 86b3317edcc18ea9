"""``rmwatch dev``: an embedded etcd, one writer and one replica on fixed loopback ports.

The quickest way to see rmwatch work: it starts everything, creates the ``default`` group,
prints the URLs and three ``curl`` lines to try, and stops everything on Ctrl-C (SIGINT or
SIGTERM). Both services also serve PD's gRPC API on their own loopback ports (the writer
ResourceManager writes and reads; the replica ResourceManager reads and MetaStorage Get/Watch);
the banner prints a ``grpcurl`` line (server reflection is on) and a Python snippet using
``rmwatch.grpc.stubs``. ``--smoke`` runs the curl steps itself, then one gRPC read from the
replica, and exits (0 on success).

The embedded etcd is made PD-shaped before the services start: a cluster id is written to
``/pd/cluster_id`` as PD writes it (kept if a ``--data-dir`` holds one already), so putting
``/pd/{id}/keyspaces/id/{name}`` → ``{id}`` creates a keyspace ``keyspace_name`` resolves,
exactly as on a PD cluster. The RM keys sit at the etcd root, as PD keeps them.

Logs are for a person here: every process logs in structlog's console format on stderr (one
line per event, its component in brackets), and the banner comes on stdout once start-up is
over, between two rules. The children run under ``rmwatch.cli.supervisor``: even a SIGKILL of
``rmwatch dev`` takes etcd, the writer and the replica down with it, freeing their ports.
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
from collections.abc import Callable
from types import FrameType
from typing import Any

import grpc
import httpx

from rmwatch._logging import get_logger
from rmwatch.cli import logs
from rmwatch.cli.logs import LogFormat
from rmwatch.cli.options import COMMON_FLAGS, CliSettings, add_log_arguments, given_flags
from rmwatch.cli.supervisor import Supervisor
from rmwatch.grpc.stubs import resource_manager_pb2_grpc
from rmwatch.store._pb import resource_manager_pb2 as pb
from rmwatch.store.etcd import EtcdConfig, connect
from rmwatch.store.keyspaces import init_cluster_id
from rmwatch.store.models import default_group
from rmwatch.testing.etcd import EmbeddedEtcd

log = get_logger("dev")

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
    parser.add_argument(
        "--writer-grpc-port", type=int, default=3381, help="writer gRPC port (3381)"
    )
    parser.add_argument(
        "--replica-grpc-port", type=int, default=3382, help="replica gRPC port (3382)"
    )
    parser.add_argument("--data-dir", help="keep etcd's data here (default: a temp dir)")
    parser.add_argument(
        "--smoke", action="store_true", help="run the example requests, print them, and exit"
    )
    add_log_arguments(parser)
    parser.set_defaults(run=run)


class DevSettings(CliSettings):
    """Settings of ``rmwatch dev`` read from the environment: logs default to the console
    format, since a person reads them (``RMWATCH_LOG_FORMAT=json`` for a machine)."""

    log_format: LogFormat = "console"


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


def _wait_http(
    url: str, timeout: float, what: str, children: list[subprocess.Popen[bytes]],
    stop: threading.Event,
) -> bool:  # fmt: skip
    """Poll ``url`` until it answers 200 (True) or ``stop`` is set (False)."""
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        if any(p.poll() is not None for p in children):
            raise SystemExit(f"rmwatch dev: {what} exited during start-up (see its log above)")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"rmwatch dev: {what} not ready at {url} within {timeout:g}s")
        stop.wait(0.1)
    return False


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


def _grpc_lines(writer_grpc: str, replica_grpc: str) -> list[str]:
    return [
        "# 4. gRPC (server reflection is on, so grpcurl needs no .proto): list from the replica",
        f"grpcurl -plaintext {replica_grpc} resource_manager.ResourceManager/ListResourceGroups",
        "# 5. read rg1 from Python, with the stubs rmwatch ships (kvproto's names)",
        "python - <<'EOF'",
        "import grpc",
        "from rmwatch.grpc.stubs import resource_manager_pb2_grpc as rm",
        "from rmwatch.store._pb import resource_manager_pb2 as pb",
        f'stub = rm.ResourceManagerStub(grpc.insecure_channel("{replica_grpc}"))',
        "print(stub.GetResourceGroup(pb.GetResourceGroupRequest(resource_group_name='rg1')))",
        "EOF",
        f"# writes go to the writer's gRPC port {writer_grpc} (AddResourceGroup, ...)",
    ]


def _smoke_grpc(replica_grpc: str) -> None:
    with grpc.insecure_channel(replica_grpc) as channel:
        stub = resource_manager_pb2_grpc.ResourceManagerStub(channel)  # type: ignore[no-untyped-call]
        listed = stub.ListResourceGroups(pb.ListResourceGroupsRequest(), timeout=10)
    names = sorted(group.name for group in listed.groups)
    print(f"gRPC {replica_grpc} ListResourceGroups -> {names}")
    if "rg1" not in names:
        raise SystemExit(1)


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


RULE = "=" * 72


def _banner(
    etcd: EmbeddedEtcd, cluster_id: int, writer: str, replica: str, grpc_ports: tuple[int, int]
) -> str:
    writer_grpc, replica_grpc = (f"127.0.0.1:{port}" for port in grpc_ports)
    return "\n".join(
        [
            "",
            RULE,
            "rmwatch dev is running:",
            f"  etcd     http://{etcd.endpoint}   ({etcd.binary}, data in {etcd.data_dir})",
            f"           PD cluster id {cluster_id}; a keyspace is a key "
            f"/pd/{cluster_id}/keyspaces/id/<name> holding its id",
            f"  writer   {writer}   (PD's write API; docs at {writer}/docs)",
            f"  replica  {replica}   (PD's read API from the cache; {replica}/status)",
            f"  gRPC     writer {writer_grpc} (ResourceManager), replica {replica_grpc} "
            "(ResourceManager reads, MetaStorage Get/Watch)",
            "",
            *_curl_lines(writer, replica),
            *_grpc_lines(writer_grpc, replica_grpc),
            "",
            "Ctrl-C stops everything.",
            RULE,
            "",
        ]
    )


def _stop_children(children: dict[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM every child, then wait; one that is still running after 15 s is killed."""
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for name, proc in children.items():
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            log.warning("child_killed", child=name, reason="no exit 15 s after SIGTERM")
            proc.kill()
            proc.wait()


def _on_signals(stop: threading.Event) -> Callable[[int, FrameType | None], None]:
    def handler(sig: int, _frame: FrameType | None) -> None:
        if not stop.is_set():
            log.info("stop_requested", signal=signal.Signals(sig).name)
        stop.set()

    return handler


def run(args: argparse.Namespace) -> int:
    """Start etcd, writer and replica; print how to use them; stop all on Ctrl-C or SIGTERM."""
    log_format = logs.configure(DevSettings(**given_flags(args, COMMON_FLAGS)).log_format)
    for port, what in (
        (args.etcd_port, "etcd"),
        (args.etcd_port + 1, "etcd"),
        (args.writer_port, "writer"),
        (args.replica_port, "replica"),
        (args.writer_grpc_port, "writer-grpc"),
        (args.replica_grpc_port, "replica-grpc"),
    ):
        _check_free(port, what)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signals(stop))
    try:
        with Supervisor() as supervisor, EmbeddedEtcd(
            client_port=args.etcd_port, peer_port=args.etcd_port + 1, data_dir=args.data_dir,
            popen=supervisor.popen,
        ) as etcd:  # fmt: skip
            log.info("etcd_started", endpoint=etcd.endpoint, data_dir=etcd.data_dir,
                     supervision=supervisor.mechanism)  # fmt: skip
            return _run_services(args, etcd, supervisor, stop, log_format)
    finally:
        print("rmwatch dev: stopped", flush=True)


def _run_services(
    args: argparse.Namespace, etcd: EmbeddedEtcd, supervisor: Supervisor,
    stop: threading.Event, log_format: str,
) -> int:  # fmt: skip
    """Writer and replica on ``etcd`` until ``stop``; both are stopped on the way out."""
    writer = f"http://127.0.0.1:{args.writer_port}"
    replica = f"http://127.0.0.1:{args.replica_port}"
    children: dict[str, subprocess.Popen[bytes]] = {}
    env = dict(os.environ, PYTHONUNBUFFERED="1")

    def spawn(name: str, *argv: str) -> None:
        command = [sys.executable, "-m", "rmwatch", name, "--log-format", log_format, *argv]
        children[name] = supervisor.popen(command, env=env)

    try:
        if stop.is_set():
            return 0
        with connect(EtcdConfig.parse(etcd.endpoint, timeout=5.0)) as client:
            cluster_id = init_cluster_id(client, deadline=10.0)
        log.info("cluster_id_ready", cluster_id=cluster_id)
        spawn("writer", "--etcd", etcd.endpoint, "--listen", f"127.0.0.1:{args.writer_port}",
              "--grpc-listen", f"127.0.0.1:{args.writer_grpc_port}",
              "--name", "dev-writer")  # fmt: skip
        # No load balancer to drain from here: Ctrl-C stops the replica at once (not 5 s).
        spawn("replica", "--etcd", etcd.endpoint, "--listen", f"127.0.0.1:{args.replica_port}",
              "--grpc-listen", f"127.0.0.1:{args.replica_grpc_port}",
              "--drain-seconds", "0")  # fmt: skip
        procs = list(children.values())
        if not (
            _wait_http(f"{writer}/health", 30, "writer", procs, stop)
            and _wait_http(f"{replica}/ready", 30, "replica", procs, stop)
        ):
            return 0
        _ensure_default(writer)
        sys.stderr.flush()
        grpc_ports = (args.writer_grpc_port, args.replica_grpc_port)
        print(_banner(etcd, cluster_id, writer, replica, grpc_ports), flush=True)
        if args.smoke:
            _smoke(writer, replica)
            _smoke_grpc(f"127.0.0.1:{args.replica_grpc_port}")
            return 0
        while not stop.wait(0.5):
            dead = {n: p.returncode for n, p in children.items() if p.poll() is not None}
            if dead:
                log.error("child_exited", children=dead)
                return 1
        return 0
    finally:
        _stop_children(children)
