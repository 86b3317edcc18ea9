"""ResourceManager over gRPC on a replica: reads from the cache with PD's answers and errors,
``x-revision`` and ``min-revision``, writes refused, health and reflection, per-RPC metrics.

Clients are generated from rmwatch's .proto (kvproto's package, service and message names).
"""

from __future__ import annotations

import time
from typing import Any

import grpc
import pyetcd
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import (  # type: ignore[import-untyped]
    reflection_pb2,
    reflection_pb2_grpc,
)
from grpc_support import replica_server, rm_stub, served, trailer
from prometheus_client import CollectorRegistry
from sidecar_support import layout, replica

from rmwatch.grpc import GrpcServer
from rmwatch.store._pb import resource_manager_pb2 as pb
from rmwatch.store.keys import KeyLayout
from rmwatch.store.models import (
    Consumption,
    GroupRequestUnitSettings,
    GroupStates,
    ResourceGroup,
    TokenBucket,
    TokenLimitSettings,
    TokenState,
)
from rmwatch.store.writer import Writer
from rmwatch.watcher.replica import Replica

__all__ = ["layout", "replica", "served"]  # fixtures used by name

Served = tuple[GrpcServer, grpc.Channel, CollectorRegistry]


def _group(name: str, fill: int = 100, keyspace: int | None = None) -> ResourceGroup:
    bucket = TokenBucket(settings=TokenLimitSettings(fill_rate=fill, burst_limit=fill * 2))
    return ResourceGroup(
        name=name, r_u_settings=GroupRequestUnitSettings(r_u=bucket), priority=8,
        keyspace_id=keyspace,
    )  # fmt: skip


@pytest.fixture
def writer(etcd_client: pyetcd.MultiEndpointEtcd3Client, layout: KeyLayout) -> Writer:
    """An unfenced writer on the test's prefix (the only writer there)."""
    return Writer(client=etcd_client, layout=layout)


def _code(exc: pytest.ExceptionInfo[grpc.RpcError]) -> Any:
    return exc.value.code()


def _details(exc: pytest.ExceptionInfo[grpc.RpcError]) -> str:
    return str(exc.value.details())


class TestReads:
    """Get/List answer from one snapshot, as PD's RM does."""

    def test_get_group_with_revision_trailer(
        self, replica: Replica, served: Served, writer: Writer
    ) -> None:
        """A group written through the writer comes back with PD's shape and x-revision."""
        _, channel, _ = served
        revision = writer.add_group(_group("rg1", fill=300))
        writer.put_states("rg1", GroupStates(r_u=TokenState(tokens=42.5, initialized=True)))
        replica.wait_for_revision(revision + 1, 5)
        response, call = rm_stub(channel).GetResourceGroup.with_call(
            pb.GetResourceGroupRequest(resource_group_name="rg1")
        )
        group = response.group
        assert group.name == "rg1"
        assert group.mode == pb.RUMode
        assert group.r_u_settings.r_u.settings.fill_rate == 300
        assert group.r_u_settings.r_u.tokens == 42.5  # the state's tokens, as PD's GetTokenBucket
        assert group.keyspace_id.value == 4294967295  # PD always sets the keyspace asked for
        assert not group.HasField("RUStats")
        assert int(trailer(call) or 0) == replica.revision

    def test_missing_group_is_pds_error(self, served: Served) -> None:
        """PD: errs.ErrResourceGroupNotExists (pkg/mcs/resourcemanager/server/grpc_service.go:116,
        pkg/errs/errno.go:538), a plain Go error: UNKNOWN with ``[RFC code]message``."""
        _, channel, _ = served
        with pytest.raises(grpc.RpcError) as exc:
            rm_stub(channel).GetResourceGroup(pb.GetResourceGroupRequest(resource_group_name="no"))
        assert _code(exc) == grpc.StatusCode.UNKNOWN
        assert _details(exc) == (
            "[PD:resourcemanager:ErrGroupNotExists]the no resource group does not exist"
        )
        assert trailer(exc.value) is not None

    def test_list_sorted_with_stats(self, replica: Replica, served: Served, writer: Writer) -> None:
        """List is sorted by name and, as PD's, always holds the reserved ``default``;
        with_ru_stats adds RUStats (the states' consumption)."""
        _, channel, _ = served
        writer.add_group(_group("b"))
        writer.add_group(_group("a"))
        revision = writer.put_states(
            "a", GroupStates(ru_consumption=Consumption(r_r_u=1.5, w_r_u=2.0))
        )
        replica.wait_for_revision(revision, 5)
        stub = rm_stub(channel)
        plain = stub.ListResourceGroups(pb.ListResourceGroupsRequest())
        assert [g.name for g in plain.groups] == ["a", "b", "default"]
        assert not any(g.HasField("RUStats") for g in plain.groups)
        stats, call = stub.ListResourceGroups.with_call(
            pb.ListResourceGroupsRequest(with_ru_stats=True)
        )
        by_name = {g.name: g for g in stats.groups}
        assert by_name["a"].RUStats.r_r_u == 1.5
        assert by_name["a"].RUStats.w_r_u == 2.0
        assert by_name["b"].HasField("RUStats")  # present, empty
        assert int(trailer(call) or 0) >= revision

    def test_keyspace_oneof(self, replica: Replica, served: Served, writer: Writer) -> None:
        """keyspace_id {value: 7} reads keyspace 7; unset reads the null keyspace (PD's
        ExtractKeyspaceID, pkg/mcs/resourcemanager/server/utils.go:24)."""
        _, channel, _ = served
        revision = writer.add_group(_group("ks", keyspace=7))
        replica.wait_for_revision(revision, 5)
        stub = rm_stub(channel)
        found = stub.GetResourceGroup(
            pb.GetResourceGroupRequest(
                resource_group_name="ks", keyspace_id=pb.KeyspaceIDValue(value=7)
            )
        )
        assert found.group.keyspace_id.value == 7
        assert found.group.keyspace_id.WhichOneof("keyspace") == "value"
        with pytest.raises(grpc.RpcError) as exc:
            stub.GetResourceGroup(pb.GetResourceGroupRequest(resource_group_name="ks"))
        assert _code(exc) == grpc.StatusCode.UNKNOWN
        listed = stub.ListResourceGroups(
            pb.ListResourceGroupsRequest(keyspace_id=pb.KeyspaceIDValue(value=7))
        )
        assert [g.name for g in listed.groups] == ["default", "ks"]  # default in every keyspace


