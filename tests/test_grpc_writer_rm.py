"""ResourceManager over gRPC on the writer: the HTTP write path (roles gate, settings-only
apply, fencing) with PD's ``Success!`` body, ``x-revision``, the bearer token, PD's errors, and
a non-leader that names the leader."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_support import rm_stub, trailer
from writer_support import WriterNode, node, nodes, raw_get

from rmwatch.grpc import GrpcServer, serve_writer
from rmwatch.store._pb import resource_manager_pb2 as pb
from rmwatch.store.codec import decode_settings
from rmwatch.store.models import GroupStates, TokenState
from rmwatch.store.roles import WriteRole

__all__ = ["node"]  # fixture used by name

TOKEN = "s3cret"


def _group(name: str, fill: int = 100, priority: int = 8) -> pb.ResourceGroup:
    return pb.ResourceGroup(
        name=name,
        mode=pb.RUMode,
        priority=priority,
        r_u_settings=pb.GroupRequestUnitSettings(
            r_u=pb.TokenBucket(settings=pb.TokenLimitSettings(fill_rate=fill, burst_limit=fill))
        ),
    )


@pytest.fixture
def channel(node: WriterNode) -> Iterator[grpc.Channel]:
    """A channel to ``node``'s writer served over gRPC (no token)."""
    server = serve_writer(node.writer, "127.0.0.1:0")
    with grpc.insecure_channel(server.address) as item:
        yield item
    server.stop(0.5)


def _code(exc: pytest.ExceptionInfo[grpc.RpcError]) -> Any:
    return exc.value.code()


class TestWrites:
    """Add/Modify/Delete through the Writer."""

    def test_add_modify_delete(self, node: WriterNode, channel: grpc.Channel) -> None:
        """Each answers ``Success!`` with the commit revision; etcd holds what was asked."""
        stub = rm_stub(channel)
        added, call = stub.AddResourceGroup.with_call(
            pb.PutResourceGroupRequest(group=_group("g1", fill=100))
        )
        assert added.body == "Success!"
        key = node.layout.settings("g1")
        value, mod = raw_get(node.client, key)
        assert value is not None
        assert int(trailer(call) or 0) == mod
        assert decode_settings(key, value).r_u_settings.r_u.settings.fill_rate == 100  # type: ignore[union-attr]

        modified, call = stub.ModifyResourceGroup.with_call(
            pb.PutResourceGroupRequest(group=_group("g1", fill=555, priority=3))
        )
        assert modified.body == "Success!"
        value, mod = raw_get(node.client, key)
        assert value is not None
        group = decode_settings(key, value)
        assert group.priority == 3
        assert group.r_u_settings.r_u.settings.fill_rate == 555  # type: ignore[union-attr]
        assert int(trailer(call) or 0) == mod

        got = stub.GetResourceGroup(pb.GetResourceGroupRequest(resource_group_name="g1"))
        assert got.group.r_u_settings.r_u.settings.fill_rate == 555

        deleted, call = stub.DeleteResourceGroup.with_call(
            pb.DeleteResourceGroupRequest(resource_group_name="g1")
        )
        assert deleted.body == "Success!"
        assert raw_get(node.client, key) == (None, 0)
        with pytest.raises(grpc.RpcError) as exc:
            stub.GetResourceGroup(pb.GetResourceGroupRequest(resource_group_name="g1"))
        assert _code(exc) == grpc.StatusCode.UNKNOWN
        assert "the g1 resource group does not exist" in exc.value.details()

    def test_modify_leaves_states(self, node: WriterNode, channel: grpc.Channel) -> None:
        """Settings-only apply: the states key (tokens) is not touched by a Modify."""
        stub = rm_stub(channel)
        stub.AddResourceGroup(pb.PutResourceGroupRequest(group=_group("st")))
        node.writer.put_states("st", GroupStates(r_u=TokenState(tokens=77.0, initialized=True)))
        before = raw_get(node.client, node.layout.states("st"))
        request = _group("st", fill=999)
        request.r_u_settings.r_u.tokens = 123456.0  # a client's token delta: not applied
        stub.ModifyResourceGroup(pb.PutResourceGroupRequest(group=request))
        assert raw_get(node.client, node.layout.states("st")) == before
        listed = stub.ListResourceGroups(pb.ListResourceGroupsRequest())
        by_name = {g.name: g for g in listed.groups}
        assert by_name["st"].r_u_settings.r_u.tokens == 77.0

    def test_stale_expected_revision(self, node: WriterNode, channel: grpc.Channel) -> None:
        """``expected-revision`` that moved: ABORTED with the current revision in x-revision."""
        stub = rm_stub(channel)
        _, call = stub.AddResourceGroup.with_call(pb.PutResourceGroupRequest(group=_group("c")))
        first = int(trailer(call) or 0)
        stub.ModifyResourceGroup(pb.PutResourceGroupRequest(group=_group("c", fill=2)))
        with pytest.raises(grpc.RpcError) as exc:
            stub.ModifyResourceGroup(
                pb.PutResourceGroupRequest(group=_group("c", fill=3)),
                metadata=[("expected-revision", str(first))],
            )
        assert _code(exc) == grpc.StatusCode.ABORTED
        assert int(trailer(exc.value) or 0) > first

    def test_delete_default_refused(self, channel: grpc.Channel) -> None:
        """``default`` cannot be deleted (PERMISSION_DENIED, as HTTP's 403)."""
        with pytest.raises(grpc.RpcError) as exc:
            rm_stub(channel).DeleteResourceGroup(
                pb.DeleteResourceGroupRequest(resource_group_name="default")
            )
        assert _code(exc) == grpc.StatusCode.PERMISSION_DENIED

    @pytest.mark.parametrize("method", ["ModifyResourceGroup", "DeleteResourceGroup"])
    def test_missing_group_is_unknown_with_pds_text(self, channel: grpc.Channel, method: str
                                                     ) -> None:  # fmt: skip
        """Modify or Delete of a missing group: UNKNOWN with ErrResourceGroupNotExists's text,
        as PD's plain error reaches a Go client (grpc_service.go:167-170 for a delete,
        182-185 for a modify; HEAD a186e0c)."""
        stub = rm_stub(channel)
        request: object = (
            pb.PutResourceGroupRequest(group=_group("ghost"))
            if method == "ModifyResourceGroup"
            else pb.DeleteResourceGroupRequest(resource_group_name="ghost")
        )
        with pytest.raises(grpc.RpcError) as exc:
            getattr(stub, method)(request)
        assert _code(exc) == grpc.StatusCode.UNKNOWN
        assert exc.value.details() == (
            "[PD:resourcemanager:ErrGroupNotExists]the ghost resource group does not exist"
        )

    def test_bad_group_name(self, channel: grpc.Channel) -> None:
        """A name PD refuses is INVALID_ARGUMENT, nothing written."""
        with pytest.raises(grpc.RpcError) as exc:
            rm_stub(channel).AddResourceGroup(pb.PutResourceGroupRequest(group=_group("")))
        assert _code(exc) == grpc.StatusCode.INVALID_ARGUMENT

    def test_tokens_unimplemented(self, channel: grpc.Channel) -> None:
        """AcquireTokenBuckets: UNIMPLEMENTED on the writer too."""
        with pytest.raises(grpc.RpcError) as exc:
            list(rm_stub(channel).AcquireTokenBuckets(iter([pb.TokenBucketsRequest()])))
        assert _code(exc) == grpc.StatusCode.UNIMPLEMENTED


