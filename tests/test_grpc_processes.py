"""Issue 13's "done when", with real processes: ``rmwatch writer`` and ``rmwatch replica`` with
``--grpc-listen`` on a real etcd, driven by a client generated from rmwatch's .proto (kvproto's
names): writes on the writer's port, reads, a refused write, MetaStorage Get and Watch on the
replica's, health, the shared ``/metrics``, and SIGTERM's NOT_SERVING-then-stop."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_support import WatchCollector, meta_stub, pb_group, rm_stub, trailer
from harness import free_ports, wait_until
from writer_support import cluster_id_for

from rmwatch.store._pb import meta_storagepb_pb2 as mspb
from rmwatch.store._pb import resource_manager_pb2 as pb
from rmwatch.store.codec import decode_settings
from rmwatch.store.keys import KeyLayout
from rmwatch.watcher.watch_stream import prefix_end

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Service:
    """One ``rmwatch`` process: its HTTP base URL, gRPC address, process and log file."""

    proc: subprocess.Popen[bytes]
    http: str
    grpc: str
    log: Path

    def tail(self) -> str:
        """The end of its log, for assertion messages."""
        return self.log.read_text(errors="replace")[-3000:]


@contextmanager
def service(kind: str, args: list[str], log: Path) -> Iterator[Service]:
    """``rmwatch <kind>`` with HTTP and gRPC on free loopback ports; killed if still running."""
    http_port, grpc_port = free_ports(2)
    command = [sys.executable, "-m", "rmwatch", kind, "--listen", f"127.0.0.1:{http_port}",
               "--grpc-listen", f"127.0.0.1:{grpc_port}", "--log-format", "json",
               *args]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield Service(proc, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def health_status(channel: grpc.Channel) -> int | None:
    """The server-wide gRPC health status, or None while the server does not answer."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        return int(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status)
    except grpc.RpcError:
        return None


def http_ok(url: str) -> bool:
    """True when ``url`` answers 200."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def stack(
    etcd_endpoints: list[str], root_prefix: str, tmp_path: Path
) -> Iterator[tuple[Service, Service]]:
    """A writer and a replica process on the session etcd, both ready (HTTP and gRPC)."""
    common = ["--etcd", ",".join(etcd_endpoints), "--root-prefix", root_prefix,
              "--cluster-id", str(cluster_id_for(root_prefix))]  # fmt: skip
    with ExitStack() as stack:
        writer = stack.enter_context(
            service("writer", [*common, "--name", "w1", "--lease-ttl", "2"], tmp_path / "w.log")
        )
        replica_args = [*common, "--no-forward", "--drain-seconds", "2",
                        "--grpc-progress-interval", "0.5"]  # fmt: skip
        replica = stack.enter_context(service("replica", replica_args, tmp_path / "r.log"))
        for item, probe in ((writer, "/health"), (replica, "/ready")):
            url = item.http + probe
            try:
                wait_until(lambda url=url: http_ok(url), 30, url)  # type: ignore[misc]
            except AssertionError:
                raise AssertionError(item.tail()) from None
        yield writer, replica


class TestDoneWhen:
    """One client, both ports: issue 13's acceptance, end to end."""

    def test_writer_and_replica_processes_over_grpc(
        self, stack: tuple[Service, Service], root_prefix: str
    ) -> None:
        """Add and modify on the writer; on the replica get and list (with default), a refused
        Add, MetaStorage Get of the settings prefix and Watch from header.revision + 1 that
        delivers the next modify; health SERVING on both; gRPC calls counted on /metrics."""
        writer, replica = stack
        layout = KeyLayout(root_prefix)
        with (
            grpc.insecure_channel(writer.grpc) as to_writer,
            grpc.insecure_channel(replica.grpc) as to_replica,
        ):
            serving = health_pb2.HealthCheckResponse.SERVING
            wait_until(lambda: health_status(to_writer) == serving, 10, "writer SERVING")
            wait_until(lambda: health_status(to_replica) == serving, 10, "replica SERVING")
            writes = rm_stub(to_writer)
            added, call = writes.AddResourceGroup.with_call(
                pb.PutResourceGroupRequest(group=pb_group("e2e", 100))
            )
            assert added.body == "Success!"
            modified, call = writes.ModifyResourceGroup.with_call(
                pb.PutResourceGroupRequest(group=pb_group("e2e", 200))
            )
            assert modified.body == "Success!"
            revision = int(trailer(call) or 0)
            assert revision > 0

            reads = rm_stub(to_replica)
            got, call = reads.GetResourceGroup.with_call(
                pb.GetResourceGroupRequest(resource_group_name="e2e"),
                metadata=[("min-revision", str(revision))],
            )
            assert got.group.r_u_settings.r_u.settings.fill_rate == 200
            assert int(trailer(call) or 0) >= revision
            listed = reads.ListResourceGroups(pb.ListResourceGroupsRequest())
            assert {g.name for g in listed.groups} == {"default", "e2e"}
            with pytest.raises(grpc.RpcError) as refused:
                reads.AddResourceGroup(pb.PutResourceGroupRequest(group=pb_group("no", 1)))
            assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert "must be handled by PD" in (refused.value.details() or "")

            meta = meta_stub(to_replica)
            prefix = layout.settings("").encode()
            snapshot = meta.Get(mspb.GetRequest(key=prefix, range_end=prefix_end(prefix)))
            assert layout.settings("e2e").encode() in [kv.key for kv in snapshot.kvs]
            assert snapshot.header.revision >= revision
            watch = WatchCollector(
                meta,
                mspb.WatchRequest(
                    key=prefix,
                    range_end=prefix_end(prefix),
                    start_revision=snapshot.header.revision + 1,
                ),
            )
            try:
                _, call = writes.ModifyResourceGroup.with_call(
                    pb.PutResourceGroupRequest(group=pb_group("e2e", 300))
                )
                next_revision = int(trailer(call) or 0)
                watch.wait_for(lambda w: any(e[0] == next_revision for e in w.events()))
                events = watch.events()
                assert [e[:3] for e in events] == [
                    (next_revision, "PUT", layout.settings("e2e").encode())
                ]
                settings = decode_settings(layout.settings("e2e"), events[0][3])
                assert settings.r_u_settings.r_u.settings.fill_rate == 300  # type: ignore[union-attr]
            finally:
                watch.cancel()

        writer_metrics = httpx.get(f"{writer.http}/metrics", timeout=5).text
        assert 'method="ModifyResourceGroup"' in writer_metrics
        assert "rmwatch_grpc_request_seconds" in writer_metrics
        replica_metrics = httpx.get(f"{replica.http}/metrics", timeout=5).text
        assert 'method="GetResourceGroup"' in replica_metrics
        assert 'code="FAILED_PRECONDITION"' in replica_metrics
        assert "rmwatch_grpc_watch_cutoffs" in replica_metrics