class TestMinRevision:
    """``min-revision`` metadata waits (bounded) for the cache, as ``?min_revision=`` does."""

    def test_read_your_write(self, replica: Replica, served: Served, writer: Writer) -> None:
        """A read asking for the write's revision sees the write."""
        _, channel, _ = served
        revision = writer.add_group(_group("ryw"))
        response, call = rm_stub(channel).GetResourceGroup.with_call(
            pb.GetResourceGroupRequest(resource_group_name="ryw"),
            metadata=[("min-revision", str(revision))],
        )
        assert response.group.name == "ryw"
        assert int(trailer(call) or 0) >= revision

    def test_future_revision_times_out(self, replica: Replica) -> None:
        """A revision never reached answers DEADLINE_EXCEEDED after the bound, naming where
        the cache is (trailer too)."""
        with replica_server(replica, min_revision_timeout=0.3) as (_, channel, _):
            wanted = replica.revision + 1_000_000
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as exc:
                rm_stub(channel).ListResourceGroups(
                    pb.ListResourceGroupsRequest(), metadata=[("min-revision", str(wanted))]
                )
            assert time.monotonic() - started < 3.0
            assert _code(exc) == grpc.StatusCode.DEADLINE_EXCEEDED
            assert f"revision {wanted} not reached" in _details(exc)
            assert int(trailer(exc.value) or 0) == replica.revision

    @pytest.mark.parametrize("raw", ["soon", "9" * 5000])
    def test_bad_min_revision(self, served: Served, raw: str) -> None:
        """A min-revision that is not a number, or is 5000 digits (``int`` refuses those: it
        was an INTERNAL error), is INVALID_ARGUMENT."""
        _, channel, _ = served
        with pytest.raises(grpc.RpcError) as exc:
            rm_stub(channel).ListResourceGroups(
                pb.ListResourceGroupsRequest(), metadata=[("min-revision", raw)]
            )
        assert _code(exc) == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a non-negative integer" in _details(exc)