class TestGates:
    """The bearer token, the role, the leader."""

    def test_token_required_on_writes(self, node: WriterNode) -> None:
        """Without ``authorization: Bearer <token>`` a write is UNAUTHENTICATED and nothing is
        written; reads need no token."""
        server: GrpcServer = serve_writer(node.writer, "127.0.0.1:0", token=TOKEN)
        try:
            with grpc.insecure_channel(server.address) as channel:
                stub = rm_stub(channel)
                request = pb.PutResourceGroupRequest(group=_group("tok"))
                for metadata in ([], [("authorization", "Bearer wrong")]):
                    with pytest.raises(grpc.RpcError) as exc:
                        stub.AddResourceGroup(request, metadata=metadata)
                    assert _code(exc) == grpc.StatusCode.UNAUTHENTICATED
                assert raw_get(node.client, node.layout.settings("tok")) == (None, 0)
                ok = stub.AddResourceGroup(request, metadata=[("authorization", f"Bearer {TOKEN}")])
                assert ok.body == "Success!"
                stub.ListResourceGroups(pb.ListResourceGroupsRequest())
        finally:
            server.stop(0.5)

    def test_role_refuses(self, etcd_endpoints: list[str], root_prefix: str) -> None:
        """An RMTokenOnly writer refuses metadata writes (PERMISSION_DENIED), writing nothing."""
        writer_node = WriterNode(
            etcd_endpoints, root_prefix, name="tok-only", role=WriteRole.RM_TOKEN_ONLY
        )
        with nodes(writer_node.start()):
            server = serve_writer(writer_node.writer, "127.0.0.1:0")
            try:
                with grpc.insecure_channel(server.address) as channel:
                    with pytest.raises(grpc.RpcError) as exc:
                        rm_stub(channel).AddResourceGroup(
                            pb.PutResourceGroupRequest(group=_group("r"))
                        )
                    assert _code(exc) == grpc.StatusCode.PERMISSION_DENIED
                    assert "metadata write is disabled" in exc.value.details()
                assert raw_get(writer_node.client, writer_node.layout.settings("r")) == (None, 0)
            finally:
                server.stop(0.5)

    def test_follower_names_the_leader(self, etcd_endpoints: list[str], root_prefix: str) -> None:
        """A follower cannot commit; the leader record has no gRPC address, so the write is
        UNAVAILABLE naming the leader, and nothing is written."""
        leader = WriterNode(etcd_endpoints, root_prefix, name="lead").start()
        follower = WriterNode(etcd_endpoints, root_prefix, name="follow").start(wait_leader=False)
        with nodes(leader, follower):
            server = serve_writer(follower.writer, "127.0.0.1:0")
            try:
                with grpc.insecure_channel(server.address) as channel:
                    with pytest.raises(grpc.RpcError) as exc:
                        rm_stub(channel).AddResourceGroup(
                            pb.PutResourceGroupRequest(group=_group("f"))
                        )
                    assert _code(exc) == grpc.StatusCode.UNAVAILABLE
                    assert "writer 'lead' leads" in exc.value.details()
                    assert leader.address in exc.value.details()
                assert raw_get(leader.client, leader.layout.settings("f")) == (None, 0)
            finally:
                server.stop(0.5)
