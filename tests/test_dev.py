"""`rmwatch dev` used as a new user would: a subprocess, then HTTP only; and what it leaves
behind when it is stopped (nothing), politely or with SIGKILL."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import httpx
from harness import free_ports, make_client
from process_support import descendants, wait_gone

from rmwatch.grpc.stubs import resource_manager_pb2_grpc
from rmwatch.store._pb import resource_manager_pb2 as pb

API = "/resource-manager/api/v1"


@dataclass
class Dev:
    """A running ``rmwatch dev``: its process, the banner it printed, and its ports."""

    proc: subprocess.Popen[str]
    banner: str
    ports: tuple[int, ...]


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _dev_ports() -> list[int]:
    """Five free ports for ``rmwatch dev``, the etcd client port's successor (its peer port)
    free and not among them: the kernel often hands out neighbours, and dev refuses a taken
    peer port before it prints anything."""
    while True:
        ports = free_ports(5)
        if ports[0] + 1 not in ports and _bindable(ports[0] + 1):
            return list(ports)


@contextmanager
def running_dev() -> Iterator[Dev]:
    """``rmwatch dev`` on free ports, up to its banner; killed afterwards if still running."""
    etcd_port, writer_port, replica_port, writer_grpc, replica_grpc = _dev_ports()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rmwatch", "dev", "--etcd-port", str(etcd_port),
         "--writer-port", str(writer_port), "--replica-port", str(replica_port),
         "--writer-grpc-port", str(writer_grpc), "--replica-grpc-port", str(replica_grpc)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    banner: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not any("Ctrl-C stops everything" in line for line in banner):
            assert time.monotonic() < deadline, "".join(banner)
            line = proc.stdout.readline()
            assert line, f"rmwatch dev exited early: {''.join(banner)}"
            banner.append(line)
        ports = (etcd_port, etcd_port + 1, writer_port, replica_port, writer_grpc, replica_grpc)
        yield Dev(proc, "".join(banner), ports)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def listening(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_ports_free(ports: tuple[int, ...], timeout: float) -> list[int]:
    """Poll until nothing listens on ``ports``; return those still taken after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (taken := [p for p in ports if listening(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return taken


class TestDev:
    def test_dev_starts_everything_serves_read_your_writes_and_stops_on_ctrl_c(self) -> None:
        """The printed URLs work: a group POSTed to the writer is read back from the replica
        with min_revision, /status shows SERVING, and SIGINT stops every process cleanly."""
        with running_dev() as dev:
            writer = re.search(r"writer\s+(http://\S+)", dev.banner)
            replica = re.search(r"replica\s+(http://\S+)", dev.banner)
            assert writer is not None
            assert replica is not None
            assert "curl" in dev.banner
            body = {"name": "from-test", "mode": 1, "priority": 3}
            created = httpx.post(f"{writer.group(1)}{API}/config/group", json=body, timeout=10)
            assert created.status_code == 200
            revision = int(created.headers["X-Revision"])
            read = httpx.get(
                f"{replica.group(1)}{API}/config/group/from-test",
                params={"min_revision": revision},
                timeout=10,
            )
            assert read.status_code == 200
            assert read.json()["priority"] == 3
            assert int(read.headers["X-Revision"]) >= revision
            default = httpx.get(f"{replica.group(1)}{API}/config/group/default", timeout=10)
            assert default.json()["r_u_settings"]["r_u"]["settings"]["fill_rate"] == 2147483647
            assert httpx.get(f"{replica.group(1)}/status", timeout=10).json()["state"] == "SERVING"
            # The printed gRPC ports serve PD's ResourceManager: the replica's reads the group.
            grpc_line = re.search(r"gRPC\s+writer (\S+) .*replica (\S+)", dev.banner)
            assert grpc_line is not None
            assert f"grpcurl -plaintext {grpc_line.group(2)} " in dev.banner
            with grpc.insecure_channel(grpc_line.group(2)) as channel:
                stub = resource_manager_pb2_grpc.ResourceManagerStub(channel)  # type: ignore[no-untyped-call]
                got = stub.GetResourceGroup(
                    pb.GetResourceGroupRequest(resource_group_name="from-test"),
                    metadata=[("min-revision", str(revision))],
                    timeout=10,
                )
            assert got.group.priority == 3
            # The etcd is PD-shaped: a keyspace put into PD's index under the printed cluster
            # id resolves by name at once.
            cluster = re.search(r"PD cluster id (\d+)", dev.banner)
            etcd = re.search(r"etcd\s+http://(\S+)", dev.banner)
            assert cluster is not None
            assert etcd is not None
            with make_client([etcd.group(1)]) as client:
                client.put(f"/pd/{cluster.group(1)}/keyspaces/id/ks1", b"1")
            in_keyspace = httpx.post(f"{writer.group(1)}{API}/config/group", json=body,
                                     params={"keyspace_name": "ks1"}, timeout=10)  # fmt: skip
            assert in_keyspace.status_code == 200, in_keyspace.text
            dev.proc.send_signal(signal.SIGINT)
            out, _ = dev.proc.communicate(timeout=30)
            assert dev.proc.returncode == 0
            assert "rmwatch dev: stopped" in out

    def test_sigterm_stops_every_child_and_frees_the_ports(self) -> None:
        """SIGTERM: exit 0 within a few seconds, etcd, writer and replica gone, ports (HTTP and
        gRPC) free."""
        with running_dev() as dev:
            children = descendants(dev.proc.pid)
            assert len(children) >= 3, "etcd, writer and replica"
            started = time.monotonic()
            dev.proc.send_signal(signal.SIGTERM)
            assert dev.proc.wait(20) == 0
            assert time.monotonic() - started < 10
            assert wait_gone(children, 5.0) == set()
            assert wait_ports_free(dev.ports, 5.0) == []

    def test_sigkill_of_dev_leaves_no_child_and_no_port_taken(self) -> None:
        """SIGKILL of rmwatch dev (nothing can catch it): its etcd, writer and replica are
        gone and their ports free within 5 s."""
        with running_dev() as dev:
            children = descendants(dev.proc.pid)
            assert len(children) >= 3, "etcd, writer and replica"
            assert all(listening(port) for port in dev.ports)
            dev.proc.kill()
            dev.proc.wait(5)
            assert wait_gone(children, 5.0) == set()
            assert wait_ports_free(dev.ports, 5.0) == []