class TestRefusals:
    """Writes and token buckets are not a replica's job."""

    @pytest.mark.parametrize("method", ["AddResourceGroup", "ModifyResourceGroup"])
    def test_put_refused(self, served: Served, method: str) -> None:
        """PD with rejectMetadataWritesViaGRPC (grpc_service.go:150,180): FAILED_PRECONDITION."""
        _, channel, _ = served
        call = getattr(rm_stub(channel), method)
        with pytest.raises(grpc.RpcError) as exc:
            call(pb.PutResourceGroupRequest(group=pb.ResourceGroup(name="x", mode=pb.RUMode)))
        assert _code(exc) == grpc.StatusCode.FAILED_PRECONDITION
        assert _details(exc) == "resource group metadata writes must be handled by PD"

    def test_delete_refused(self, served: Served) -> None:
        """Delete too (grpc_service.go:165)."""
        _, channel, _ = served
        with pytest.raises(grpc.RpcError) as exc:
            rm_stub(channel).DeleteResourceGroup(
                pb.DeleteResourceGroupRequest(resource_group_name="x")
            )
        assert _code(exc) == grpc.StatusCode.FAILED_PRECONDITION

    def test_token_buckets_unimplemented(self, served: Served) -> None:
        """AcquireTokenBuckets: UNIMPLEMENTED, saying tokens belong to RM nodes."""
        _, channel, _ = served
        with pytest.raises(grpc.RpcError) as exc:
            list(rm_stub(channel).AcquireTokenBuckets(iter([pb.TokenBucketsRequest()])))
        assert _code(exc) == grpc.StatusCode.UNIMPLEMENTED
        assert "token buckets belong to resource-manager nodes" in _details(exc)


class TestReadiness:
    """Not ready: UNAVAILABLE with state and reason; health follows readiness."""

    def test_unavailable_then_serving(self, etcd_endpoints: list[str], root_prefix: str) -> None:
        """Before the replica starts, reads are UNAVAILABLE and health NOT_SERVING; once it is
        ready, reads answer and health says SERVING."""
        replica = Replica(endpoints=etcd_endpoints, root_prefix=root_prefix)
        try:
            with replica_server(replica) as (_, channel, _):
                health = health_pb2_grpc.HealthStub(channel)
                request = health_pb2.HealthCheckRequest(service="")
                assert health.Check(request).status == health_pb2.HealthCheckResponse.NOT_SERVING
                with pytest.raises(grpc.RpcError) as exc:
                    rm_stub(channel).ListResourceGroups(pb.ListResourceGroupsRequest())
                assert _code(exc) == grpc.StatusCode.UNAVAILABLE
                assert "replica not ready (NEW): not started" in _details(exc)
                replica.start()
                replica.wait_ready(10)
                deadline = time.monotonic() + 3
                status = None
                while time.monotonic() < deadline:
                    status = health.Check(request).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        break
                    time.sleep(0.05)
                assert status == health_pb2.HealthCheckResponse.SERVING
                rm_request = health_pb2.HealthCheckRequest(
                    service="resource_manager.ResourceManager"
                )
                assert health.Check(rm_request).status == health_pb2.HealthCheckResponse.SERVING
                rm_stub(channel).ListResourceGroups(pb.ListResourceGroupsRequest())
        finally:
            replica.close()

    def test_reflection_lists_services(self, served: Served) -> None:
        """Server reflection names kvproto's services, health and reflection."""
        _, channel, _ = served
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(iter(stub.ServerReflectionInfo(iter([request]))))
        names = {s.name for s in response.list_services_response.service}
        assert {
            "resource_manager.ResourceManager",
            "meta_storagepb.MetaStorage",
            "grpc.health.v1.Health",
        } <= names


class TestMetrics:
    """Every call is counted with its code and timed."""

    def test_counts_by_code(self, served: Served) -> None:
        """One OK List and one UNKNOWN Get show up under their labels."""
        _, channel, registry = served
        stub = rm_stub(channel)
        stub.ListResourceGroups(pb.ListResourceGroupsRequest())
        with pytest.raises(grpc.RpcError):
            stub.GetResourceGroup(pb.GetResourceGroupRequest(resource_group_name="none"))
        service = "resource_manager.ResourceManager"
        ok = registry.get_sample_value(
            "rmwatch_grpc_requests_total",
            {"service": service, "method": "ListResourceGroups", "code": "OK"},
        )
        missing = registry.get_sample_value(
            "rmwatch_grpc_requests_total",
            {"service": service, "method": "GetResourceGroup", "code": "UNKNOWN"},
        )
        timed = registry.get_sample_value(
            "rmwatch_grpc_request_seconds_count",
            {"service": service, "method": "ListResourceGroups"},
        )
        assert ok == 1.0
        assert missing == 1.0
        assert timed == 1.0