class TestSigterm:
    """SIGTERM: gRPC health NOT_SERVING while calls are still answered, then a clean exit."""

    def test_replica_reports_not_serving_first_then_stops(
        self, stack: tuple[Service, Service], root_prefix: str
    ) -> None:
        """Within the 2 s drain the replica's health is NOT_SERVING and reads still answer;
        then the process exits 0, its open watch ended by the server."""
        _writer, replica = stack
        with grpc.insecure_channel(replica.grpc) as channel:
            serving = health_pb2.HealthCheckResponse.SERVING
            wait_until(lambda: health_status(channel) == serving, 10, "replica SERVING")
            prefix = KeyLayout(root_prefix).settings("").encode()
            watch = WatchCollector(
                meta_stub(channel), mspb.WatchRequest(key=prefix, range_end=prefix_end(prefix))
            )
            replica.proc.send_signal(signal.SIGTERM)
            not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
            wait_until(lambda: health_status(channel) == not_serving, 1.5, "NOT_SERVING")
            listed = rm_stub(channel).ListResourceGroups(pb.ListResourceGroupsRequest())
            assert "default" in {g.name for g in listed.groups}
            started = time.monotonic()
            assert replica.proc.wait(20) == 0, replica.tail()
            # 2 s drain, then at most the 5 s gRPC grace for the watch stream.
            assert time.monotonic() - started < 10
            watch.done(5)
            assert watch.error is not None

    def test_writer_stops_cleanly(self, stack: tuple[Service, Service]) -> None:
        """The writer drains (health NOT_SERVING), stops its gRPC server and exits 0."""
        writer, _replica = stack
        with grpc.insecure_channel(writer.grpc) as channel:
            serving = health_pb2.HealthCheckResponse.SERVING
            wait_until(lambda: health_status(channel) == serving, 10, "writer SERVING")
            writer.proc.send_signal(signal.SIGTERM)
            assert writer.proc.wait(20) == 0, writer.tail()
            assert health_status(channel) is None
